"""The layering of DESIGN.md: repsim never imports training, and stays light to import."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_repsim_never_imports_training():
    offenders = [p for p in (ROOT / "repsim").rglob("*.py") if "training" in _imported_modules(p)]
    assert offenders == [], f"repsim must not import training (DESIGN.md): {offenders}"


def test_importing_repsim_loads_nothing_heavy():
    code = "import sys, repsim; print(sorted({'torch', 'xarray', 'zarr', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
