"""One self-contained HTML page of plotly figures: plotly's JavaScript inlined once (the page
opens with no network), written atomically."""

from __future__ import annotations

import html
from pathlib import Path

STYLE = "body{font-family:sans-serif;margin:2em;background:#fff} .prov{color:#666;font-size:90%}"


def write_page(path: Path, title: str, intro_html: str, figs: list) -> Path:
    """``<h1>title</h1>``, the (already escaped) intro, then the figures in order."""
    import plotly.io as pio

    parts = [pio.to_html(f, full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
             for i, f in enumerate(figs)]  # fmt: skip
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{intro_html}"
        + "".join(parts) + "</body></html>"
    )  # fmt: skip
    path = Path(path)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path
