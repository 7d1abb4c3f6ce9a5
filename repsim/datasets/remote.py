"""Downloading full MNIST and Fashion-MNIST, keeping only files whose checksums verify."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from repsim.datasets.idx import is_gzip

__all__ = ["REMOTES", "Remote", "download", "fetch"]


@dataclass(frozen=True)
class Remote:
    """Where a downloadable dataset lives and what its files must hash to."""

    mirrors: tuple[str, ...]
    sha256: dict[str, str]  # of the *uncompressed* files, so any gzip of them verifies
    megabytes: int
    debian_package: str | None = None
    system_dir: str | None = None


REMOTES = {
    "mnist": Remote(
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
    "fashion-mnist": Remote(
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


def _sha256_uncompressed(path: Path) -> str:
    """SHA-256 of a file's content after gunzip (if it is gzipped)."""
    digest = hashlib.sha256()
    with gzip.open(path, "rb") if is_gzip(path) else path.open("rb") as f:
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
    if name not in REMOTES:
        raise ValueError(
            f"cannot download {name!r}: downloadable datasets are {', '.join(map(repr, REMOTES))}"
            + (" ('mnist-5k' is embedded and needs no download)" if name == "mnist-5k" else "")
        )
    remote = REMOTES[name]
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
