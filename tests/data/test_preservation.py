"""The multiplier preservation mixing proposes: exactly what the user asked for, in the
shortest form, and never a value the user did not type (issue 19: 0.999999 for 1)."""

from fractions import Fraction

import pytest

from edlib.data.preservation import amount_as_shown, expected_mix, preservation_multiplier

from .fake_scan import FakeFolder, fake_scan


@pytest.fixture
def data():
    # 3 x 7 + 40 x 0.5 = 41 samples of other folders; 200 preservation images at 1 -> share 200/241
    return fake_scan(FakeFolder("gt", 200), FakeFolder("a", 7, 3), FakeFolder("b", 40, Fraction(1, 2)))


@pytest.mark.parametrize("mode", ["share", "per_epoch", "fraction"])
@pytest.mark.parametrize("current", ["1", "0.05", "0.1", "2.5", "0.333333", "0.0001"])
def test_an_amount_shown_rounded_from_the_current_multiplier_gives_it_back(data, mode, current):
    """A panel shows the current multiplier as an amount rounded to 6 significant digits
    (`amount_as_shown`; 0.0001 keeps a share of 4.1e-7 nonzero); taking that amount back must
    propose the multiplier that is there, not 0.999999 or 1.000001."""
    mix = expected_mix(data, "gt", current)
    amount = {"share": mix.share, "per_epoch": float(mix.per_epoch), "fraction": float(mix.multiply)}[mode]
    assert preservation_multiplier(data, "gt", **{mode: amount_as_shown(amount)}) == current
    assert preservation_multiplier(data, "gt", **{mode: amount}) == current  # and the unrounded float


def test_typed_amounts_give_the_shortest_multiplier_that_meets_them(data):
    assert preservation_multiplier(data, "gt", share=0.5) == "0.205"  # 41 / 200 exactly
    assert preservation_multiplier(data, "gt", per_epoch=50) == "0.25"
    assert preservation_multiplier(data, "gt", fraction=0.1234567) == "0.1234567"  # every digit typed is kept
    text = preservation_multiplier(data, "gt", share=0.1)  # 41/9/200 = 0.02277...: no short form
    assert text == "0.0227778" and abs(expected_mix(data, "gt", text).share - 0.1) < 5e-7
    assert preservation_multiplier(data, "gt", per_epoch=1e-7) == "0.0000000005"  # never rounded to 0
