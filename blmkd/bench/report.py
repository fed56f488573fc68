"""The benchmark report: report.md, a self-contained report.html, report.json and the plots.

Plots (:mod:`blmkd.bench.plots`, matplotlib, Agg backend):

* ``maps.png``: ground truth and every artifact's whole-scene classification map side by side;
* ``confusion.png``: the row-normalised test confusion matrix of the deployed artifact (the last
  model given that ran, e.g. the INT8 student after the teacher and the FP32 student);
* ``pareto.png``: test OA against batch-1 latency of all artifacts, with the Pareto front;
* ``latency.png``: the batch-1 latency distribution per artifact and throughput against batch size.

The HTML embeds the images as base64, so it can be mailed or attached as one file.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from blmkd.bench.plots import plot_confusion, plot_latency, plot_maps, plot_pareto, short_name
from blmkd.io import atomic_write_json, atomic_write_text

# ----------------------------------------------------------------------------------------------
# Tables


def _f(v, fmt: str, scale: float | None = None) -> str:
    if v is None:
        return "—"
    return format(v if scale is None else v * scale, fmt)


def main_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Ultralytics-style: format | status | size MB | OA | latency ms | px/s | memory MB."""
    head = ["Model · format", "Status", "Size (MB)", "OA (%)", "Latency p50 (ms)", "px/s", "Memory (MB)"]
    body = []
    for r in rows:
        if r["status"] != "ok":
            mark = "❌ failed" if r["status"] == "failed" else "➖ skipped"
            body.append([short_name(r), f"{mark}: {r['reason']}", "—", "—", "—", "—", "—"])
            continue
        body.append([
            short_name(r), "✅", _f(r.get("size_mb"), ".3f"), _f(r.get("oa"), ".2f", 100),
            _f(r["latency"]["p50_ms"], ".4f"), _f(r.get("best_px_s"), ",.0f"), _f(r.get("memory_mb"), ".1f"),
        ])  # fmt: skip
    return head, body


def detail_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["Model · format", "AA (%)", "κ ×100", "Agreement (%)", "p90 (ms)", "p99 (ms)", "Parameters",
            "MFLOP/px", "% of matmul peak", "Map px/s", "Power (W)", "Energy (mJ/kpx)"]  # fmt: skip
    body = []
    for r in rows:
        if r["status"] != "ok":
            continue
        m = r.get("map") or {}
        body.append([
            short_name(r), _f(r.get("aa"), ".2f", 100), _f(r.get("kappa"), ".2f", 100), _f(r.get("agreement"), ".2f", 100),
            _f(r["latency"]["p90_ms"], ".4f"), _f(r["latency"]["p99_ms"], ".4f"), _f(r.get("parameters"), ","),
            _f(r.get("flops_per_px"), ".3f", 1e-6), _f(r.get("peak_fraction"), ".2f", 100), _f(m.get("px_s"), ",.0f"),
            _f(r.get("power_w"), ".2f"), _f(r.get("energy_mj_per_kpx"), ".3f"),
        ])  # fmt: skip
    return head, body


def throughput_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    batches = sorted({t["batch"] for r in rows if r["status"] == "ok" for t in r.get("throughput", [])})
    head = ["Model · format"] + [f"px/s @ {b}" for b in batches]
    body = []
    for r in rows:
        if r["status"] != "ok":
            continue
        by = {t["batch"]: t["px_s"] for t in r.get("throughput", [])}
        body.append([short_name(r)] + [_f(by.get(b), ",.0f") for b in batches])
    return head, body


def verdict_table(verdicts: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["Target", "Model · format", "Verdict", "Checks", "Caveat"]
    body = [[v["target"], v["artifact"], v["verdict"], "; ".join(c["text"] for c in v["checks"]), v["caveat"] or ""]
            for v in verdicts]  # fmt: skip
    return head, body


def _md_table(head: list[str], body: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in body]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines)


def _html_table(head: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


#: A baseline within this many OA points of a deep artifact counts as "as accurate".
AS_ACCURATE_PP = 0.5


def baseline_lines(rows: list[dict]) -> list[str]:
    """Plain sentences on every classical baseline row (``family == "baseline"``, `blmkd baseline`)
    against the deep artifacts: is it as accurate (OA within :data:`AS_ACCURATE_PP` points, or
    higher) and cheaper per pixel (µs per pixel at its best batch size) than any of them?"""
    ok = [r for r in rows if r["status"] == "ok" and r.get("best_px_s")]
    base = [r for r in ok if r.get("family") == "baseline"]
    deep = [r for r in ok if r.get("family") != "baseline"]
    lines = []
    for b in base:
        us_b = 1e6 / b["best_px_s"]
        head = f"Baseline {short_name(b)} (OA {100 * b['oa']:.2f}%, {us_b:.2f} µs/px)"
        if not deep:
            lines.append(f"{head}: no deep model in this run to compare with.")
            continue
        beats = [d for d in deep if b["oa"] >= d["oa"] - AS_ACCURATE_PP / 100 and us_b < 1e6 / d["best_px_s"]]
        if beats:
            what = "; ".join(
                f"{short_name(d)} (OA {100 * d['oa']:.2f}%, {1e6 / d['best_px_s']:.2f} µs/px)" for d in beats
            )
            lines.append(
                f"{head} is as accurate (within {AS_ACCURATE_PP:g} pp OA, or better) and cheaper per pixel than: {what}."
            )
            continue
        top = max(deep, key=lambda d: d["oa"])
        gap = 100 * (top["oa"] - b["oa"])
        cheaper = [d for d in deep if us_b < 1e6 / d["best_px_s"]]
        if gap > AS_ACCURATE_PP:
            why = f"{gap:.2f} pp below the most accurate deep artifact, {short_name(top)} (OA {100 * top['oa']:.2f}%)"
        else:
            why = "as accurate as some deep artifacts but not cheaper per pixel than any of them"
        lines.append(f"{head} is not both as accurate and cheaper than any deep artifact here: {why}"
                     + (f"; it is cheaper per pixel than {len(cheaper)} of the {len(deep)}." if cheaper and gap > AS_ACCURATE_PP else "."))  # fmt: skip
    for r in ok:
        if r.get("other_split"):
            lines.append(f"{short_name(r)} was trained on another split (digest {r['other_split']}) than the one tested here: "
                         "its test pixels may include its own training pixels.")  # fmt: skip
    return lines


# ----------------------------------------------------------------------------------------------
# The report


def _summary_lines(result: dict) -> list[str]:
    m, d, s, pk = result["machine"], result["data"], result["settings"], result["matmul_peak"]
    peak = (
        f"{pk['gflops']:.1f} GFLOP/s FP32 ({pk['n']}×{pk['n']} matmul, threads {pk.get('threads')})"
        if pk.get("gflops")
        else pk.get("note", "—")
    )
    return [
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, torch threads {m['torch_threads']}, load average {_f(m.get('load_avg_1min'), '.2f')}"
        + (
            f"; {', '.join(isa['flags']) or 'no listed vector features'} ({isa['note']})"
            if (isa := m.get("cpu_isa"))
            else ""
        )
        + (f", GPU {m['cuda']}" if m.get("cuda") else "")
        + (f", {m['jetson']}" if m.get("jetson") else ""),
        f"Measured matmul peak: {peak}",
        f"Data: {d['scene']} {d['shape'][0]}×{d['shape'][1]}×{d['shape'][2]}, split {d['split'].get('strategy')} "
        f"(seed {d['split'].get('seed')}, digest {d['split'].get('digest')}), {d['evaluated_pixels']} of {d['test_pixels']} "
        f"test pixels, {d['patch_size']}×{d['patch_size']} patches (from {d['from']})",
        f"Settings: device {s['device']}, batches {s['batches']}, {s['runs']} timed batch-1 runs after warm-up, "
        f"threads {s['threads'] or 'library default'}",
        f"Versions: torch {m['torch']}, onnxruntime {m['onnxruntime']}, python {m['python']}; {result['created']}",
    ]


def write_report(result: dict, extras: list[dict], out_dir: Path, bundle) -> dict:
    """Write report.md, report.html, report.json and the plots into ``out_dir``.

    Args:
        result: what :func:`blmkd.bench.runner.run_bench` returns (before the ``report`` key).
        extras: per row, the non-JSON parts: ``map`` (class-index map), ``confusion``.
        out_dir: the report folder (created).
        bundle: the data the rows were measured on (ground truth, class names).

    Returns:
        ``{"dir", "markdown", "html", "json", "plots": [...]}`` (paths as strings).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    sc = bundle.scene
    plots: dict[str, Path] = {}

    maps = [
        (f"{short_name(r)}\nOA {100 * r['oa']:.2f}%", e["map"])
        for r, e in zip(rows, extras)
        if r["status"] == "ok" and "map" in e
    ]
    if maps:
        plot_maps(out_dir / "maps.png", sc.labels, maps, sc.class_ids, sc.class_names)
        plots["maps"] = out_dir / "maps.png"
    deployed = [(r, e) for r, e in zip(rows, extras) if r["status"] == "ok" and "confusion" in e]
    if deployed:
        r, e = deployed[-1]
        plot_confusion(
            out_dir / "confusion.png",
            e["confusion"],
            sc.class_names,
            f"{short_name(r)}: test confusion (OA {100 * r['oa']:.2f}%)",
        )
        plots["confusion"] = out_dir / "confusion.png"
        result["deployed"] = short_name(r)
    if any(r["status"] == "ok" for r in rows):
        plot_pareto(out_dir / "pareto.png", rows)
        plot_latency(out_dir / "latency.png", rows)
        plots["pareto"], plots["latency"] = out_dir / "pareto.png", out_dir / "latency.png"

    files = {
        "dir": str(out_dir),
        "markdown": str(out_dir / "report.md"),
        "html": str(out_dir / "report.html"),
        "json": str(out_dir / "report.json"),
        "plots": [str(p) for p in plots.values()],
    }
    tables = [
        ("Benchmark", main_table(rows)),
        ("Accuracy, latency tail, size and compute", detail_table(rows)),
        ("Throughput by batch size", throughput_table(rows)),
        ("Target budgets", verdict_table(result["verdicts"])),
    ]
    notes = _notes(result)
    captions = {
        "maps": "Whole-scene classification maps (black: unlabelled in the ground truth)",
        "confusion": "Confusion matrix of the deployed artifact (test pixels, row-normalised %)",
        "pareto": "Accuracy vs batch-1 latency; red: the Pareto front",
        "latency": "Batch-1 latency distribution and throughput vs batch size",
    }

    md = ["# blmkd benchmark report", ""] + [f"- {line}" for line in _summary_lines(result)] + [""]
    for title, (head, body) in tables:
        md += [f"## {title}", "", _md_table(head, body), ""]
    if result.get("baselines"):
        md += ["## Classical baselines", ""] + [f"- {n}" for n in result["baselines"]] + [""]
    md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    for key, p in plots.items():
        md += [f"## {captions[key]}", "", f"![{key}]({p.name})", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(md))

    css = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
           "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}"
           "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
           "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
           "li{margin:0.2em 0}")  # fmt: skip
    body = (
        ["<h1>blmkd benchmark report</h1><ul>"]
        + [f"<li>{html.escape(x)}</li>" for x in _summary_lines(result)]
        + ["</ul>"]
    )
    for title, (head, rows_) in tables:
        body += [f"<h2>{html.escape(title)}</h2>", _html_table(head, rows_)]
    if result.get("baselines"):
        body += (
            ["<h2>Classical baselines</h2><ul>"]
            + [f"<li>{html.escape(n)}</li>" for n in result["baselines"]]
            + ["</ul>"]
        )
    body += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    for key, p in plots.items():
        b64 = base64.b64encode(p.read_bytes()).decode("ascii")
        body += [
            f"<h2>{html.escape(captions[key])}</h2>",
            f'<img alt="{key}" src="data:image/png;base64,{b64}">',
        ]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>blmkd benchmark</title><style>{css}</style></head><body>{''.join(body)}</body></html>"
    atomic_write_text(out_dir / "report.html", page)

    atomic_write_json(
        out_dir / "report.json", json.loads(json.dumps({**result, "report": files}, default=_default))
    )
    return files


def _notes(result: dict) -> list[str]:
    rows = result["rows"]
    notes = [
        "Latency: one patch per call, perf_counter after 10 warm-up calls (CUDA synchronised); px/s: the best over the batch sizes.",
        "Memory: peak growth of the process while the artifact was opened, evaluated and timed "
        + "("
        + ", ".join(sorted({r["memory_method"] for r in rows if r.get("memory_method")}))
        + "); "
        "memory the allocator already held from earlier rows is reused without growing it.",
        "Agreement: argmax agreement with the model's FP32 reference (first FP32 artifact of the same source checkpoint) on the test pixels.",
        "% of matmul peak: FLOPs per pixel (matmul/conv only) × best px/s ÷ the FP32 matmul GFLOP/s measured in this run.",
    ]
    power = {r.get("power_note") for r in rows if r["status"] == "ok" and r.get("power_note")}
    notes += [f"Power: {p}" for p in sorted(power)]
    maps = [r for r in rows if r.get("map")]
    if maps:
        notes.append(
            "Map px/s: the whole scene classified in row tiles (reading, preprocessing and inference); "
            + ", ".join(f"{short_name(r)}: {r['map']['mode']} path" for r in maps)
        )
    sensor = result.get("sensor")
    if sensor:
        src = f" Source: {sensor['source']}." if sensor.get("source") else ""
        note = f" ({sensor['notes']})" if sensor.get("notes") else ""
        notes.append(
            f"Sensor {sensor['name']} ({sensor['description']}): {sensor['swath_px']:,} px per line × "
            f"{sensor['lines_per_s']:,.1f} lines/s = {sensor['pixel_rate']:,.0f} px/s, the throughput every "
            f"target is judged against here{note}.{src}"
        )
    return notes


def _default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
