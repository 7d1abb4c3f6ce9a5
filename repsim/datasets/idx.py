"""IDX files, MNIST's original format: reading one file, and one split of a directory.

A directory of IDX files holds each split as an images file and a labels file, named as
MNIST names them (``train-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``, ...);
:func:`split_files` also accepts ``test-`` for ``t10k-`` and a dot before ``idx`` (a
common re-packaging).
"""

from __future__ import annotations

import functools
import gzip
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from repsim.datasets.names import DatasetNotFoundError

__all__ = ["STEMS", "header_shape", "is_gzip", "read_idx", "read_split", "split_files"]

#: File stems per split, as MNIST names them: (images, labels).
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not, detected from its content).

    Parameters
    ----------
    path
        An IDX file such as ``train-images-idx3-ubyte`` or ``t10k-labels-idx1-ubyte.gz``.

    Returns
    -------
    np.ndarray
        The array, with the shape and type that the file's header declares
        (``uint8 [60000, 28, 28]`` for MNIST's training images), in native byte order.

    Raises
    ------
    ValueError
        If the file is not IDX (wrong magic number), is truncated, or has bytes past the
        end that its header declares.

    Examples
    --------
    >>> read_idx("data/mnist/t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
    (10000,)
    """
    return _parse_idx(_read_maybe_gzip(Path(path)), str(path))


def is_gzip(path: Path) -> bool:
    """Whether a file starts with gzip's magic number (its name says nothing)."""
    with path.open("rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with gzip's magic number."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(
            f"{path}: the gzip stream is corrupt or truncated ({err}); "
            "download the file again (python -m repsim.datasets download ...)"
        ) from err


def _parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Decode IDX bytes, checking the header against the payload."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{source}: not an IDX file: its magic number is 0x{raw[:4].hex() or 'empty'}, "
            "expected two zero bytes, a type code (0x08 = unsigned byte, ...) and the "
            "number of dimensions, e.g. 0x00000803 for MNIST images"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(
            f"{source}: the IDX header declares {ndim} dimensions but the file ends "
            f"after {len(raw)} bytes; the file is truncated or not IDX"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - header
    if have != need:
        problem = "is truncated" if have < need else "has trailing bytes"
        raise ValueError(
            f"{source}: the file {problem}: its header declares shape {shape} of {dtype.name} "
            f"({need} bytes of data) but {have} bytes follow the header; "
            "download the file again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def header_shape(path: Path) -> tuple[int, ...] | None:
    """The shape an IDX file's header declares, reading only the header (None if unreadable)."""
    try:
        with gzip.open(path, "rb") if is_gzip(path) else path.open("rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00":
                return None
            dims = f.read(4 * head[3])
        return struct.unpack(f">{head[3]}I", dims)
    except (OSError, EOFError, struct.error, zlib.error):
        return None


def split_files(directory: Path, split: str) -> tuple[Path, Path]:
    """The images and labels files of one split in an IDX directory.

    Raises
    ------
    DatasetNotFoundError
        Naming the file expected and the files found.
    """
    found = []
    for kind, idx in (("images", "idx3"), ("labels", "idx1")):
        pattern = re.compile(rf"^({'|'.join(_PREFIXES[split])})-{kind}[-.]{idx}-ubyte(\.gz)?$")
        matches = sorted(p for p in directory.iterdir() if pattern.match(p.name))
        if not matches:
            raise DatasetNotFoundError(
                f"{directory} has no {split} {kind} file: expected "
                f"{STEMS[split][kind == 'labels']}[.gz] (found: "
                f"{', '.join(sorted(p.name for p in directory.iterdir())) or 'nothing'})"
            )
        found.append(matches[0])  # uncompressed sorts first when both are present
    return found[0], found[1]


def read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H*W], labels int64 [N]) of one split, validated (read-only, cached)."""
    images_path, labels_path = split_files(directory, split)
    key = tuple(
        (str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size)
        for p in (images_path, labels_path)
    )
    return _read_split_cached(key)


@functools.lru_cache(maxsize=8)
def _read_split_cached(key: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Read and check a pair of IDX files; cached on path, mtime and size."""
    (images_path, _, _), (labels_path, _, _) = key
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected images of shape [N, height, width] as unsigned bytes, "
            f"found shape {images.shape} of {images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{labels_path}: expected labels of shape [N] as integers, "
            f"found shape {labels.shape} of {labels.dtype}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the two files must come from the same split"
        )
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{labels_path}: labels must be non-negative, found {labels.min()}")
    images = images.reshape(len(images), -1)
    labels = labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False  # shared by the cache
    return images, labels
