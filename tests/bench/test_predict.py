"""Scene maps: tiles with halos equal the once-padded extractor, every path equals per-patch inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blmkd.checkpoint import save_checkpoint
from blmkd.data import make_synthetic_scene
from blmkd.data.patches import PatchExtractor
from blmkd.data.preprocess import fit_preprocessing
from blmkd.errors import BlmkdError
from blmkd.inference.classifier import open_classifier
from blmkd.inference.maps import to_class_ids, write_map
from blmkd.inference.scene import predict_patches_ref, predict_scene, reflect_index, release_pages, tile_input
from blmkd.models import create_model

P = 5


@pytest.fixture(scope="module")
def scene():
    return make_synthetic_scene(23, 19, 12, 4, seed=3)


@pytest.fixture(scope="module")
def prep(scene):
    return fit_preprocessing(scene.cube, np.random.default_rng(0).random(scene.labels.shape) < 0.3)


def _checkpoint(name, scene, prep, path):
    torch.manual_seed(1)
    model = create_model(name, bands=scene.bands, num_classes=scene.num_classes).eval()
    if model.input_kind == "uint8":
        model.set_dequant(*[torch.as_tensor(a) for a in prep.dequant_affine()])
    classes = [
        {"index": i, "id": c, "name": n} for i, (c, n) in enumerate(zip(scene.class_ids, scene.class_names))
    ]
    return save_checkpoint(
        path, model, {"data": {"patch_size": P, "classes": classes}, "preprocessing": prep.to_dict()}
    )


@pytest.fixture(scope="module")
def student(scene, prep, tmp_path_factory):
    return _checkpoint("blm_test", scene, prep, tmp_path_factory.mktemp("s") / "student.safetensors")


@pytest.fixture(scope="module")
def teacher(scene, prep, tmp_path_factory):
    return _checkpoint("ssa_mamba_test", scene, prep, tmp_path_factory.mktemp("t") / "teacher.safetensors")


def test_reflect_index_is_np_pad_reflect():
    a = np.arange(9)
    for r in (1, 3, 8):
        assert np.array_equal(a[reflect_index(-r, 9 + r, 9)], np.pad(a, r, mode="reflect"))


@pytest.mark.parametrize("kind", ["uint8", "float"])
@pytest.mark.parametrize(("r0", "r1"), [(0, 4), (2, 11), (17, 23), (0, 23)])
def test_tile_windows_equal_the_once_padded_extractor(scene, prep, kind, r0, r1):
    full = prep.to_bytes(scene.cube) if kind == "uint8" else prep.standardize(scene.cube)
    ex = PatchExtractor(full, P)
    x = tile_input(scene.cube, prep, kind, r0, r1, P // 2)
    assert x.shape == (r1 - r0 + P - 1, scene.width + P - 1, scene.bands) and x.dtype == full.dtype
    rows, cols = np.divmod(np.arange((r1 - r0) * scene.width), scene.width)
    windows = np.lib.stride_tricks.sliding_window_view(x, (P, P), axis=(0, 1))[rows, cols]  # (N, B, P, P)
    assert np.array_equal(windows, ex.gather(rows + r0, cols).numpy())


@pytest.mark.parametrize("mode", ["encode", "encode-ort", "patch"])
def test_student_paths_equal_per_patch_inference(student, scene, mode):
    clf = open_classifier(student, mode=mode)
    assert clf.mode == mode and clf.input_kind == "uint8"
    ref = predict_patches_ref(clf, scene.cube)  # (H, W, K)
    sm = predict_scene(clf, scene.cube, tile=7, batch=50, return_logits=True)
    np.testing.assert_allclose(sm.logits, ref, atol=1e-4, rtol=0)
    assert np.array_equal(sm.pred, ref.argmax(-1)) and sm.pixels == scene.height * scene.width


def test_encode_ort_workers_each_run_their_own_session(student, scene):
    one, two = (open_classifier(student, mode="encode-ort", threads=n) for n in (1, 2))
    assert len(one.sessions) == 1 and len(two.sessions) == 2 and two.sessions[0] is not two.sessions[1]
    a = predict_scene(one, scene.cube, batch=16, return_logits=True)
    b = predict_scene(two, scene.cube, batch=16, return_logits=True)  # many batches over both workers
    np.testing.assert_allclose(b.logits, a.logits, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def student_c(student, tmp_path_factory, monkeypatch_module):
    """The student as a C export (``export --c`` needs a test split; this writes the same file)."""
    from blmkd.checkpoint import load_checkpoint
    from blmkd.export.c_export import c_source
    from blmkd.inference.c_build import c_compiler, seal_c_source
    from blmkd.inference.torch_runner import artifact_meta

    if c_compiler()[0] is None:
        pytest.skip(c_compiler()[1])
    d = tmp_path_factory.mktemp("c")
    monkeypatch_module.setenv("BLMKD_NATIVE_DIR", str(d / "native"))
    ck = load_checkpoint(student)
    path = d / "student.c"
    path.write_text(
        seal_c_source(c_source(ck.build_model().eval(), P, {**artifact_meta(ck), "precision": "fp32"}))
    )
    return path


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("mode", ["encode-c", "patch"])
def test_c_export_paths_equal_per_patch_pytorch(student, student_c, scene, mode):
    clf = open_classifier(student_c, mode=mode, threads=2)
    assert clf.mode == mode and clf.runner.backend == "c"
    ref = predict_patches_ref(open_classifier(student, mode="patch"), scene.cube)  # PyTorch, per patch
    sm = predict_scene(clf, scene.cube, tile=7, batch=50, return_logits=True)
    np.testing.assert_allclose(sm.logits, ref, atol=1e-4, rtol=0)
    assert np.array_equal(sm.pred, ref.argmax(-1))


def test_encode_c_is_auto_for_c_exports_and_streams_tiles(student, student_c, scene, tmp_path):
    clf = open_classifier(student_c)
    assert clf.mode == "encode-c" and clf.workers >= 1
    np.save(tmp_path / "cube.npy", scene.cube)
    mm = np.load(tmp_path / "cube.npy", mmap_mode="r")
    whole = predict_scene(clf, scene.cube, tile=1000, return_logits=True)
    tiled = predict_scene(open_classifier(student_c, threads=1), mm, tile=4, batch=37, return_logits=True)
    np.testing.assert_allclose(tiled.logits, whole.logits, atol=1e-5, rtol=0)
    with pytest.raises(BlmkdError, match="--mode encode-c needs a C export"):
        open_classifier(student, mode="encode-c")


def test_teacher_patch_path_equals_per_patch_inference(teacher, scene):
    clf = open_classifier(teacher)
    assert clf.mode == "patch" and clf.input_kind == "float"
    ref = predict_patches_ref(clf, scene.cube)
    sm = predict_scene(clf, scene.cube, tile=6, return_logits=True)
    np.testing.assert_allclose(sm.logits, ref, atol=1e-4, rtol=0)
    assert np.array_equal(sm.pred, ref.argmax(-1))


def test_auto_picks_encode_ort_for_students(student, teacher):
    assert open_classifier(student).mode == "encode-ort"
    with pytest.raises(BlmkdError, match="per-pixel encoder"):
        open_classifier(teacher, mode="encode")


@pytest.mark.parametrize("mode", ["encode-ort", "patch"])
def test_tiled_streaming_equals_untiled_on_a_memmap(student, scene, tmp_path, mode):
    np.save(tmp_path / "cube.npy", scene.cube)
    mm = np.load(tmp_path / "cube.npy", mmap_mode="r")
    assert release_pages(mm) and not release_pages(np.asarray(scene.cube))
    clf = open_classifier(student, mode=mode)
    whole = predict_scene(clf, scene.cube, tile=1000, return_logits=True)
    tiled = predict_scene(clf, mm, tile=4, batch=37, return_logits=True)
    assert np.array_equal(tiled.pred, whole.pred)
    np.testing.assert_allclose(tiled.logits, whole.logits, atol=1e-5, rtol=0)


def test_mask_classifies_only_labelled_pixels(student, scene):
    clf = open_classifier(student, mode="encode")
    mask = scene.labels >= 0
    sm = predict_scene(clf, scene.cube, mask=mask)
    full = predict_scene(clf, scene.cube)
    assert sm.pixels == int(mask.sum()) and (sm.pred[~mask] == -1).all()
    assert np.array_equal(sm.pred[mask], full.pred[mask])


def test_write_maps(scene, tmp_path):
    pred = np.full((scene.height, scene.width), 2, np.int16)
    pred[0, 0] = -1
    ids = to_class_ids(pred, scene.class_ids)
    assert ids.dtype == np.uint8 and ids[0, 0] == 0 and ids[1, 1] == scene.class_ids[2]
    write_map(tmp_path / "m.npy", pred, scene.class_ids, scene.class_names)
    assert np.array_equal(np.load(tmp_path / "m.npy"), ids)
    write_map(tmp_path / "m.png", pred, scene.class_ids, scene.class_names, title="t")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(BlmkdError, match="must end in"):
        write_map(tmp_path / "m.jpg", pred, scene.class_ids, scene.class_names)


# ----------------------------------------------------------------------------------------------
# The GPU map path (runs on the CPU too: the same tensor code)


def _windows_ref(model, cube_u8, patch):
    """Per-patch logits of every pixel's reflect-padded window: the slow, obvious reference."""
    import numpy as np
    import torch

    from blmkd.inference.scene import reflect_index

    h, w, b = cube_u8.shape
    r = patch // 2
    pad = cube_u8[reflect_index(-r, h + r, h)][:, reflect_index(-r, w + r, w)]  # (H+2r, W+2r, B)
    win = np.lib.stride_tricks.sliding_window_view(pad, (patch, patch), axis=(0, 1))  # (H, W, B, P, P)
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(win.reshape(-1, b, patch, patch))))


def test_map_bytes_torch_equals_per_patch_inference():
    import torch

    from blmkd.inference.latent import map_bytes_torch
    from blmkd.models import create_model

    torch.manual_seed(0)
    model = create_model("blm_t", bands=30, num_classes=5).eval()
    cube = torch.randint(0, 256, (20, 17, 30), dtype=torch.uint8)
    ref = _windows_ref(model, cube.numpy(), 7).argmax(1).view(20, 17)
    # tiles and batches that do not divide the scene; a given forward sees padded, equal batches
    shapes = []

    def fwd(h):
        shapes.append(tuple(h.shape))
        return model.forward_scanned(h)

    assert torch.equal(map_bytes_torch(model, cube, 7, tile=6, batch=50), ref)
    assert torch.equal(map_bytes_torch(model, cube, 7, tile=6, batch=50, forward=fwd), ref)
    assert set(shapes) == {(50, 49, 24)}


def test_forward_scanned_equals_forward_latent():
    import torch

    from blmkd.models import create_model

    torch.manual_seed(1)
    model = create_model("blm_s", bands=12, num_classes=4).eval()
    lat = torch.randn(6, model.config.d_model, 5, 5)  # (N, d, P, P)
    order = torch.tensor(model.scan_order(5))
    tokens = lat.flatten(2).transpose(1, 2)[:, order]  # (N, L, d) in scan order
    with torch.inference_mode():
        assert torch.allclose(model.forward_scanned(tokens), model.forward_latent(lat), atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_gpu_map_and_cuda_graphs_match_the_cpu():
    import torch

    from blmkd.inference.latent import map_bytes_torch
    from blmkd.inference.torch_runner import CudaGraphs
    from blmkd.models import create_model
    from blmkd.ops.norm import NARROW_LN_ROWS, layer_norm

    torch.manual_seed(0)
    model = create_model("blm_t", bands=30, num_classes=5).eval()
    cube = torch.randint(0, 256, (40, 33, 30), dtype=torch.uint8)
    cpu = map_bytes_torch(model, cube, 7)
    gpu = map_bytes_torch(model.cuda(), cube.cuda(), 7)
    assert (gpu.cpu() == cpu).float().mean() > 0.999
    x = torch.randint(0, 256, (1, 30, 7, 7), dtype=torch.uint8, device="cuda")
    graphs = CudaGraphs(model)
    with torch.inference_mode():
        assert torch.equal(graphs(x).clone(), model(x))
        x2 = torch.randint(0, 256, (1, 30, 7, 7), dtype=torch.uint8, device="cuda")
        assert torch.equal(graphs(x2).clone(), model(x2))  # replayed on new input
        t = torch.randn(NARROW_LN_ROWS, 24, device="cuda")
        ln = model.layers[0].norm
        assert torch.allclose(layer_norm(ln, t), ln(t), atol=1e-5)
