"""Directory swaps that a crash cannot half-do, and one policy for what crashes leave behind.

Checkpoints (:mod:`repsim.checkpoints`) and zarr stores (:mod:`repsim.store`) are written
the same way: into a temporary directory beside the destination, then renamed into place.
A rename cannot replace a non-empty directory, so a previous version is first moved aside
and deleted after the new one is in place. The names say who made them::

    .<name>.tmp-<host>-<pid>-<token>    being written (or left by a writer that died)
    .<name>.old-<host>-<pid>-<token>    the previous version, moved aside during a swap

The policy for leftovers (:func:`clean_stale`): a temporary or moved-aside directory is
removed only once the process that made it is gone: on this host, when its pid no longer
runs; from another host (a shared file system), or with a name we cannot parse, when it
has not changed for :data:`STALE_AFTER_S`. A writer killed between the two renames of a
swap (its destination gone, its ``.old-`` left) is completed by :func:`recover`: the new
version, already complete in its ``.tmp-`` twin, is put in place, or else the old one is
put back.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from pathlib import Path

#: Age (seconds since last change) after which a leftover of an unknown writer is removed.
STALE_AFTER_S = 24 * 3600


def _host() -> str:
    return socket.gethostname().replace("-", "_").replace("/", "_") or "localhost"


def make_temp(parent: Path, name: str) -> Path:
    """A new empty directory ``parent/.<name>.tmp-<host>-<pid>-<token>`` (mode from the umask)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{name}.tmp-{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # mode 0o777 less the umask, unlike tempfile.mkdtemp's 0o700
    return tmp


def _aside(tmp: Path, name: str) -> Path:
    """Where ``swap`` moves the previous version: the ``.old-`` twin of ``tmp``."""
    return tmp.parent / f".{name}.old-{tmp.name.split('.tmp-', 1)[1]}"


def swap(new: Path, dest: Path, tmp: Path, name: str) -> None:
    """Put directory ``new`` (``tmp`` or inside it) at ``dest``, replacing what is there.

    ``tmp`` is the temporary directory from :func:`make_temp` (``new`` itself or its
    parent) and ``name`` the name it was made for; the previous version is moved to the
    ``.old-`` twin of ``tmp`` and deleted once ``new`` is in place.
    """
    if not dest.exists() and not dest.is_symlink():
        os.replace(new, dest)
        return
    old = _aside(tmp, name)
    os.replace(dest, old)
    # killed here, recover() puts new (or else old) back at dest
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _writer(path: Path) -> tuple[str, int] | None:
    """``(host, pid)`` from a ``.tmp-``/``.old-`` name, or None for a name we did not make."""
    suffix = path.name.split(".tmp-", 1)[-1] if ".tmp-" in path.name else None
    if suffix is None and ".old-" in path.name:
        suffix = path.name.split(".old-", 1)[1]
    parts = (suffix or "").rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _gone(path: Path) -> bool:
    """Whether the process that made ``path`` is gone (see the module's policy)."""
    writer = _writer(path)
    if writer is not None and writer[0] == _host():
        return writer[1] != os.getpid() and not _pid_alive(writer[1])
    try:
        return time.time() - path.lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def recover(dest: Path, *, complete: str | None = None) -> None:
    """Finish a swap into ``dest`` whose writer died between its two renames.

    Only when ``dest`` is missing: the ``.old-`` directory of a dead writer is replaced by
    its ``.tmp-`` twin when that holds ``complete`` (a file every finished version has),
    or else moved back to ``dest``. A ``.old-`` whose name we did not make counts as left
    by a dead writer here: putting a complete previous version back is always safe.
    """
    if dest.exists() or dest.is_symlink():
        return
    olds = sorted(
        (p for p in dest.parent.glob(f".{dest.name}.old-*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
    )
    for old in reversed(olds):
        writer = _writer(old)
        if writer is not None and writer[0] == _host() and not _gone(old):
            continue  # a live writer mid-swap: it puts its own new version in place
        new = old.parent / old.name.replace(".old-", ".tmp-", 1)
        if complete is not None and (new / complete).is_file():
            os.replace(new, dest)
        else:
            os.replace(old, dest)
        return


def clean_stale(parent: Path, name: str) -> None:
    """Remove ``.<name>.tmp-*`` and ``.<name>.old-*`` in ``parent`` left by dead writers.

    Call :func:`recover` first where a leftover may be the only copy of the destination.
    """
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for leftover in parent.glob(pattern):
            if leftover.is_dir() and not leftover.is_symlink() and _gone(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
