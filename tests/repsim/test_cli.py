"""repsim.cli: one parser for every command, one-line errors, exit statuses, the tables."""

import errno

import pytest

from repsim import cli, extract, norms, probes, rdm, report, store
from tests.repsim.test_report import _checkpoint

SHARED = ("--layers", "--device", "--batch-size", "--model", "--model-kwargs", "--trust",
          "--max-model-gb", "--no-strict", "--force", "--quiet", "--debug", "--out")  # fmt: skip


def _options(command) -> set[str]:
    p = cli.parser(command.name, command.description, stimuli=command.stimuli)
    command.add_arguments(p)
    return {s for a in p._actions for s in a.option_strings}


def test_every_command_takes_the_shared_arguments():
    commands = [rdm.COMMAND, probes.COMMAND, norms.COMMAND, extract._COMMAND, report._COMMAND]
    for command in commands:
        assert set(SHARED) <= _options(command), command.name
    assert "--stimuli" in _options(report._COMMAND) and "--stimuli" in _options(rdm.COMMAND)
    assert {"--metric", "--train-stimuli", "--C", "--weights"} <= _options(report._COMMAND)


def test_the_probes_refuse_stimuli_rather_than_ignore_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        probes.main([str(tmp_path), "--stimuli", "mnist-5k:test:40"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --stimuli" in capsys.readouterr().err


def test_failures_are_one_line_each_and_set_the_exit_status(capsys):
    failures = cli.Failures("python -m repsim.rdm", ["ckpt", "--quiet"])
    assert failures.end() == 0
    failures.add("bp", ValueError("first line\nsecond line"))
    failures.add("bp", ValueError("first line\nsecond line"))
    failures.add("dfa", store.DamagedStoreError("run 'dfa': chunk c/0 is missing"))
    failures.add("sg", OSError(errno.ENOTEMPTY, "Directory not empty", "x.zarr"))
    assert failures.end() == 1
    err = capsys.readouterr().err
    assert "3 failure(s); the other runs were analysed" in err
    assert "bp: first line (… --debug shows the rest)" in err
    assert "recompute it: python -m repsim.rdm ckpt --quiet --force" in err
    assert "another process wrote x.zarr at the same time" in err
    assert failures.fail(cli.NothingAnalysed("no run could be analysed (3 failed)")) == 2
    assert "error: no run could be analysed (3 failed)" in capsys.readouterr().err


def test_a_command_with_nothing_to_load_ends_in_one_line(tmp_path, capsys):
    assert rdm.main([str(tmp_path), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: no checkpoint (a directory with checkpoint.json) under {tmp_path}"
    )
    assert norms.main([str(tmp_path), "--quiet", "--max-model-gb", "0"]) == 2
    assert "--max-model-gb must be a positive number, got 0.0" in capsys.readouterr().err


def test_out_names_where_everything_goes(tmp_path, capsys):
    _checkpoint(tmp_path / "ckpt" / "bp", 0)
    out = tmp_path / "elsewhere" / "mine.zarr"
    assert norms.main([str(tmp_path / "ckpt"), "--quiet", "--out", str(out)]) == 0
    assert list(store.open_results(out).data_vars) == ["weight_norm"]
    assert (tmp_path / "elsewhere" / "figures" / "weight_norm.png").is_file()
    table = capsys.readouterr().out
    assert "normalised weight norm" in table and "block1" in table and "bp " in table
    assert not (tmp_path / "ckpt" / "results.zarr").exists()


def test_layer_table_shows_a_few_layers(capsys):
    layers = [f"l{i}" for i in range(9)]
    cli.layer_table("title", ["a"], layers, lambda run, i: str(i), width=4)
    assert capsys.readouterr().out.splitlines()[1:] == [
        "title", "run             l0  l2  l4  l6  l8", "a                0   2   4   6   8"
    ]  # fmt: skip
