"""Server-side SVG charts for the experiment dashboard: no script, no CDN, nothing a strict CSP or
an offline admin would block. One chart shape: a rate per category with its 95% interval (a
hollow dot when fewer than FEW_VISITORS stand behind it)."""

from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 600, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 36, 58


@dataclass(frozen=True)
class ChartPoint:
    label: str
    value: float | None  # a proportion in [0, 1]; None: no visitors
    low: float | None
    high: float | None
    visitors: int


# Round axis tops and the number of gridline steps that keeps every tick a round number.
AXES = ((0.01, 5), (0.02, 4), (0.05, 5), (0.1, 5), (0.2, 4), (0.5, 5), (1.0, 4))
# Below this many visitors a point is drawn hollow: its interval is too wide to read much into.
FEW_VISITORS = 30


def _axis(value: float) -> tuple[float, int]:
    for top, steps in AXES:
        if value <= top:
            return top, steps
    return AXES[-1]


def _pct(value: float, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f}%"


def interval_chart(
    points: list[ChartPoint], *, title: str, x_title: str = "", chart_id: str = "c"
) -> SafeString:
    """Dots at each category's conversion rate, whiskers over its 95% interval, `n` underneath.
    `chart_id` makes the accessible title's ids unique on a page with several charts."""
    highs = [p.high for p in points if p.high is not None]
    top, steps = _axis(max(highs, default=0.01) * 1.05)
    tick_digits = 1 if top <= 0.05 else 0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(value: float) -> float:
        return TOP + plot_h * (1 - min(value, top) / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" class="candor-chart" '
        'style="max-width:100%;height:auto" font-family="system-ui, sans-serif" font-size="12">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">'
        + escape(
            "; ".join(
                f"{p.label}: {_pct(p.value)} (95% {_pct(p.low)}–{_pct(p.high)}, n={p.visitors})"
                if p.value is not None and p.low is not None and p.high is not None
                else f"{p.label}: no visitors"
                for p in points
            )
        )
        + "</desc>",
        f'<text x="{LEFT}" y="18" font-weight="600">{escape(title)}</text>',
    ]
    for step in range(steps + 1):
        value = top * step / steps
        yy = y(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e3e6ea"/>'
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#4f5a66">'
            f"{_pct(value, tick_digits)}</text>"
        )
    slot = plot_w / max(1, len(points))
    for index, point in enumerate(points):
        x = LEFT + slot * (index + 0.5)
        if point.value is not None and point.low is not None and point.high is not None:
            y_low, y_high, y_value = y(point.low), y(point.high), y(point.value)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_low:.1f}" y2="{y_high:.1f}" stroke="#2f5d50" '
                'stroke-width="2"/>'
                f'<path d="M{x - 6:.1f} {y_low:.1f}h12M{x - 6:.1f} {y_high:.1f}h12" stroke="#2f5d50"/>'
                f'<circle cx="{x:.1f}" cy="{y_value:.1f}" r="4.5" stroke="#2f5d50" stroke-width="1.5" '
                f'fill="{"#fff" if point.visitors < FEW_VISITORS else "#2f5d50"}"/>'
                f'<text x="{x + 9:.1f}" y="{y_value - 6:.1f}" fill="#1d232b">{_pct(point.value)}</text>'
            )
        label = point.label if len(point.label) <= 22 else point.label[:21] + "…"
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{escape(label)}</text>'
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 34}" text-anchor="middle" fill="#4f5a66">'
            f"n={point.visitors:,}</text>"
        )
    if x_title:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" fill="#4f5a66">'
            f"{escape(x_title)}</text>"
        )
    parts.append(
        f'<path d="M{LEFT} {TOP}V{TOP + plot_h}H{WIDTH - RIGHT}" fill="none" stroke="#8a949e"/></svg>'
    )
    # Every text above went through escape(); the rest is markup built here from numbers.
    return mark_safe("".join(parts))  # noqa: S308  # nosec B308 B703
