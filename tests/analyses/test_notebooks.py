"""Every notebook in analyses/ runs top to bottom on tiny settings and draws its figures;
the committed notebooks carry no outputs."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = {
    # name: (parameters overriding the notebook's, figures it must draw)
    "layer_decomposition.ipynb": ({"preset": "quick", "epochs": 2, "seeds": [0]}, 7),
    "depth_and_activation.ipynb": ({"depths": [2, 3], "width": 32, "epochs": 2}, 1),
    "external_checkpoint.ipynb": ({"epochs": 1}, 4),
}


def _execute(name: str, parameters: dict, cwd) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "analyses" / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected by the test\n" + "\n".join(
        f"{k} = {v!r}" for k, v in parameters.items()
    )
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def _figures(nb) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for out in c.outputs
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_the_notebook_runs_and_draws_its_figures(name, tmp_path):
    parameters, figures = NOTEBOOKS[name]
    nb = _execute(name, parameters, tmp_path)  # raises CellExecutionError if any cell fails
    assert _figures(nb) >= figures
    markdown = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "text/markdown" in o.get("data", {})
    ]
    if name != "external_checkpoint.ipynb":
        assert markdown, "the figures' commentary is computed from the data"
        assert all("nan" not in o["data"]["text/markdown"].lower() for o in markdown)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(ROOT / "analyses" / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
