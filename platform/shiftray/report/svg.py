"""A self-contained SVG bar chart (no plotting library needed): mean with ±std error bars."""

from __future__ import annotations

from html import escape


def bar_chart(
    labels: list[str], means: list[float], stds: list[float], title: str, ylabel: str
) -> str:
    w, h, left, bottom, top = 120 + 90 * len(labels), 360, 60, 70, 40
    plot_h = h - bottom - top
    hi = max((m + s for m, s in zip(means, stds, strict=True)), default=1.0)
    lo = min(0.0, min(means, default=0.0))
    ymax = 100.0 if hi <= 100 and lo >= 0 else hi * 1.1

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (ymax - lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{w - 20}" y2="{top + plot_h}" stroke="black"/>',
        f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" text-anchor="middle">{escape(ylabel)}</text>',
    ]
    for tick in range(0, 11):
        v = lo + (ymax - lo) * tick / 10
        out.append(
            f'<line x1="{left - 4}" y1="{y(v):.1f}" x2="{left}" y2="{y(v):.1f}" stroke="black"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    for i, (lab, m, s) in enumerate(zip(labels, means, stds, strict=True)):
        x = left + 30 + 90 * i
        out.append(
            f'<rect x="{x}" y="{y(m):.1f}" width="50" height="{y(lo) - y(m):.1f}" fill="#4c78a8"/>'
        )
        out.append(
            f'<line x1="{x + 25}" y1="{y(m + s):.1f}" x2="{x + 25}" y2="{y(m - s):.1f}" stroke="black"/>'
        )
        out.append(f'<text x="{x + 25}" y="{y(m + s) - 5:.1f}" text-anchor="middle">{m:.1f}</text>')
        out.append(
            f'<text x="{x + 25}" y="{top + plot_h + 16}" text-anchor="end" '
            f'transform="rotate(-30 {x + 25} {top + plot_h + 16})">{escape(lab)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
