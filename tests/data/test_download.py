"""fetch() against a real HTTP server on 127.0.0.1: checksum, resume, atomic rename, registry downloads."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from blmkd.data import download, load_scene, registry
from blmkd.data.cache import data_dir
from blmkd.data.download import download_dataset, fetch
from blmkd.data.registry import DatasetFile, DatasetInfo
from blmkd.errors import DataError

from .test_readers import write_mat5

PAYLOAD = np.random.default_rng(0).bytes(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range`` unless told not to; can drop connections halfway."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "not here")
            return
        start = 0
        if rng and srv.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drops > 0:
            srv.drops -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True  # promised len(body), sent half: the client sees a short read
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {"/data.bin": PAYLOAD}
    srv.requests = []
    srv.honour_range = True
    srv.drops = 0
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(download, "_RETRY_DELAY_S", 0.0)


def test_fetch_ok_with_checksum(server, tmp_path):
    dest = fetch(f"{server.url}/data.bin", tmp_path / "sub" / "data.bin", sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "data.bin.part").exists()
    assert server.requests == [("/data.bin", None)]


def test_fetch_with_progress_bar(server, tmp_path):
    dest = fetch(f"{server.url}/data.bin", tmp_path / "data.bin", progress=True)
    assert dest.read_bytes() == PAYLOAD


def test_existing_file_is_not_fetched_again(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"already here")
    fetch(f"{server.url}/data.bin", tmp_path / "data.bin", progress=False)
    assert server.requests == []


def test_checksum_mismatch_names_both_hashes_and_leaves_nothing(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DataError) as info:
        fetch(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=wrong, progress=False)
    assert wrong in str(info.value) and PAYLOAD_SHA in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part


def test_resume_after_dropped_connection(server, tmp_path):
    server.drops = 1
    dest = fetch(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", None), ("/data.bin", f"bytes={len(PAYLOAD) // 2}-")]


def test_failure_is_atomic_and_the_next_call_resumes(server, tmp_path):
    server.drops = 10
    dest = tmp_path / "data.bin"
    with pytest.raises(DataError, match="failed after 2 attempts.*run again to resume"):
        fetch(f"{server.url}/data.bin", dest, sha256=PAYLOAD_SHA, progress=False, retries=1)
    assert not dest.exists()  # no final file after a failure
    part = tmp_path / "data.bin.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    have = part.stat().st_size

    server.drops = 0
    server.requests.clear()
    fetch(f"{server.url}/data.bin", dest, sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", f"bytes={have}-")]


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    server.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(b"garbage that is not a prefix")
    dest = fetch(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD  # 200 answer: the .part was truncated, not appended to


def test_part_longer_than_file_starts_over(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"x" * (len(PAYLOAD) + 10))
    dest = fetch(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_error(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(f"{server.url}/missing.bin", tmp_path / "m.bin", progress=False)
    assert not (tmp_path / "m.bin").exists()


def test_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BLMKD_DATA_DIR", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "cache"
    monkeypatch.delenv("BLMKD_DATA_DIR")
    assert data_dir() == Path.home() / ".cache" / "blmkd"


def test_houston_has_no_download(monkeypatch, tmp_path):
    monkeypatch.setenv("BLMKD_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="cannot be downloaded.*load_scene\\(CUBE_PATH, gt=GT_PATH\\)"):
        download_dataset(registry.get_dataset("houston_2013"), progress=False)


def test_load_scene_downloads_a_registry_dataset_into_the_cache(server, monkeypatch, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cube = np.random.default_rng(3).integers(0, 4000, size=(6, 5, 4)).astype(np.uint16)
    gt = np.array([[0, 1, 10, 11, 12]] * 6, dtype=np.uint8)
    cube_bytes = write_mat5(src / "Tiny.mat", tiny=cube).read_bytes()
    gt_bytes = write_mat5(src / "Tiny_gt.mat", tiny_gt=gt).read_bytes()
    server.files.update({"/Tiny.mat": cube_bytes, "/Tiny_gt.mat": gt_bytes})
    info = DatasetInfo(
        name="tiny_scene",
        title="Tiny",
        aliases=("tiny",),
        cube=DatasetFile(
            "Tiny.mat", "tiny", f"{server.url}/Tiny.mat", hashlib.sha256(cube_bytes).hexdigest()
        ),
        gt=DatasetFile("Tiny_gt.mat", "tiny_gt", f"{server.url}/Tiny_gt.mat"),
        classes=((1, "one"), (10, "ten"), (11, "eleven"), (12, "twelve")),
        bands=4,
        sensor="test",
        citation="test",
    )
    monkeypatch.setitem(registry.DATASETS, info.name, info)
    monkeypatch.setenv("BLMKD_DATA_DIR", str(tmp_path / "cache"))
    assert not info.is_cached()

    scene = load_scene("Tiny-Scene", progress=False)
    assert info.is_cached() and (tmp_path / "cache" / "tiny_scene" / "Tiny.mat").is_file()
    np.testing.assert_array_equal(scene.cube, cube)
    assert scene.name == "tiny_scene"
    assert scene.class_ids == [1, 10, 11, 12]
    assert scene.class_names == ["one", "ten", "eleven", "twelve"]
    assert scene.extra["citation"] == "test"

    server.requests.clear()
    load_scene("tiny", progress=False)
    assert server.requests == []  # read from the cache


def test_cached_dataset_files_are_checked_on_every_load(tmp_path, monkeypatch):
    """A cached file without a published checksum is recorded the first time and checked after."""
    from blmkd.data import download
    from blmkd.data.registry import get_dataset

    monkeypatch.setenv("BLMKD_DATA_DIR", str(tmp_path))
    info = get_dataset("salinas_a")
    cube, gt = info.local_paths()
    cube.parent.mkdir(parents=True, exist_ok=True)
    cube.write_bytes(b"cube bytes")
    gt.write_bytes(b"gt bytes")
    assert download.download_dataset(info, progress=False) == (cube, gt)  # nothing to fetch
    side = cube.with_name(cube.name + ".sha256")
    assert side.read_text().split()[0] == download.sha256_file(cube)
    cube.write_bytes(b"cube bytez")  # same size, another byte
    with pytest.raises(DataError, match=r"differs from the digest recorded in SalinasA_corrected.mat.sha256"):
        download.download_dataset(info, progress=False)
    with pytest.raises(DataError, match="differs from the pinned sha256"):
        download.verify_cached(gt, "0" * 64)
