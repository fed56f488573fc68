"""Inference in chunks (`blmkd.ops.chunked.ChunkedInference`): the same logits as the whole batch, and never
while a graph is being recorded."""

from __future__ import annotations

import pytest
import torch

from blmkd.models import create_model


@pytest.mark.parametrize("name", ["ssa_mamba_test", "blm_test"])
def test_chunked_inference_equals_the_whole_batch(name):
    torch.manual_seed(0)
    model = create_model(name, 12, 5).eval()
    x = torch.randn(50, 12, 7, 7)  # 50 = 3 chunks of 16 and one of 2
    with torch.inference_mode():
        model.infer_chunk = 0
        whole, whole_feat = model(x, return_features=True)
        model.infer_chunk = 16
        assert model._chunked(x)
        parts, parts_feat = model(x, return_features=True)
        logits = model(x)
    assert parts.shape == whole.shape == (50, 5) and parts_feat.shape == whole_feat.shape
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts_feat, whole_feat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ssa_mamba_test", "blm_test"])
def test_no_chunks_while_autograd_records(name):
    model = create_model(name, 12, 5).eval()
    model.infer_chunk = 4
    x = torch.randn(10, 12, 7, 7)
    assert not model._chunked(x)  # grad enabled: one graph over the whole batch
    with torch.no_grad():
        assert model._chunked(x)
        assert not model._chunked(x[:4])  # not larger than a chunk
