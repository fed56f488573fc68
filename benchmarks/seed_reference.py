"""The SSA-Mamba paper's reference implementation, loaded at run time from the seed text.

``shared/seeds/002_09ae7cf81db88eae.txt`` (the paper with its code) sits beside the repository;
its model sections (from ``from __future__ import annotations`` to the dataset utilities of section
11) are cut out of the text and executed as a module. Nothing of it is copied into the project: the
benchmarks that compare against it (``bench_teacher.py``, ``gpu_check.py``) read it where it is, or
from ``--seed-file`` / ``$BLMKD_SEED_FILE``.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import torch

DEFAULT_SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "002_09ae7cf81db88eae.txt"
_START = "from __future__ import annotations"
_END = "# ─── SECTION 11"

# Our names for the seed's modules where they differ (the rest of the state dict matches).
_RENAMES = {
    "input_proj.proj.0.": "input_proj.conv1.",
    "input_proj.proj.1.": "input_proj.bn1.",
    "input_proj.proj.3.": "input_proj.conv2.",
    "input_proj.proj.4.": "input_proj.bn2.",
    "classifier.0.": "head.",
}


def seed_file(path: str | Path | None = None) -> Path:
    """``path``, else ``$BLMKD_SEED_FILE``, else the seed beside the repository."""
    return Path(path or os.environ.get("BLMKD_SEED_FILE") or DEFAULT_SEED_FILE)


def load_seed_module(path: str | Path | None = None) -> types.ModuleType:
    """The seed's model code as a module (``SSAMambaConfig``, ``SSAMamba``, ...).

    Raises:
        FileNotFoundError: the seed text is not there.
        ValueError: the text has no model code between the expected markers.
    """
    p = seed_file(path)
    text = p.read_text(encoding="utf-8")
    start, end = text.find(_START), text.find(_END)
    if start < 0 or end < start:
        raise ValueError(f"{p}: no SSA-Mamba code between {_START!r} and {_END!r}")
    mod = types.ModuleType("ssa_mamba_seed")
    mod.__file__ = str(p)
    sys.modules[mod.__name__] = mod  # dataclasses look their module up there
    exec(compile(text[start:end], str(p), "exec"), mod.__dict__)  # noqa: S102 - the paper's own code
    return mod


def seed_model_like(model: torch.nn.Module, mod: types.ModuleType | None = None) -> torch.nn.Module:
    """The seed's SSAMamba with ``model``'s configuration and weights (eval mode, on its device)."""
    mod = mod or load_seed_module()
    c = model.config
    cfg = mod.SSAMambaConfig(
        in_channels=c.bands, patch_size=c.patch_size, n_classes=c.num_classes, d_model=c.d_model,
        d_state=c.d_state, d_conv=c.d_conv, expand=c.expand, depth=c.depth, n_heads=c.n_heads, dropout=c.dropout,
    )  # fmt: skip
    seed = mod.SSAMamba(cfg)
    ours = model.state_dict()
    mapped = {}
    for key in seed.state_dict():
        our_key = key
        for a, b in _RENAMES.items():
            if key.startswith(a):
                our_key = b + key[len(a) :]
        mapped[key] = ours[our_key]
    seed.load_state_dict(mapped)
    return seed.to(next(model.parameters()).device).eval()
