"""Charts drawn as inline SVG by the renderer: no JavaScript chart library, works offline."""

from __future__ import annotations

from collections.abc import Callable

from markupsafe import Markup, escape

_ROW = 26
_LABEL_WIDTH = 260
_BAR_WIDTH = 320
_VALUE_WIDTH = 90


def bar_chart(items: list[tuple[str, int]], fmt: Callable[[int], str], title: str) -> Markup:
    """A horizontal bar chart, one row per (label, value); labels and values are escaped."""
    width = _LABEL_WIDTH + _BAR_WIDTH + _VALUE_WIDTH
    height = max(len(items), 1) * _ROW + 8
    top = max((value for _, value in items), default=0) or 1
    rows = []
    for row, (label, value) in enumerate(items):
        y = 4 + row * _ROW
        bar = max(int(_BAR_WIDTH * value / top), 1 if value else 0)
        shown = label if len(label) <= 38 else label[:17] + "…" + label[-20:]
        rows.append(
            f"<g><title>{escape(label)}: {escape(fmt(value))}</title>"
            f'<text x="{_LABEL_WIDTH - 8}" y="{y + 17}" text-anchor="end">{escape(shown)}</text>'
            f'<rect x="{_LABEL_WIDTH}" y="{y + 4}" width="{bar}" height="{_ROW - 8}" rx="3"/>'
            f'<text x="{_LABEL_WIDTH + bar + 6}" y="{y + 17}">{escape(fmt(value))}</text></g>'
        )
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(rows)
        + "</svg>"
    )
