"""Shared fixtures. The real Indian Pines scene is loaded once per session (from tensorly)."""

from __future__ import annotations

import os

import torch

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
