"""Numbers as shown (issue 19): counts and shares rounded one way in every table, multipliers
as their files hold them (the multiplier an amount gives: tests/data/test_preservation.py)."""

from fractions import Fraction

from edlib.data.balance import format_plan, plan_balance
from edlib.data.numbers import format_count, format_share
from edlib.data.preview import format_preview, preview
from edlib.data.scan import scan
from tests.data.make_images import make_tree


def test_counts_and_shares_are_rounded_one_way():
    assert [format_count(x) for x in (30, Fraction(400, 7), Fraction(399999, 7000), 1.5, Fraction(7, 3), 0.42, 0.0042)] == [
        "30", "57.1", "57.1", "1.5", "2.33", "0.42", "0.0042",
    ]  # fmt: skip
    assert format_count(99.99) == "100" and format_count(12.04) == "12"  # a rounded display, not an exact value
    assert format_share(Fraction(6, 7)) == "85.7%" and format_share(0.2) == "20.0%"


def test_tables_show_multipliers_as_written_and_counts_alike(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {"preservation": 10, "concept": 7}, size=(64, 64))
    (root / "concept" / "multiply.txt").write_text("5.714286\n")
    result = scan(root)
    table = format_plan(plan_balance(result, {"preservation": 1, "concept": 1}))
    row = next(line for line in table.splitlines() if line.startswith("concept"))
    assert "5.714286" in row and "5.71429" not in row.replace("5.714286", "")  # current as the file holds it
    assert "50.0%" in row
    text = format_preview(preview(result, batch_size=2, resolution=64))
    concept = next(line for line in text.splitlines() if line.startswith("concept")).split()
    assert concept[-2:] == ["40", "80.0%"]  # 7 x 5.714286 = 40.000002 samples, shown as 40
