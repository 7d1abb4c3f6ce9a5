"""Manifests: every file a store's writer wrote, with its size and SHA-256, so that a
missing, truncated or altered chunk is found before it is read as data.

A node (a run of an activations store, or one result of a results store) records its
manifest in its own attributes when it is committed (:func:`write_manifest`); readers call
:func:`verify` before they trust it. Hashes are computed once per process: afterwards a node
whose files have the same size, mtime and inode is taken as verified.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["MANIFEST", "DamagedStoreError", "verify", "write_manifest"]


class DamagedStoreError(ValueError):
    """A file of a store is missing, or is not what its writer wrote; recompute with ``force``."""

    def __str__(self) -> str:
        return f"{self.args[0]}; recompute it (force=True, or --force on the command line)"


#: The attribute that holds a node's manifest.
MANIFEST = "manifest"
#: (device, inode) of a node's directory → (size, mtime, inode) of each file, when its hashes
#: matched (or were just written): renaming a node keeps its inode, rewriting a file does not.
_VERIFIED: dict[tuple[int, int], dict[str, tuple[int, int, int]]] = {}


def _stat(file: Path) -> tuple[int, int, int]:
    st = file.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _key(node: Path) -> tuple[int, int]:
    st = node.stat()
    return st.st_dev, st.st_ino


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def write_manifest(node: Path) -> None:
    """Record every file under ``node`` (except its own ``zarr.json``) in its attributes."""
    import zarr

    files = sorted(p for p in node.rglob("*") if p.is_file() and p != node / "zarr.json")
    manifest = {p.relative_to(node).as_posix(): [p.stat().st_size, _sha256(p)] for p in files}
    zarr.open_group(str(node), mode="r+", zarr_format=3).attrs[MANIFEST] = manifest
    _VERIFIED[_key(node)] = {rel: _stat(node / rel) for rel in manifest}


def _describe(rel: str, what: str) -> str:
    """``block2/activations/c/0/0`` → ``layer 'block2', array 'activations', chunk c/0/0``."""
    kinds = ("layer", "array") if what == "run" else ("array",)
    parts = rel.split("/")
    names, rest = parts[: len(kinds)], parts[len(kinds) :]
    if not rest:
        return f"file {rel!r}"
    tail = ("chunk " if rest[0] == "c" else "metadata ") + "/".join(rest)
    return ", ".join(f"{k} {v!r}" for k, v in zip(kinds, names, strict=True)) + f", {tail}"


def verify(node: Path, where: str, what: str) -> None:
    """Check every file in ``node``'s manifest: present, same size, same SHA-256."""
    try:
        attrs = json.loads((node / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError) as err:
        raise DamagedStoreError(
            f"{where}: its metadata {node / 'zarr.json'} is unreadable ({err})"
        ) from err
    manifest = attrs.get(MANIFEST)
    if not isinstance(manifest, dict):
        raise DamagedStoreError(
            f"{where} has no manifest of its files (written by an older repsim or by hand), "
            "so it cannot be verified"
        )
    stats: dict[str, tuple[int, int, int]] = {}
    for rel, (size, _) in manifest.items():
        try:
            stats[rel] = _stat(node / rel)
        except OSError:
            raise DamagedStoreError(f"{where}: {_describe(rel, what)} is missing") from None
        if stats[rel][0] != size:
            raise DamagedStoreError(
                f"{where}: {_describe(rel, what)} has {stats[rel][0]} bytes, its writer wrote {size}"
            )
    if _VERIFIED.get(_key(node)) == stats:
        return
    for rel, (_, digest) in manifest.items():
        if _sha256(node / rel) != digest:
            raise DamagedStoreError(
                f"{where}: {_describe(rel, what)} is corrupt (its content is not what was written)"
            )
    _VERIFIED[_key(node)] = stats
