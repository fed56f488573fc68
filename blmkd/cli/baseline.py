"""`blmkd baseline`: RBF SVM, random forest and k-NN on the very split of a deep run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blmkd.cli import common as C
from blmkd.cli.train import Seeds
from blmkd.errors import BlmkdError


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
    dataset: C.Dataset = "indian_pines",
    gt: C.GT = None,
    cube_key: C.CubeKey = None,
    gt_key: C.GTKey = None,
    fill: C.Fill = None,
    strategy: C.Strategy = "ratio",
    train: C.TrainAmount = 0.1,
    val: C.Val = 0.05,
    seed: C.Seed = 0,
    seeds: Seeds = None,
    patch: C.Patch = 7,
    buffer: C.Buffer = None,
    allow_small: C.AllowSmall = False,
    train_map: C.TrainMap = None,
    test_map: C.TestMap = None,
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
    is written; it takes the deep models' windows, so `blmkd bench` times it beside them) and
    best.json with the test OA/AA/κ per class, so `blmkd compare RUN OUT/<model>` pairs it with a
    deep run. Nothing is pickled.
    """
    from blmkd.baselines import MODELS, BaselineConfig, train_baselines
    from blmkd.train import write_summary

    cfg = BaselineConfig(
        models=tuple(model or MODELS), window=window, trees=trees, cv_folds=cv_folds, jobs=jobs
    )
    jobs_ = _bundles(from_run, seeds, dict(dataset=dataset, gt=gt, cube_key=cube_key, gt_key=gt_key, fill=fill,
                     strategy=strategy, train=train, val=val, seed=seed, patch=patch, buffer=buffer, allow_small=allow_small,
                     train_map=train_map, test_map=test_map))  # fmt: skip
    cfg.validate(jobs_[0][1].patch_size)
    runs: dict[str, list[dict]] = {}
    for s, bundle, source in jobs_:
        sc = bundle.scene
        C.console.print(
            f"[bold]baselines[/] seed {s}: {sc.name} {sc.height}×{sc.width}×{sc.bands}, {int(bundle.split.train.sum())} train / "
            f"{int(bundle.split.val.sum())} val / {int(bundle.split.test.sum())} test px, leakage {bundle.split.leakage:.3f}"
            + (f" (the split of {source})" if source else "")
        )
        res = train_baselines(bundle, cfg, out, seed_dir=f"seed_{s}" if len(jobs_) > 1 else None,
                              meta_extra={"from_run": source} if source else None,
                              log=lambda line: C.console.print(line, highlight=False, markup=False))  # fmt: skip
        C.console.print(C.report_table(f"baselines seed {s}: test split", [(r.name, r.test) for r in res]))
        for r in res:
            runs.setdefault(r.name, []).append({"seed": s, "dir": str(r.dir), "test": r.test, "val_oa": r.val_oa,
                                                "leakage": float(bundle.split.leakage)})  # fmt: skip
    if len(jobs_) > 1:
        for name, rr in runs.items():
            summ = write_summary(out / name / "summary.json", rr)
            C.console.print(f"[bold]{name}[/] over seeds {[r['seed'] for r in rr]}: "
                            + "  ".join(f"{k.upper()} {100 * summ[k]['mean']:.2f} ± {100 * summ[k]['std']:.2f}" for k in ("oa", "aa", "kappa")))  # fmt: skip
    C.console.print(f"runs: {', '.join(str(out / n) for n in runs)}")


def _bundles(from_run: Path | None, seeds: str | None, data_kw: dict) -> list[tuple[int, object, str | None]]:
    """(seed, bundle, source run) per seed: the deep run's own data, or the split options."""
    from blmkd.bundle import bundle_from_checkpoint, prepare_data
    from blmkd.checkpoint import load_checkpoint

    seed_list = C.parse_seeds(seeds)
    if from_run is None:
        return [
            (s, prepare_data(C.data_options(**{**data_kw, "seed": s})), None)
            for s in (seed_list or [data_kw["seed"]])
        ]
    if not from_run.exists():
        raise BlmkdError(f"run not found: {from_run}")
    if from_run.is_dir() and not (from_run / "best.safetensors").exists():
        dirs = sorted(
            from_run.glob("seed_*/best.safetensors"), key=lambda p: int(p.parent.name.split("_")[1])
        )
        if not dirs:
            raise BlmkdError(f"{from_run} holds neither best.safetensors nor seed_<s>/ runs")
        cks = [load_checkpoint(p) for p in dirs]
    else:
        cks = [load_checkpoint(from_run)]
    out = []
    for ck in cks:
        bundle = bundle_from_checkpoint(ck)
        if ck.meta.get("split", {}).get("digest") != bundle.split.spec["digest"]:
            raise BlmkdError(
                f"the split rebuilt for {ck.path} differs from the one it recorded: its data changed"
            )
        if seed_list is None or bundle.options.seed in seed_list:
            out.append((bundle.options.seed, bundle, str(ck.path)))
    if not out:
        raise BlmkdError(f"no run under {from_run} has a seed among {seed_list}")
    return out


def register(app: typer.Typer) -> None:
    app.command("baseline")(baseline)
