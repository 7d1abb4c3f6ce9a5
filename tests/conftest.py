"""Fixtures shared by the whole suite: generated IDX directories, a local HTTP server,
and the real datasets where this machine has them (skipped cleanly otherwise)."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX, written independently of repsim's reader."""
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, _IDX_CODES[np.dtype(big.dtype)], array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + big.tobytes()


def write_idx_split(
    directory: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    gz: bool = True,
    prefix: str | None = None,
) -> None:
    """Write one split as MNIST names it (``train-images-idx3-ubyte.gz``, ...)."""
    prefix = prefix or ("train" if split == "train" else "t10k")
    directory.mkdir(parents=True, exist_ok=True)
    for kind, idx, array in (("images", "idx3", images), ("labels", "idx1", labels)):
        data = idx_bytes(array)
        name = f"{prefix}-{kind}-{idx}-ubyte"
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


def fake_split(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images [n, size, size] and labels cycling over 10 classes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), (np.arange(n) % 10).astype(
        np.uint8
    )


@pytest.fixture
def fake_idx_dir(tmp_path: Path) -> Path:
    """A directory with a generated 50-train / 20-test dataset of 28×28 images, gzipped."""
    directory = tmp_path / "fake"
    write_idx_split(directory, "train", *fake_split(50, 0))
    write_idx_split(directory, "test", *fake_split(20, 1))
    return directory


def _shared_mnist() -> Path | None:
    for place in (os.environ.get("REPSIM_TEST_MNIST"), ROOT.parent / "shared" / "data" / "mnist"):
        if place and (Path(place) / "train-images-idx3-ubyte.gz").is_file():
            return Path(place)
    return None


@pytest.fixture
def shared_mnist() -> Path:
    """Full MNIST (original IDX, gzipped) beside the checkout, or skip."""
    place = _shared_mnist()
    if place is None:
        pytest.skip("full MNIST not found at ../shared/data/mnist (or $REPSIM_TEST_MNIST)")
    return place


@pytest.fixture
def debian_fashion() -> Path:
    """Debian's dataset-fashion-mnist files, or skip."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    return FASHION_DIR


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, *args) -> None:
        self.server.requests.append(self.path)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """Serve a directory on 127.0.0.1; returns (base URL, list of requested paths)."""
    servers = []

    def start(directory: Path) -> tuple[str, list[str]]:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.requests = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", server.requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def dask_client():
    """A client of a local Dask cluster as the README starts one: 2 worker processes, 1 thread
    each (skipped without the ``cluster`` extra)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client
