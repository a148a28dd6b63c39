"""Fixed-point helpers against exact rational arithmetic."""
from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edge_agent.quant import lut
from edge_agent.quant.fixedpoint import (INT32_MAX, OverflowProofError, choose_input_multiplier,
                                         choose_multiplier, requantize, rshift_round)

int32s = st.integers(-(2**31) + 2**20, 2**31 - 2**20)


def exact_round(q: Fraction) -> int:
    """floor(q + 1/2): round half up, the rule the board uses."""
    return math.floor(q + Fraction(1, 2))


@given(int32s, st.integers(1, 30))
def test_rshift_round_is_round_half_up(v, s):
    assert rshift_round(v, s) == exact_round(Fraction(v, 2**s))
    assert int(rshift_round(np.int64(v), s)) == exact_round(Fraction(v, 2**s))


@given(st.floats(1e-6, 1e3), st.integers(1, 2**24))
def test_choose_multiplier_fits_and_is_precise(real, bound):
    try:
        m, s = choose_multiplier(real, bound)
    except OverflowProofError:
        # refused only when no shift at all gives a usable multiplier that fits
        for s in range(1, 31):
            m = round(real * 2**s)
            assert m == 0 or bound * m + (1 << (s - 1)) > INT32_MAX
        return
    assert 1 <= s <= 30 and m >= 1
    assert bound * m + (1 << (s - 1)) <= INT32_MAX  # the proof
    # every acc within the bound rescales to the exact rational value, rounded,
    # up to the multiplier's own rounding error
    eff = Fraction(m, 2**s)
    for acc in (bound, -bound, bound // 3, 0):
        got = requantize(acc, m, s)
        assert got == exact_round(acc * eff)
        assert abs(got - acc * Fraction(real)) <= Fraction(1, 2) + abs(acc) * abs(eff - Fraction(real)) + Fraction(1, 2)
    # the multiplier is as wide as the bound allows: one more shift bit would overflow
    if s < 30:
        m2 = round(real * 2 ** (s + 1))
        assert bound * m2 + (1 << s) > INT32_MAX


def test_choose_multiplier_refuses_overflowing_bound():
    with pytest.raises(OverflowProofError, match="2\\^31"):
        choose_multiplier(0.5, 2**31)
    with pytest.raises(OverflowProofError, match="cannot be rescaled"):
        choose_multiplier(4.0, 2**29)  # acc * 4 alone passes 2^31


@given(st.floats(1e-4, 0.05), st.integers(-2000, 2000), st.integers(-32768, 32767))
def test_input_multiplier_matches_exact(real, zero, raw):
    m, b, s = choose_input_multiplier(real, zero)
    assert 32768 * m + abs(b) <= INT32_MAX
    got = (raw * m + b) >> s
    assert got == exact_round(raw * Fraction(m, 2**s)) + zero


@settings(max_examples=300)
@given(st.integers(-32768, 32767))
def test_lut_interpolation_exact(q):
    table = lut.sigmoid_table()
    u = q + 32768
    idx, frac = u >> lut.LUT_SHIFT, u & ((1 << lut.LUT_SHIFT) - 1)
    lo, hi = int(table[idx]), int(table[idx + 1])
    want = lo + exact_round(Fraction((hi - lo) * frac, 2**lut.LUT_SHIFT))
    assert int(lut.lookup(table, q)) == want


def test_tables_follow_their_functions():
    q = np.arange(-32768, 32768)
    v = q / 4096.0
    for table, fn, tol in ((lut.sigmoid_table(), lambda v: 1 / (1 + np.exp(-v)), 2e-4),
                           (lut.tanh_table(), np.tanh, 6e-4),
                           (lut.exp_table(), lambda v: np.exp(np.minimum(v, 0)), 3e-4)):
        got = lut.lookup(table, q) / 32768.0
        assert np.max(np.abs(got - fn(v))) < tol
        assert np.all(np.diff(got) >= 0)  # monotone: argmax and thresholds behave
        assert np.abs(table).max() <= 32767
