"""Every generated table in the docs is what its script prints from bench/results/ today: a
figure cannot be typed in, nor outlive the result file it came from (re-run a script, paste
its tables, and this passes again)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (the command, which of its tables (in order), the pages that show them)
GENERATED = [
    (["bench/search_tables.py"], (0, 1, 2, 3), ("docs/search.md",)),
    (["bench/label_free_table.py"], (0,), ("docs/search.md",)),
    (["bench/accuracy.py", "--summary-only"], (0,), ("docs/results.md", "README.md")),
    (["bench/serve_table.py"], (0, 1), ("docs/serving.md",)),
]


def tables(text: str) -> list[str]:
    """The Markdown tables of a text: runs of lines that start with a pipe."""
    out, cur = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cur.append(line.rstrip())
        elif cur:
            out.append("\n".join(cur))
            cur = []
    return out


@pytest.mark.parametrize(("cmd", "which", "pages"), GENERATED, ids=[" ".join(c) for c, _, _ in GENERATED])
def test_generated_tables_are_in_the_docs_as_printed(cmd, which, pages):
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = tables(proc.stdout)
    assert len(printed) > max(which), f"{cmd} printed {len(printed)} tables"
    for page in pages:
        shown = "\n".join(line.rstrip() for line in (ROOT / page).read_text().splitlines())
        for i in which:
            assert printed[i] in shown, f"{page} does not show {' '.join(cmd)}'s table {i}:\n{printed[i]}"
