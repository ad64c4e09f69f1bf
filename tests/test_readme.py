"""The README's ```bash blocks are commands users copy: run every one of them; its ```console
blocks that show output (`$ command` then what it prints) are run and compared."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def test_readme_has_runnable_blocks():
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.split()[1] if len(b.split()) > 1 else b)
def test_readme_block_runs(block, real_data, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for line in block.splitlines():
        cmd = line.split("  #")[0].strip()
        if not cmd:
            continue
        proc = subprocess.run(
            cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"


# ```console blocks that show a command's output: `$ command` lines, each followed by what it
# prints; run here and compared line by line ("..." in the README stands for any lines)
PROMPTED = [b for b in re.findall(r"```console\n(.*?)```", README, re.S) if b.startswith("$ ")]


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


def test_readme_shows_command_output():
    assert PROMPTED  # the README shows at least one command with its output


@pytest.mark.parametrize("block", PROMPTED, ids=lambda b: b.split()[2] if len(b.split()) > 2 else b)
def test_readme_console_output_is_what_the_command_prints(block, real_data):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for cmd, expected in _sessions(block):
        proc = subprocess.run(
            cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        actual = [line.rstrip() for line in (proc.stdout + proc.stderr).splitlines()]
        assert _matches(expected, actual), (
            f"$ {cmd}\nREADME:\n" + "\n".join(expected) + ("\nprinted:\n" + "\n".join(actual))
        )


def test_readme_spec_reference_is_the_generated_one():
    """The README's job-spec reference is `shiftray reference`'s output, so it cannot drift
    from the schema (regenerate: shiftray reference, paste between the markers)."""
    from shiftray.config.reference import spec_reference

    copy = README.split("<!-- spec-reference:begin -->\n")[1].split("<!-- spec-reference:end -->")[
        0
    ]
    assert copy == spec_reference()
