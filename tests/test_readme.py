"""The code blocks of the README and of every docs page (docs/**/*.md) are what users copy:
its ```bash blocks and ```python blocks are run, from the repository root; its ```console blocks
that show output (`$ command` then what it prints) are run and compared. Blocks that cannot run
here (a cluster, a cloud) are ```text, or ```console without a `$ ` prompt. A block that appears
in several files (the README's tour repeats some of the pages') is run once."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(lang: str) -> list[tuple[str, str]]:
    """(where, block) for each ```lang block of the pages, first occurrence of each block only;
    ``where`` is ``page:line`` (the line of the opening fence)."""
    seen: dict[str, str] = {}
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(rf"```{lang}\n(.*?)```", text, re.S):
            line = text.count("\n", 0, m.start()) + 1
            seen.setdefault(m.group(1), f"{page.relative_to(ROOT)}:{line}")
    return [(where, block) for block, where in seen.items()]


SHELL = blocks("bash")
PYTHON = blocks("python")
# ```console blocks that show a command's output: `$ command` lines, each followed by what it
# prints; run here and compared line by line ("..." in a page stands for any lines)
PROMPTED = [(w, b) for w, b in blocks("console") if b.startswith("$ ")]


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def test_pages_have_runnable_blocks():
    assert SHELL and PYTHON
    assert any(w.startswith("README.md") for w, _ in SHELL)


@pytest.mark.parametrize(("where", "block"), SHELL, ids=[w for w, _ in SHELL])
def test_shell_block_runs(where, block, real_data):
    for line in block.splitlines():
        cmd = line.split("  #")[0].strip()
        if not cmd:
            continue
        proc = subprocess.run(
            cmd, shell=True, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{where}: {cmd}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize(("where", "block"), PYTHON, ids=[w for w, _ in PYTHON])
def test_python_block_runs(where, block, real_data, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(block)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=_env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"{where}\n{proc.stdout}\n{proc.stderr}"


def _sessions(block: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            out[-1][1].append(line.rstrip())
    return out


def _matches(expected: list[str], actual: list[str]) -> bool:
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(_matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and actual[0] == expected[0] and _matches(expected[1:], actual[1:])


def test_pages_show_command_output():
    assert PROMPTED  # the pages show at least one command with its output


@pytest.mark.parametrize(("where", "block"), PROMPTED, ids=[w for w, _ in PROMPTED])
def test_console_output_is_what_the_command_prints(where, block, real_data):
    for cmd, expected in _sessions(block):
        proc = subprocess.run(
            cmd, shell=True, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
        )
        actual = [line.rstrip() for line in (proc.stdout + proc.stderr).splitlines()]
        assert _matches(expected, actual), (
            f"{where}: $ {cmd}\nshown:\n" + "\n".join(expected)
            + "\nprinted:\n" + "\n".join(actual)
        )  # fmt: skip
