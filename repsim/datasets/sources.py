"""Where each dataset is found, and loading one split of it as tensors.

``"mnist-5k"`` is embedded (:mod:`repsim.datasets.embedded`). ``"mnist"`` and
``"fashion-mnist"`` are looked up in ``$REPSIM_DATA/<name>``, then ``data/<name>`` (in the
working directory, then in the source checkout), then, for Fashion-MNIST only,
``/usr/share/datasets/fashion-mnist`` where Debian's ``dataset-fashion-mnist`` package
installs it. ``"idx:<directory>"`` is any directory of IDX files named like MNIST's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from repsim.datasets import embedded, idx
from repsim.datasets.names import SPLITS, DatasetNotFoundError, Split, check_name, check_split
from repsim.datasets.remote import REMOTES

__all__ = ["candidates", "class_names", "find", "load"]

_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _checkout_root() -> Path | None:
    """The source checkout holding this package, if it is one (editable install)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def candidates(name: str) -> list[Path]:
    """Directories searched for the full dataset ``name``, in order, without duplicates."""
    places = []
    if os.environ.get("REPSIM_DATA"):
        places.append(Path(os.environ["REPSIM_DATA"]).expanduser() / name)
    places.append(Path("data") / name)
    checkout = _checkout_root()
    if checkout is not None:
        places.append(checkout / "data" / name)
    if REMOTES[name].system_dir:
        places.append(Path(REMOTES[name].system_dir))
    unique = []
    for place in places:
        if place.resolve() not in [p.resolve() for p in unique]:
            unique.append(place)
    return unique


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
    check_name(name)
    check_split(split)
    if name == "mnist-5k":
        return embedded.csv_path().parent
    if name.startswith("idx:"):
        directory = Path(name[4:]).expanduser()
        if not directory.is_dir():
            raise DatasetNotFoundError(
                f"{name!r}: {directory} is not a directory; give a directory holding IDX files "
                f"such as {idx.STEMS[split][0]}.gz, e.g. idx:data/mnist"
            )
        idx.split_files(directory, split)
        return directory
    searched = []
    for place in candidates(name):
        if place.is_dir():
            try:
                idx.split_files(place, split)
                return place
            except DatasetNotFoundError:
                searched.append(f"{place} (exists, but has no complete {split} split)")
        else:
            searched.append(str(place))
    remote = REMOTES[name]
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


def _check_image_sizes(name: str, split: str, directory: Path) -> None:
    """Refuse a train split and a test split of different image sizes, naming both files."""
    other = SPLITS[1 - SPLITS.index(split)]
    try:
        paths = {
            s: idx.split_files(d, s)[0] for s, d in ((split, directory), (other, find(name, other)))
        }
    except DatasetNotFoundError:
        return  # only one split is there: nothing to compare
    shapes = {s: idx.header_shape(p) for s, p in paths.items()}
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
        images, labels = embedded.digits()
        keep = embedded.split_positions(split)
        return images[keep], labels[keep]
    directory = find(name, split)
    _check_image_sizes(name, split, directory)
    return idx.read_split(directory, split)


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
    check_name(name)
    check_split(split)
    images, labels = _arrays(name, split)
    X = torch.from_numpy(images.astype(np.float32) / np.float32(255))
    return X, torch.from_numpy(labels.copy())


def class_names(name: str) -> tuple[str, ...]:
    """Human-readable class names: the digits, or Fashion-MNIST's ten garment names."""
    check_name(name)
    if name == "fashion-mnist":
        return _FASHION_CLASSES
    if name.startswith("idx:"):
        _, labels = _arrays(name, "train")
        return tuple(str(c) for c in range(int(labels.max()) + 1))
    return tuple(str(d) for d in range(10))
