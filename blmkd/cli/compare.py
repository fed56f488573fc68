"""`blmkd compare`: two groups of runs over the same splits, paired: is A better than B beyond noise?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from blmkd.cli.common import console
from blmkd.compare import METRICS, collect_runs, compare_runs
from blmkd.errors import BlmkdError
from blmkd.io import atomic_write_json

_NAMES = {"oa": "OA", "aa": "AA", "kappa": "κ"}


def compare(
    a: Annotated[
        Path,
        typer.Argument(
            help="Runs A: a run directory, or a folder of runs (e.g. the seed_<s>/ runs of --seeds)."
        ),
    ],
    b: Annotated[
        Path,
        typer.Argument(help="Runs B, the baseline (e.g. `blmkd train-student` runs for a distillation A)."),
    ],
    metric: Annotated[
        str, typer.Option("--metric", help="Metric the verdict is about: oa | aa | kappa.")
    ] = "oa",
    a_file: Annotated[
        str | None,
        typer.Option(
            "--a-file",
            help="Read A's test metrics from this `blmkd evaluate --json` file in each run directory (e.g. tta.json) instead of best.json.",
        ),
    ] = None,
    b_file: Annotated[str | None, typer.Option("--b-file", help="The same for B.")] = None,
    per_class: Annotated[
        bool,
        typer.Option(
            "--per-class",
            help="Also print each class's mean test accuracy in A and B, the difference and on how many pairs A was higher (where the runs recorded per-class results).",
        ),
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the pairs and statistics (per class too) as JSON here."),
    ] = None,
) -> None:
    """Is A better than B beyond noise? Runs paired by split, mean difference with a 95% CI and p-values.

    For the pairs of runs tested on the same split it reports the per-seed differences, their mean
    with a 95% confidence interval (Student's t), the paired t-test and an exact sign-flip
    permutation p-value, and a verdict: A > B or A < B only when the interval excludes 0.

    Runs are paired by split digest (same scene, split and seed), never by folder name.
    """
    if metric not in METRICS:
        raise BlmkdError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    res = compare_runs(collect_runs(a, a_file), collect_runs(b, b_file))
    st = res["stats"][metric]
    label_a = f"A: {a}" + (f" ({a_file})" if a_file else "")
    label_b = f"B: {b}" + (f" ({b_file})" if b_file else "")

    t = Table(title=f"{_NAMES[metric]} % on the test split, paired by split")
    for col in ("split seed", "digest", "A", "B", "A − B (pp)"):
        t.add_column(col, justify="left" if col == "digest" else "right")
    for p, d in zip(res["pairs"], st["deltas"]):
        t.add_row(
            str(p["seed"]),
            p["digest"],
            f"{100 * p[metric + '_a']:.2f}",
            f"{100 * p[metric + '_b']:.2f}",
            f"{100 * d:+.2f}",
        )
    console.print(t)
    console.print(label_a)
    console.print(label_b)
    for k in METRICS:
        s = res["stats"][k]
        console.print(
            f"{_NAMES[k]:>2}: A {100 * s['mean_a']:.2f} ± {100 * s['std_a']:.2f}   B {100 * s['mean_b']:.2f} ± {100 * s['std_b']:.2f}"
            f"   A − B {100 * s['mean_delta']:+.2f} ± {100 * s['std_delta']:.2f} pp"
        )
    ci = "—" if st["ci95"] is None else f"[{100 * st['ci95'][0]:+.2f}, {100 * st['ci95'][1]:+.2f}] pp"
    p_t = "—" if st["p_t"] is None else f"{st['p_t']:.3f}"
    p_s = "—" if st["p_signflip"] is None else f"{st['p_signflip']:.3f}"
    console.print(
        f"{_NAMES[metric]}, n = {st['n']} pairs: A − B {100 * st['mean_delta']:+.2f} pp, 95% CI {ci}; "
        f"paired t-test p {p_t}, sign-flip p {p_s}; A higher on {st['wins']}, lower on {st['losses']}, equal on {st['ties']}"
    )
    verdict = {"A > B": "A is better than B", "A < B": "A is worse than B"}.get(
        st["verdict"], "no difference shown at 95%"
    )
    console.print(f"[bold]verdict ({_NAMES[metric]}): {verdict}[/]")
    if per_class:
        _print_per_class(console, res["per_class"])
    for side, left in (("A", res["unpaired_a"]), ("B", res["unpaired_b"])):
        if left:
            console.print(
                f"[yellow]not paired ({side}, no run of the other group on its split):[/] {', '.join(left)}"
            )
    if json_out:
        atomic_write_json(
            json_out, {"a": str(a), "b": str(b), "a_file": a_file, "b_file": b_file, "metric": metric, **res}
        )


def _print_per_class(console, rows: list[dict]) -> None:
    if not rows:
        console.print(
            "[yellow]no per-class comparison: not every run recorded per-class test accuracies for the same classes[/]"
        )
        return
    n = rows[0]["n"]
    t = Table(title=f"per-class test accuracy %, mean of {n} paired runs")
    for col in ("class", "test px", "A", "B", "A − B (pp)", "A higher"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for r in rows:
        t.add_row(
            f"{r['id']} {r['name']}",
            f"{r['support']:.0f}",
            f"{100 * r['mean_a']:.1f}",
            f"{100 * r['mean_b']:.1f}",
            f"{100 * r['mean_delta']:+.1f}",
            f"{r['wins']}/{n}",
        )
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
