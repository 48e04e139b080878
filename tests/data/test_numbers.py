"""Numbers as shown (issue 19): counts and shares rounded one way in every table, multipliers
as their files hold them, and a preservation amount that shows a multiplier of 1 gives back 1."""

from fractions import Fraction

import pytest

from edlib.data.balance import format_plan, plan_balance
from edlib.data.numbers import format_count, format_share, shortest_decimal_between
from edlib.data.preservation import AMOUNT_DECIMALS, expected_mix, preservation_multiplier
from edlib.data.preview import format_preview, preview
from edlib.data.scan import scan
from tests.data.make_images import write_image


def test_counts_and_shares_are_rounded_one_way():
    assert [format_count(x) for x in (30, Fraction(400, 7), Fraction(399999, 7000), 1.5, Fraction(7, 3), 0.42, 0.0042)] == [
        "30", "57.1", "57.1", "1.5", "2.33", "0.42", "0.0042",
    ]  # fmt: skip
    assert format_count(99.99) == "100" and format_count(12.04) == "12"  # a rounded display, not an exact value
    assert format_share(Fraction(6, 7)) == "85.7%" and format_share(0.2) == "20.0%"


def test_the_shortest_decimal_in_an_interval():
    assert shortest_decimal_between(Fraction("0.9999995"), Fraction("1.0000004"), max_places=5) == 1
    assert shortest_decimal_between(Fraction("0.12"), Fraction("0.1299"), max_places=5) == Fraction("0.12")
    assert shortest_decimal_between(Fraction("0.1416655"), Fraction("0.1416669"), max_places=6) == Fraction("0.141666")
    assert shortest_decimal_between(Fraction("0.1416661"), Fraction("0.1416669"), max_places=6) is None


def _root(tmp_path, preservation: int, others: int):
    root = tmp_path / "data"
    for i in range(preservation):
        write_image(root / "preservation" / f"p_{i}.png", size=(64, 64))
    for i in range(others):
        write_image(root / "concept" / f"c_{i}.png", size=(64, 64))
    return root


def test_an_amount_shown_for_a_multiplier_gives_it_back(tmp_path):
    result = scan(_root(tmp_path, 30, 7))  # multiplier 1: share 30/37 = 0.8108108...
    shown = round(expected_mix(result, "preservation", "1").share, AMOUNT_DECIMALS)
    assert shown == 0.810811
    assert preservation_multiplier(result, "preservation", share=shown) == "1"  # was 1.000001
    assert preservation_multiplier(result, "preservation", per_epoch=30) == "1"
    # A value with no short form keeps 6 decimals; a typed share means that share.
    assert preservation_multiplier(result, "preservation", per_epoch=29) == "0.966667"
    text = preservation_multiplier(result, "preservation", share=0.5)
    assert text == "0.233333" and expected_mix(result, "preservation", text).share == pytest.approx(0.5, abs=1e-6)


def test_tables_show_multipliers_as_written_and_counts_alike(tmp_path):
    root = _root(tmp_path, 10, 7)
    (root / "concept" / "multiply.txt").write_text("5.714286\n")
    result = scan(root)
    table = format_plan(plan_balance(result, {"preservation": 1, "concept": 1}))
    row = next(line for line in table.splitlines() if line.startswith("concept"))
    assert "5.714286" in row and "5.71429" not in row.replace("5.714286", "")  # current as the file holds it
    assert "50.0%" in row
    text = format_preview(preview(result, batch_size=2, resolution=64))
    concept = next(line for line in text.splitlines() if line.startswith("concept")).split()
    assert concept[-2:] == ["40", "80.0%"]  # 7 x 5.714286 = 40.000002 samples, shown as 40
