"""`blmkd baseline`: RBF SVM, random forest and k-NN on the very split of a deep run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import blmkd.api as api
from blmkd.baselines import MODELS, BaselineConfig
from blmkd.bundle import DataOptions
from blmkd.cli.common import console, parse_seeds
from blmkd.cli.options import DATA, Seeds, command


@command(data=DATA.but(drop=("class_names",)))
def baseline(
    from_run: Annotated[
        Path | None,
        typer.Option(
            "--from-run",
            help="A deep run (checkpoint, run directory, or a --seeds folder with seed_<s>/ runs): train on its split and preprocessing, seed by seed.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="svm (RBF, C/γ by cross-validation), rf (random forest) or knn (k by cross-validation); repeat it. Default: all three.",
        ),
    ] = None,
    window: Annotated[
        int,
        typer.Option(
            "--window",
            help="Mean each pixel's spectrum over a W×W window around it (odd, at most the split's patch size); 1 = the pixel's own spectrum.",
        ),
    ] = 1,
    trees: Annotated[int, typer.Option("--trees", help="Random forest size.")] = 200,
    cv_folds: Annotated[
        int,
        typer.Option(
            "--cv-folds",
            help="Folds of the stratified cross-validation on the training pixels (SVM and k-NN grids).",
        ),
    ] = 3,
    jobs: Annotated[int, typer.Option("--jobs", help="scikit-learn workers (grid search, forest).")] = 1,
    seeds: Seeds = None,
    *,
    data: DataOptions,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder of the baseline runs: OUT/<model>/ (OUT/<model>/seed_<s>/ with several seeds).",
        ),
    ] = Path("runs/baselines"),
) -> None:
    """Classical baselines on the split of a deep run: same pixels, same metrics, an ONNX file each.

    Per pixel: the standardized spectrum (or its W×W mean with --window), scaled on the training
    pixels; SVM C/γ and k-NN k chosen by 3-fold cross-validation on the training pixels only.
    Each OUT/<model>/ holds <model>.onnx (checked against scikit-learn on the test pixels before it
    is written; it takes the deep models' windows, so `blmkd bench` times it beside them; a graph
    that fails the check is not written, its scikit-learn metrics are kept and the others go on) and
    best.json with the test OA/AA/κ per class, so `blmkd compare RUN OUT/<model>` pairs it with a
    deep run. Nothing is pickled.
    """
    cfg = BaselineConfig(
        models=tuple(model or MODELS), window=window, trees=trees, cv_folds=cv_folds, jobs=jobs
    )
    res = api.baseline(cfg, data, from_run=from_run, seeds=parse_seeds(seeds), out=out, console=console)
    console.print(f"runs: {', '.join(str(out / n) for n in res.results)}")


def register(app: typer.Typer) -> None:
    app.command("baseline")(baseline)
