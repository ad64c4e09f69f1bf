"""The docs site (mkdocs.yml, docs/) builds with --strict: no broken link, anchor, nav entry or
API reference. The README stays a front door, and the job-spec reference page is the one the
schema generates. (The pages' code blocks run in tests/test_readme.py.)"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SITE_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def test_site_builds_strict(tmp_path):
    missing = [p for p in SITE_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[dev]' installs them)")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "api" / "serving" / "index.html").is_file()


def test_spec_reference_is_the_generated_one():
    """The job-spec reference page is `shiftray reference`'s output, so it cannot drift from the
    schema (regenerate: shiftray reference, paste between the markers in docs/job-spec.md)."""
    from shiftray.config.reference import spec_reference

    page = (ROOT / "docs" / "job-spec.md").read_text()
    copy = page.split("<!-- spec-reference:begin -->\n")[1].split("<!-- spec-reference:end -->")[0]
    assert copy == spec_reference()


def test_readme_is_a_front_door():
    """What shiftray is, the two commands, a tour and a map: the manual lives in docs/."""
    assert len(README.splitlines()) <= 300
    for command in ("make demo", "make test"):
        assert command in README
    linked = set(re.findall(r"\]\((docs/[^)#]+)", README))
    assert linked and all((ROOT / p).is_file() for p in linked), linked


def test_pages_show_no_machine_paths():
    """Paths in the pages are relative to the checkout (an absolute path into its folders is
    one machine's)."""
    machine = re.compile(r"(?<![\w.:/])/(?:[\w.-]+/)+(?:runs|jobs|bench|platform|docs|tests)/")
    found = [
        f"{page.relative_to(ROOT)}: {m.group(0)}"
        for page in PAGES
        for m in machine.finditer(page.read_text())
    ]
    assert found == []
