"""The examples in examples/ run as a user runs them, and use only the public API."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_uses_only_the_public_api(path):
    tree = ast.parse(path.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "shiftray" in names and not [m for m in names if m.startswith("shiftray.")]


@pytest.mark.parametrize("path", [ROOT / "examples/quickstart.py"], ids=["quickstart.py"])
def test_example_runs(path, real_data, tmp_path):  # serve_demo.py: the README's serving block
    proc = subprocess.run([sys.executable, str(path), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrote" in proc.stdout and list(tmp_path.glob("*.html"))


def test_notebook_runs(real_data):
    """examples/quickstart.ipynb, executed top to bottom in a fresh kernel (as Jupyter would)."""
    import nbformat
    from nbclient import NotebookClient

    path = ROOT / "examples" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "import shiftray" in code and "shiftray." in code and "from shiftray" not in code
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()  # fmt: skip
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("right; mean shift score" in o.get("text", "") for o in outputs)
