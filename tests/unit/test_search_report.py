"""The search report: self-contained HTML, rendered by a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from shiftray.search.summary import TrialRow, summarize


def fake_search(root):
    """A finished search directory as the driver writes it: search.json and each trial's
    metrics.jsonl."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        tid = f"abc_{i:05d}"
        lr, acc = float(10 ** rng.uniform(-3, -1)), float(60 + 8 * i)
        m = {"validator/im": 0.1 * i, "validator/snd": 5 - 0.2 * i, "target_acc": acc}
        rows.append(TrialRow(tid, {"optim.lr": lr, "finetune.strategy": ["fine-tune", "gradual-unfreeze"][i % 2]},
                             100 if i > 1 else 50, m, i == 0))  # fmt: skip
        run = root / "trials" / f"s-{tid}"
        run.mkdir(parents=True)
        with open(run / "metrics.jsonl", "w") as f:
            for step in (50, 100)[: 2 if i > 1 else 1]:
                f.write(json.dumps({"step": step, "loss": 1.0}) + "\n")
                f.write(json.dumps({"step": step, **{k: v * step / 100 for k, v in m.items()}}) + "\n")
    s = summarize("s", "validator/im", 100, rows)
    (root / "search.json").write_text(json.dumps(s.as_dict() | {"seconds": 12.0, "provenance": {"commit": "x"}}))
    return s


def test_report_is_self_contained(tmp_path):
    from shiftray.report.search_report import search_report

    fake_search(tmp_path)
    page = search_report(tmp_path).read_text()
    assert "<script src=" not in page  # nothing fetched: plotly's JavaScript is inline
    assert "abc_00004 (selected)" in page and "abc_00000 (default)" in page
    assert page.count("Plotly.newPlot") == 4  # table, parallel coordinates, curves, scatters
    assert "rho 1.00" in page and "rho -1.00" in page  # im rises with accuracy, snd falls


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("SHIFTRAY_REQUIRE_BROWSER") == "1":
        pytest.fail("SHIFTRAY_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
    return found


@pytest.mark.timeout(180)
def test_report_renders_in_headless_chromium(tmp_path):
    from shiftray.report.search_report import search_report

    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH")
    fake_search(tmp_path)
    img = _screenshot(browser, search_report(tmp_path), tmp_path)
    ink = (img < 240).any(axis=2).mean()  # not a blank page: text, tables and plots drawn
    colours = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    assert ink > 0.03 and colours > 50, (ink, colours)


def _screenshot(browser, page, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
         "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--window-size=1280,2000",
         "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert shot.is_file(), run.stderr[-3000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not [c for c in console if re.search(r"Uncaught|\w*Error\b|Failed to load", c)], console
    return np.asarray(Image.open(shot).convert("RGB"))


def test_proxy_a_distance():
    from shiftray.report.run_report import proxy_a_distance

    rng = np.random.default_rng(0)
    same = proxy_a_distance(rng.normal(size=(400, 4)), rng.normal(size=(400, 4)))
    apart = proxy_a_distance(rng.normal(size=(400, 4)), rng.normal(size=(400, 4)) + 5)
    assert abs(same) < 0.3 and apart > 1.9  # 0: indistinguishable; 2: always told apart


@pytest.mark.timeout(300)
def test_run_report(tmp_path):
    from conftest import synthetic_spec
    from shiftray.config.load import spec_from_dict
    from shiftray.report.run_report import run_report
    from shiftray.train.launch import fit_local

    spec = spec_from_dict(synthetic_spec(name="r", tracking={"wandb": "disabled", "output_dir": str(tmp_path)}))
    fit_local(spec)
    page = run_report(tmp_path / "r")
    text = page.read_text()
    assert "<script src=" not in text and text.count("Plotly.newPlot") == 3
    pads = [float(x) for x in re.findall(r"\(step \d+\) (-?\d+\.\d+)", text)]
    assert len(pads) == 2 and all(-2 <= p <= 2 for p in pads)  # earliest checkpoint and final
    assert "earliest checkpoint (step 20)" in text and "final model (step 40)" in text
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH")
    img = _screenshot(browser, page, tmp_path)
    assert (img < 240).any(axis=2).mean() > 0.03
