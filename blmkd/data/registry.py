"""The standard hyperspectral benchmarks: where their files come from and what their classes are.

One frozen :class:`DatasetInfo` per dataset. ``load_scene("salinas")`` looks the name up here,
downloads the two ``.mat`` files into the cache when they are missing (:mod:`blmkd.data.download`)
and reads them with :mod:`blmkd.data.readers`. Indian Pines is embedded (from the tensorly
wheel, :mod:`blmkd.data.embedded`) and never downloaded.

Names are matched case-, underscore- and dash-insensitively: ``"indian_pines"``,
``"IndianPines"`` and ``"indian-pines"`` are the same dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blmkd.data.cache import data_dir
from blmkd.errors import DataError

_GIC = "https://www.ehu.eus/ccwintco/uploads"
GIC_PAGE = "https://www.ehu.eus/ccwintco/index.php/Hyperspectral_Remote_Sensing_Scenes"


@dataclass(frozen=True)
class DatasetFile:
    """One file of a dataset."""

    filename: str  # name in the cache folder and on the server
    key: str | None  # MATLAB variable holding the array; None = find it automatically
    url: str | None  # public direct download; None = none exists
    sha256: str | None = None  # pinned checksum; None = not verified


@dataclass(frozen=True)
class DatasetInfo:
    """A benchmark scene: files, classes and provenance."""

    name: str  # canonical registry name (snake_case)
    title: str  # human-readable name
    aliases: tuple[str, ...]  # other accepted names (matched like `name`)
    cube: DatasetFile  # the (H, W, bands) reflectance/radiance cube
    gt: DatasetFile  # the (H, W) ground truth, 0 = unlabelled
    classes: tuple[tuple[int, str], ...]  # (ground-truth id, class name), ids as in the GT file
    bands: int  # bands in the cube file
    sensor: str
    citation: str
    shape: tuple[int, int] = (0, 0)  # (height, width) in pixels, as published
    embedded: bool = False  # shipped with the package (no download)
    note: str = ""  # anything a user must know (e.g. how to obtain the files)

    @property
    def class_names(self) -> list[str]:
        return [n for _, n in self.classes]

    @property
    def class_ids(self) -> list[int]:
        return [i for i, _ in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_name(self, class_id: int) -> str:
        """Registry name of a ground-truth id (``"class <id>"`` if the id is not listed)."""
        return dict(self.classes).get(int(class_id), f"class {int(class_id)}")

    @property
    def downloadable(self) -> bool:
        return self.cube.url is not None and self.gt.url is not None

    @property
    def checksum_status(self) -> str:
        """``"verified"`` if every file has a pinned sha256, ``"not verified"`` otherwise."""
        pinned = [f.sha256 is not None for f in (self.cube, self.gt)]
        if all(pinned):
            return "verified"
        if any(pinned):
            return "partly verified"
        return "not verified"

    def local_dir(self) -> Path:
        """Cache folder of this dataset: ``data_dir() / name``."""
        return data_dir() / self.name

    def local_paths(self) -> tuple[Path, Path]:
        """Where the cube and ground-truth files live in the cache (whether or not they exist)."""
        d = self.local_dir()
        return d / self.cube.filename, d / self.gt.filename

    def is_cached(self) -> bool:
        return all(p.is_file() for p in self.local_paths())


def _ids(*names: str, start: int = 1) -> tuple[tuple[int, str], ...]:
    return tuple((start + k, n) for k, n in enumerate(names))


_AVIRIS = "AVIRIS (NASA JPL), 224 bands 400-2500 nm"
_ROSIS = "ROSIS-03 (DLR), 115 bands 430-860 nm"
_GIC_CITE = (
    "M. Graña, M. A. Veganzons, B. Ayerdi, Hyperspectral Remote Sensing Scenes, "
    f"Grupo de Inteligencia Computacional (GIC), UPV/EHU. {GIC_PAGE}"
)
_HAM_2005 = (
    "J. Ham, Y. Chen, M. M. Crawford, J. Ghosh (2005). Investigation of the random forest framework "
    "for classification of hyperspectral data. IEEE TGRS 43(3):492-501. doi:10.1109/TGRS.2004.842481"
)

_SALINAS_CLASSES = (
    "Brocoli_green_weeds_1",
    "Brocoli_green_weeds_2",
    "Fallow",
    "Fallow_rough_plow",
    "Fallow_smooth",
    "Stubble",
    "Celery",
    "Grapes_untrained",
    "Soil_vinyard_develop",
    "Corn_senesced_green_weeds",
    "Lettuce_romaine_4wk",
    "Lettuce_romaine_5wk",
    "Lettuce_romaine_6wk",
    "Lettuce_romaine_7wk",
    "Vinyard_untrained",
    "Vinyard_vertical_trellis",
)

INDIAN_PINES = DatasetInfo(
    shape=(145, 145),
    name="indian_pines",
    title="Indian Pines",
    aliases=("ip", "indian", "indian_pines_corrected"),
    cube=DatasetFile(
        "Indian_pines_corrected.mat",
        "indian_pines_corrected",
        f"{_GIC}/6/67/Indian_pines_corrected.mat",
        "ec2f8808710919d566f70f0d4aa885aae1ddfd42b734aba71c5e12ca65450939",
    ),
    gt=DatasetFile("Indian_pines_gt.mat", "indian_pines_gt", f"{_GIC}/c/c4/Indian_pines_gt.mat"),
    classes=_ids(
        "Alfalfa",
        "Corn-notill",
        "Corn-mintill",
        "Corn",
        "Grass-pasture",
        "Grass-trees",
        "Grass-pasture-mowed",
        "Hay-windrowed",
        "Oats",
        "Soybean-notill",
        "Soybean-mintill",
        "Soybean-clean",
        "Wheat",
        "Woods",
        "Buildings-Grass-Trees-Drives",
        "Stone-Steel-Towers",
    ),
    bands=200,
    sensor=_AVIRIS + "; 20 water-absorption bands removed",
    citation=(
        "M. F. Baumgardner, L. L. Biehl, D. A. Landgrebe (2015). 220 Band AVIRIS Hyperspectral Image "
        "Data Set: June 12, 1992 Indian Pine Test Site 3. Purdue University Research Repository. "
        "doi:10.4231/R7RX991C"
    ),
    embedded=True,
    note="embedded (tensorly wheel, CC BY 3.0); the embedded copy is used even if the .mat is cached",
)

SALINAS = DatasetInfo(
    shape=(512, 217),
    name="salinas",
    title="Salinas",
    aliases=("sa", "salinas_corrected", "salinas_valley"),
    cube=DatasetFile("Salinas_corrected.mat", "salinas_corrected", f"{_GIC}/a/a3/Salinas_corrected.mat"),
    gt=DatasetFile("Salinas_gt.mat", "salinas_gt", f"{_GIC}/f/fa/Salinas_gt.mat"),
    classes=_ids(*_SALINAS_CLASSES),
    bands=204,
    sensor=_AVIRIS + "; 20 water-absorption bands removed",
    citation=_GIC_CITE,
)

SALINAS_A = DatasetInfo(
    shape=(83, 86),
    name="salinas_a",
    title="Salinas-A",
    aliases=("salinasa_corrected",),
    cube=DatasetFile("SalinasA_corrected.mat", "salinasA_corrected", f"{_GIC}/1/1a/SalinasA_corrected.mat"),
    gt=DatasetFile("SalinasA_gt.mat", "salinasA_gt", f"{_GIC}/a/aa/SalinasA_gt.mat"),
    # Salinas-A keeps the Salinas ids: {1, 10, 11, 12, 13, 14}.
    classes=tuple((i, _SALINAS_CLASSES[i - 1]) for i in (1, 10, 11, 12, 13, 14)),
    bands=204,
    sensor=_AVIRIS + "; 20 water-absorption bands removed",
    citation=_GIC_CITE,
)

PAVIA_UNIVERSITY = DatasetInfo(
    shape=(610, 340),
    name="pavia_university",
    title="Pavia University",
    aliases=("paviau", "pu", "up", "pavia_u"),
    cube=DatasetFile("PaviaU.mat", "paviaU", f"{_GIC}/e/ee/PaviaU.mat"),
    gt=DatasetFile("PaviaU_gt.mat", "paviaU_gt", f"{_GIC}/5/50/PaviaU_gt.mat"),
    classes=_ids(
        "Asphalt",
        "Meadows",
        "Gravel",
        "Trees",
        "Painted metal sheets",
        "Bare Soil",
        "Bitumen",
        "Self-Blocking Bricks",
        "Shadows",
    ),
    bands=103,
    sensor=_ROSIS + "; 12 noisy bands removed",
    citation="P. Gamba, University of Pavia; ROSIS data courtesy of DLR. " + _GIC_CITE,
)

PAVIA_CENTRE = DatasetInfo(
    shape=(1096, 715),
    name="pavia_centre",
    title="Pavia Centre",
    aliases=("pavia_center", "paviac", "pc", "pavia_c"),
    cube=DatasetFile("Pavia.mat", "pavia", f"{_GIC}/e/e3/Pavia.mat"),
    gt=DatasetFile("Pavia_gt.mat", "pavia_gt", f"{_GIC}/5/53/Pavia_gt.mat"),
    classes=_ids(
        "Water",
        "Trees",
        "Asphalt",
        "Self-Blocking Bricks",
        "Bitumen",
        "Tiles",
        "Shadows",
        "Meadows",
        "Bare Soil",
    ),
    bands=102,
    sensor=_ROSIS + "; 13 noisy bands removed",
    citation="P. Gamba, University of Pavia; ROSIS data courtesy of DLR. " + _GIC_CITE,
)

KSC = DatasetInfo(
    shape=(512, 614),
    name="ksc",
    title="Kennedy Space Center",
    aliases=("kennedy_space_center",),
    cube=DatasetFile("KSC.mat", "KSC", f"{_GIC}/2/26/KSC.mat"),
    gt=DatasetFile("KSC_gt.mat", "KSC_gt", f"{_GIC}/a/a6/KSC_gt.mat"),
    classes=_ids(
        "Scrub",
        "Willow swamp",
        "Cabbage palm hammock",
        "Cabbage palm/oak hammock",
        "Slash pine",
        "Oak/broadleaf hammock",
        "Hardwood swamp",
        "Graminoid marsh",
        "Spartina marsh",
        "Cattail marsh",
        "Salt marsh",
        "Mud flats",
        "Water",
    ),
    bands=176,
    sensor=_AVIRIS + "; water-absorption and low-SNR bands removed",
    citation=_HAM_2005,
)

BOTSWANA = DatasetInfo(
    shape=(1476, 256),
    name="botswana",
    title="Botswana",
    aliases=("bo", "okavango"),
    cube=DatasetFile("Botswana.mat", "Botswana", f"{_GIC}/7/72/Botswana.mat"),
    gt=DatasetFile("Botswana_gt.mat", "Botswana_gt", f"{_GIC}/5/58/Botswana_gt.mat"),
    classes=_ids(
        "Water",
        "Hippo grass",
        "Floodplain grasses 1",
        "Floodplain grasses 2",
        "Reeds",
        "Riparian",
        "Firescar",
        "Island interior",
        "Acacia woodlands",
        "Acacia shrublands",
        "Acacia grasslands",
        "Short mopane",
        "Mixed mopane",
        "Exposed soils",
    ),
    bands=145,
    sensor="Hyperion (NASA EO-1), 242 bands 400-2500 nm; uncalibrated and noisy bands removed",
    citation=_HAM_2005,
)

HOUSTON_2013 = DatasetInfo(
    shape=(349, 1905),
    name="houston_2013",
    title="Houston 2013 (IEEE GRSS DFC 2013)",
    aliases=("houston", "houston13", "grss_dfc_2013", "dfc2013"),
    cube=DatasetFile("Houston13.mat", None, None),
    gt=DatasetFile("Houston13_gt.mat", None, None),
    classes=_ids(
        "Healthy grass",
        "Stressed grass",
        "Synthetic grass",
        "Trees",
        "Soil",
        "Water",
        "Residential",
        "Commercial",
        "Road",
        "Highway",
        "Railway",
        "Parking Lot 1",
        "Parking Lot 2",
        "Tennis Court",
        "Running Track",
    ),
    bands=144,
    sensor="CASI-1500 (ITRES), 144 bands 380-1050 nm",
    citation=(
        "C. Debes et al. (2014). Hyperspectral and LiDAR data fusion: outcome of the 2013 GRSS Data "
        "Fusion Contest. IEEE JSTARS 7(6):2405-2418. doi:10.1109/JSTARS.2014.2305441"
    ),
    note=(
        "no public direct download: the IEEE GRSS Data Fusion Contest 2013 data is distributed "
        "after registration (https://hyperspectral.ee.uh.edu/)"
    ),
)


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        INDIAN_PINES,
        SALINAS,
        SALINAS_A,
        PAVIA_UNIVERSITY,
        PAVIA_CENTRE,
        KSC,
        BOTSWANA,
        HOUSTON_2013,
    )
}


def normalize_name(name: str) -> str:
    """Lower case without ``_``, ``-``, spaces and dots: ``"Indian_Pines"`` -> ``"indianpines"``."""
    return "".join(ch for ch in name.lower() if ch not in "_- .")


def find_dataset(name: str) -> DatasetInfo | None:
    """The dataset called ``name`` (or one of its aliases), or None."""
    key = normalize_name(name)
    for info in DATASETS.values():
        if key == normalize_name(info.name) or key in {normalize_name(a) for a in info.aliases}:
            return info
    return None


def get_dataset(name: str) -> DatasetInfo:
    """The dataset called ``name``; DataError listing the known names if there is none."""
    info = find_dataset(name)
    if info is None:
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)} (or pass a file path)"
        )
    return info


def list_datasets() -> list[dict]:
    """One JSON-ready row per registered dataset, with whether its files are available locally.

    ``cached`` is True for the embedded Indian Pines and for datasets whose two files are in
    :func:`~blmkd.data.cache.data_dir`. ``checksum`` says whether the download is verified
    against a pinned sha256 (``"not verified"`` where no checksum is known).
    """
    rows = []
    for info in DATASETS.values():
        cube_path, gt_path = info.local_paths()
        rows.append(
            {
                "name": info.name,
                "title": info.title,
                "aliases": list(info.aliases),
                "shape": list(info.shape),
                "bands": info.bands,
                "num_classes": info.num_classes,
                "sensor": info.sensor,
                "embedded": info.embedded,
                "cached": info.embedded or info.is_cached(),
                "downloadable": info.downloadable,
                "checksum": info.checksum_status,
                "files": [str(cube_path), str(gt_path)],
                "citation": info.citation,
                "note": info.note,
            }
        )
    return rows
