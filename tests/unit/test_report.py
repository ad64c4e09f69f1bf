"""The comparison's outputs without Ray: the matplotlib chart carries its bars' labels as text."""

import re

from conftest import synthetic_spec
from shiftray.compare import summarize, write_outputs
from shiftray.config.load import spec_from_dict
from shiftray.report.plots import bar_chart


def _svg_texts(svg: str) -> list[str]:
    return [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def test_bar_chart_writes_labels_means_and_title_as_svg_text(tmp_path):
    path = bar_chart(
        tmp_path / "c.svg", ["scratch", "dann"], [50.32, 74.87], [4.96, 1.05], "a -> b", "acc (%)"
    )
    svg = path.read_text()
    assert "<svg" in svg and '<g id="bar-scratch">' in svg and '<g id="bar-dann">' in svg
    texts = _svg_texts(svg)
    for want in ("scratch", "dann", "50.3", "74.9", "a -&gt; b", "acc (%)"):
        assert want in texts, (want, texts)
    assert "Date" not in svg  # reruns write the same file
    png = bar_chart(tmp_path / "c.png", ["x"], [1.0], [0.0], "t", "y")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_outputs_table_and_plot(tmp_path):
    spec = spec_from_dict(synthetic_spec(name="cmp"))
    rows = [
        {"strategy": s, "seed": seed, "run": f"cmp-{s}-s{seed}", "target_acc": acc, "seconds": 2.0}
        for s, seed, acc in [("scratch", 0, 60.0), ("scratch", 1, 64.0), ("dann", 0, 80.0)]
    ]
    table = summarize(rows, ["scratch", "dann"])
    write_outputs(tmp_path, spec, rows, table, 6.0)
    assert "| scratch | 62.00 ± 2.83 | 2 | 2 |" in (tmp_path / "compare.md").read_text()
    texts = _svg_texts((tmp_path / "compare.svg").read_text())
    assert {"scratch", "dann", "62.0", "80.0"} <= set(texts)
