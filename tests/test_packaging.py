"""The wheel carries every package, with teachers/ and export/ under the blmkd import root."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_all_packages(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("blmkd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for mod in (
        "blmkd/__init__.py",
        "blmkd/cli/__init__.py",
        "blmkd/data/__init__.py",
        "blmkd/ops/__init__.py",
        "blmkd/students/__init__.py",
        "blmkd/distill/__init__.py",
        "blmkd/training/__init__.py",
        "blmkd/api.py",
        "blmkd/teachers/__init__.py",
        "blmkd/teachers/ssa_mamba.py",
        "blmkd/export/__init__.py",
        "blmkd/inference/__init__.py",
        "blmkd/inference/blm_student.c",  # package data: the kernel of `export --c`
        "blmkd/export/blm_runner.c",  # and the push-broom runner of `export --c --runner`
    ):
        assert mod in names, f"{mod} missing from the wheel"
    # No top-level `teachers`/`export` packages leak into site-packages.
    assert not any(n.startswith(("teachers/", "export/")) for n in names)
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "blmkd = blmkd.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
