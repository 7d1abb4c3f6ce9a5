"""One bad run does not sink a report: the others are analysed, the failures listed at the
end, and the exit status is 1."""

import numpy as np

from repsim import norms, rdm, report, store
from tests.repsim.test_report import _checkpoint
from tests.security.test_nonfinite import _nan_checkpoint

STIMULI = ["--quiet", "--stimuli", "mnist-5k:test:40"]


def _tree(root):
    _checkpoint(root / "bp", 0)
    _checkpoint(root / "dfa", 1)
    _nan_checkpoint(root / "nan")
    _checkpoint(root / "broken", 2)
    (root / "broken" / "model.safetensors").write_bytes(b"not a safetensors file")
    return root


def test_a_report_goes_on_past_broken_runs_and_lists_them(tmp_path, capsys):
    _tree(tmp_path)
    assert report.main([str(tmp_path), *STIMULI]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    tail = captured.err[captured.err.index("failure(s); the other runs were analysed") :]
    assert "broken: " in tail and "is not a readable safetensors file" in tail
    assert "nan: run 'nan': activations of layer(s) block2, block3 are NaN or inf" in tail
    assert "nan: the weight 'block2.linear.weight' of layer 'block2' holds NaN or inf" in tail
    assert tail.count("broken: ") == 1  # one line per distinct failure, not one per analysis
    results = store.open_results(tmp_path / "results.zarr")
    for name in ("diag_l2", "probe_accuracy", "weight_norm"):
        assert list(results[name]["run"].values) == ["bp", "dfa"], name
    assert np.isfinite(results["diag_l2"].values).all()
    for name in ("rdm", "diag_l2", "probes", "weight_norm", "learning_curves"):
        assert (tmp_path / "figures" / f"{name}.png").is_file(), name


def test_each_analysis_over_a_tree_goes_on_too(tmp_path, capsys):
    _tree(tmp_path)
    assert rdm.main([str(tmp_path), *STIMULI]) == 1
    assert norms.main([str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("failure(s); the other runs were analysed") == 2
    assert list(store.open_results(tmp_path / "results.zarr")["weight_norm"]["run"].values) == [
        "bp",
        "dfa",
    ]


def test_a_damaged_history_is_one_line_and_the_rest_of_the_report_is_drawn(tmp_path, capsys):
    _checkpoint(tmp_path / "bp", 0)
    _checkpoint(tmp_path / "dfa", 1)
    (tmp_path / "dfa" / "history.csv").write_bytes(b'epoch,train_accuracy\n1,"0.5\n\x00\xff,,,\n')
    assert report.main([str(tmp_path), *STIMULI]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"dfa: {tmp_path / 'dfa' / 'history.csv'} is not a readable history" in err
    assert (tmp_path / "figures" / "learning_curves.png").is_file()  # bp's curves


def test_nothing_to_analyse_is_exit_status_2(tmp_path, capsys):
    _nan_checkpoint(tmp_path / "nan")
    assert report.main([str(tmp_path), *STIMULI]) == 2
    err = capsys.readouterr().err
    assert "error: no run could be analysed" in err
    assert "repsim.rdm: could not run" in err
