"""Map a XiongAn-sized scene (3750 x 1580 x 256) in bounded memory: target peak RSS <= 1.5 GB.

1. Generates a synthetic 3750 x 1580 x 256 uint16 scene with 19 classes (3.0 GB on disk, written
   block by block through a memory map; ~2 min, once) into ``--data``.
2. Trains a student (``--student``, default: the CLI's default student) for a few epochs on a fixed split of 200 pixels per class (once), so
   that the map means something.
3. Runs ``blmkd predict`` on the full scene as a child process (``--out map.npy --out map.png``)
   and reads the child's peak RSS from the kernel (``VmHWM`` of its ``/proc/<pid>/status``):
   everything the command holds, Python, torch and ONNX Runtime included, plus the pages of the
   memory-mapped cube it has resident at once.

    .venv/bin/python benchmarks/bench_xiongan.py [--data .scratch/bench_xiongan] [--tile 256] [--threads 2] [--c]

``--c`` maps with the student's C export (``blmkd export --c``, ``encode-c`` path) instead of the checkpoint.

Long: run it in the background with its log under logs/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from blmkd.defaults import DEFAULT_STUDENT

H, W, BANDS, CLASSES = 3750, 1580, 256, 19
TARGET_RSS_MB = 1536


def make_scene(folder: Path) -> tuple[Path, Path]:
    from blmkd.data import make_synthetic_scene

    cube, gt = folder / "xiongan.npy", folder / "xiongan_gt.npy"
    if cube.exists() and gt.exists():
        print(f"scene: {cube} (cached)")
        return cube, gt
    t0 = time.perf_counter()
    make_synthetic_scene(H, W, BANDS, CLASSES, seed=0, out=cube)
    print(f"scene: generated {cube} ({cube.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s")
    return cube, gt


def train_student(folder: Path, cube: Path, gt: Path, epochs: int, preset: str) -> Path:
    """A ``preset`` student trained on a fixed split of 200 training pixels per class.

    Training holds the whole scene as bytes in memory (the data layer's patch extractor, ~3 GB):
    this is the training process, not the measured one.
    """
    import torch

    from blmkd.bundle import DataOptions, prepare_data
    from blmkd.models import create_model
    from blmkd.training.config import TrainConfig
    from blmkd.training.loop import fit

    out = folder / (
        "student" if preset == "blm_s" else f"student_{preset}"
    )  # blm_s keeps the folder name "student"
    if (out / "best.safetensors").exists():
        print(f"student: {out / 'best.safetensors'} (cached)")
        return out / "best.safetensors"
    labels = np.load(gt)
    rng = np.random.default_rng(0)
    train, test = np.zeros(labels.shape, np.int64), np.zeros(labels.shape, np.int64)
    for cid in np.unique(labels[labels > 0]):
        idx = rng.permutation(np.flatnonzero(labels.ravel() == cid))
        train.ravel()[idx[:200]] = cid
        test.ravel()[idx[200:400]] = cid
    np.save(folder / "train_map.npy", train)
    np.save(folder / "test_map.npy", test)
    opts = DataOptions(dataset=str(cube), gt=str(gt), strategy="fixed", val=0.0, buffer=0, patch=7,
                       train_map=str(folder / "train_map.npy"), test_map=str(folder / "test_map.npy"))  # fmt: skip
    t0 = time.perf_counter()
    bundle = prepare_data(opts)
    torch.manual_seed(0)
    model = create_model(preset, bands=bundle.scene.bands, num_classes=bundle.scene.num_classes)
    model.set_dequant(*[torch.as_tensor(a) for a in bundle.prep.dequant_affine()])
    res = fit(
        model,
        bundle,
        TrainConfig(epochs=epochs, batch_size=128, lr=3e-3, warmup_epochs=1),
        out,
        progress=False,
    )
    print(f"student: trained in {time.perf_counter() - t0:.0f} s on {int((train > 0).sum())} px, "
          f"test OA {100 * res.test['oa']:.2f}% on {int((test > 0).sum())} px")  # fmt: skip
    return out / "best.safetensors"


def run_predict(
    ckpt: Path, cube: Path, gt: Path, folder: Path, tile: int, threads: int | None, mode: str
) -> dict:
    cmd = [sys.executable, "-m", "blmkd", "predict", str(ckpt), "--scene", str(cube), "--gt", str(gt),
           "--out", str(folder / "map.npy"), "--out", str(folder / "map.png"), "--tile", str(tile),
           "--mode", mode, "--no-progress"]  # fmt: skip
    if threads:
        cmd += ["--threads", str(threads)]
    print("$ " + " ".join(cmd), flush=True)
    env = {**os.environ, "BLMKD_NO_PROGRESS": "1", "COLUMNS": "200"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    hwm_kb = 0
    while proc.poll() is None:  # the child's own high-water mark, read until it exits
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm_kb = max(hwm_kb, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"blmkd predict failed with exit code {proc.returncode}")
    summary = json.loads((folder / "map.json").read_text())
    # The larger of the child's VmHWM polled from here and the one it reports itself at the end
    # (wait4's ru_maxrss is no use: it starts at the parent's RSS at fork, and the parent holds the
    # whole scene after training).
    summary.update(child_peak_rss_mb=max(hwm_kb / 1024, summary["peak_rss_mb"]), wall_s=wall)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(".scratch/bench_xiongan"))
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--student", default=DEFAULT_STUDENT, help="student preset to train and map with")
    ap.add_argument("--c", action="store_true", help="map with the student's C export (export --c) instead")
    args = ap.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    cube, gt = make_scene(args.data)
    ckpt = train_student(args.data, cube, gt, args.epochs, args.student)
    model = ckpt
    if args.c:
        from blmkd.export import export

        (art,) = export(ckpt, ["c"], ckpt.parent / "export", force=True)
        model = art.path
    s = run_predict(model, cube, gt, args.data, args.tile, args.threads, args.mode)
    ids = np.load(args.data / "map.npy", mmap_mode="r")
    print(f"\nmap: {ids.shape} {ids.dtype}, {s['pixels']:,} px in {s['seconds']:.1f} s = {s['px_s']:,.0f} px/s "
          f"({s['mode']} path, tiles of {s['tile']} rows; whole command {s['wall_s']:.1f} s)")  # fmt: skip
    if s.get("oa_labelled") is not None:
        print(f"OA over the labelled pixels of the full scene: {100 * s['oa_labelled']:.2f}%")
    ok = s["child_peak_rss_mb"] <= TARGET_RSS_MB
    print(
        f"peak RSS of `blmkd predict`: {s['child_peak_rss_mb']:.0f} MB (kernel VmHWM) <= {TARGET_RSS_MB} MB: {'PASS' if ok else 'FAIL'}"
    )
    (args.data / "bench_xiongan.json").write_text(
        json.dumps({**s, "target_rss_mb": TARGET_RSS_MB, "passed": ok}, indent=1)
    )


if __name__ == "__main__":
    main()
