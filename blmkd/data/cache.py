"""Where downloaded datasets live: ``~/.cache/blmkd`` unless ``BLMKD_DATA_DIR`` says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "BLMKD_DATA_DIR"


def data_dir() -> Path:
    """The download cache: ``$BLMKD_DATA_DIR`` if set, else ``~/.cache/blmkd``."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "blmkd"
