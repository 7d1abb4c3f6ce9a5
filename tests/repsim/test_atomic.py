"""Directory swaps and the one policy for what crashed writers leave behind."""

import os

import pytest

from repsim import _atomic


def _dir(path, content):
    path.mkdir()
    (path / "f").write_text(content)
    return path


def test_swap_replaces_and_leaves_nothing(tmp_path):
    _dir(tmp_path / "d", "old")
    tmp = _atomic.make_temp(tmp_path, "d")
    (tmp / "f").write_text("new")
    _atomic.swap(tmp, tmp_path / "d", tmp, "d")
    assert (tmp_path / "d" / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_failed_second_rename_puts_the_old_version_back(tmp_path):
    _dir(tmp_path / "d", "old")
    tmp = _atomic.make_temp(tmp_path, "d")
    with pytest.raises(FileNotFoundError):  # "new" does not exist: the second rename fails
        _atomic.swap(tmp / "missing", tmp_path / "d", tmp, "d")
    assert (tmp_path / "d" / "f").read_text() == "old"


@pytest.mark.parametrize("complete", [True, False])
def test_recover_completes_or_restores_a_dead_swap(tmp_path, complete):
    token = f"{_atomic._host()}-999999999-abcd"  # no such pid
    _dir(tmp_path / f".d.old-{token}", "old")
    new = _dir(tmp_path / f".d.tmp-{token}", "new")
    if complete:
        (new / "done").write_text("")
    _atomic.recover(tmp_path / "d", complete="done")
    assert (tmp_path / "d" / "f").read_text() == ("new" if complete else "old")
    _atomic.clean_stale(tmp_path, "d")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_live_writer_is_left_alone(tmp_path):
    token = f"{_atomic._host()}-{os.getppid()}-abcd"  # the parent process is alive
    _dir(tmp_path / f".d.old-{token}", "old")
    _dir(tmp_path / f".d.tmp-{token}", "new")
    _atomic.recover(tmp_path / "d")
    _atomic.clean_stale(tmp_path, "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".d.old-{token}", f".d.tmp-{token}"]


def test_make_temp_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        tmp = _atomic.make_temp(tmp_path / "sub", "d")
    finally:
        os.umask(old)
    assert tmp.stat().st_mode & 0o777 == 0o750
    assert tmp.name.startswith(f".d.tmp-{_atomic._host()}-{os.getpid()}-")
