"""Fixed-point helpers shared by the quantizer and the integer reference.

The host's rescaling (rounding shift, requantization checked against int32) and
the choice of multiplier and shift are defined once here, as docs/arithmetic.md
specifies them; the compiled time loop (reference/_recurrence.c) implements the
same requantization and is held equal to it by tests.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
MAX_SHIFT = 30  # keeps 1 << shift a small int on every MicroPython port


class OverflowProofError(ValueError):
    """A value could leave int32 on a 32-bit board."""


def rshift_round(value, shift: int):
    """Rounding arithmetic right shift: floor(value / 2**shift + 1/2).

    Works on Python ints and numpy int64 arrays alike; shift >= 1.
    """
    return (value + (1 << (shift - 1))) >> shift


def check_int32(values, what: str) -> None:
    """Refuse values a 32-bit board register could not hold."""
    values = np.asarray(values)
    if values.size and (values.max() > INT32_MAX or values.min() < -INT32_MAX):
        raise OverflowProofError(f"{what}: a value left the int32 range")


def requantize(acc, multiplier, shift, what: str | None = None):
    """acc * multiplier / 2**shift, rounded half up (the board's only rescale).

    With `what`, the product plus rounding half is checked against int32 first,
    as the board computes it in one 32-bit register; OverflowProofError names it."""
    prod = acc * multiplier + (1 << (shift - 1))
    if what is not None:
        check_int32(prod, what)
    return prod >> shift


def choose_multiplier(real: float, acc_bound: int, what: str = "value") -> tuple[int, int]:
    """Pick (M, S) with M / 2**S ~= real and |acc * M| + 2**(S-1) <= INT32_MAX.

    acc_bound is the largest |acc| the multiplier will ever see; it comes from the
    actual weights, so the product is proven to fit a 32-bit register. The widest
    shift that still fits is chosen, which gives the most precise multiplier.
    Raises OverflowProofError when even the narrowest shift overflows.
    """
    if not (real > 0 and math.isfinite(real)):
        raise OverflowProofError(f"{what}: scale {real!r} is not a positive finite number")
    acc_bound = int(acc_bound)
    if acc_bound > INT32_MAX:
        raise OverflowProofError(
            f"{what}: accumulator can reach {acc_bound} > 2^31-1 before rescaling"
        )
    for shift in range(MAX_SHIFT, 0, -1):
        mult = round(real * (1 << shift))
        if mult > INT32_MAX:
            continue
        if mult == 0:
            break  # smaller shifts only lose more
        if acc_bound * mult + (1 << (shift - 1)) <= INT32_MAX:
            return mult, shift
    raise OverflowProofError(
        f"{what}: |acc| <= {acc_bound} times scale {real:.3g} cannot be rescaled "
        f"within int32 (needs a multiplier of at least 1 and |acc*M| < 2^31)"
    )


# ---- the 16-bit state's accumulators (docs/arithmetic.md, "16-bit hidden state") ----

MAX_PRE_SHIFT = 24  # the quantizer's search; the blob allows 0..30


def pre_shift(acc, shift, what: str | None = None):
    """rshift_round(acc, shift), or acc itself where shift is 0: the pre-shift a
    16-bit state's accumulator takes before requantize(). Ints or numpy arrays
    (a shift per row). With `what`, acc plus the rounding half is checked
    against int32 first, as the board adds it in one 32-bit register."""
    half = (np.int64(1) << shift) >> 1 if isinstance(shift, np.ndarray) else (1 << shift) >> 1
    value = acc + half
    if what is not None:
        check_int32(value, what)
    return value >> shift


def prescaled_bound(acc_bound: int, shift: int) -> int:
    """The largest |pre_shift(acc, shift)| over |acc| <= acc_bound."""
    return (acc_bound + ((1 << shift) >> 1)) >> shift


def choose_prescaled_multiplier(real: float, acc_bound: int, what: str = "value",
                                out_limit: float | None = None) -> tuple[int, int, int]:
    """Pick (P, M, S): requantize(pre_shift(acc, P), M, S) ~= acc * real, int32-safe.

    An accumulator of 16-bit inputs is ~256 times one of int8 inputs, so a
    multiplier proven against its bound alone keeps only a few bits. For every
    pre-shift P, choose_multiplier() gives the most precise (M, S) for the
    shifted bound; the P kept has the least worst-case error in output units:
    the pre-shift's rounding (2^(P-1) * real) plus the multiplier's error over
    the accumulators that matter (|acc * real| up to out_limit, where the
    result saturates, else up to the bound). Ties keep the smaller P."""
    if not (real > 0 and math.isfinite(real)):
        raise OverflowProofError(f"{what}: scale {real!r} is not a positive finite number")
    best = None
    for p in range(MAX_PRE_SHIFT + 1):
        half = (1 << p) >> 1
        if int(acc_bound) + half > INT32_MAX:
            break
        bound = prescaled_bound(int(acc_bound), p)
        try:
            m, s = choose_multiplier(real * 2**p, bound, what)
        except OverflowProofError:
            continue
        reach = bound if out_limit is None else min(bound, out_limit / (real * 2**p))
        err = half * real + abs(m / 2**s - real * 2**p) * reach
        if best is None or err < best[0]:
            best = (err, p, m, s)
    if best is None:
        raise OverflowProofError(f"{what}: |acc| <= {acc_bound} times scale {real:.3g} cannot be "
                                 f"rescaled within int32 with any pre-shift")
    return best[1:]


RAW_BOUND = 32768  # raw readings are int16


def choose_input_multiplier(real: float, zero: int, what: str = "input") -> tuple[int, int, int]:
    """(M, B, S) with clamp((raw*M + B) >> S) ~= round(raw*real) + zero for int16 raw.

    B folds in the zero point and the rounding half, so the board does one
    multiply-add and one shift per reading, and |raw*M + B| stays below 2**31.
    """
    if not (real > 0 and math.isfinite(real)):
        raise OverflowProofError(f"{what}: scale {real!r} is not a positive finite number")
    for shift in range(MAX_SHIFT, 0, -1):
        mult = round(real * (1 << shift))
        bias = (zero << shift) + (1 << (shift - 1))
        if mult == 0:
            break
        if RAW_BOUND * mult + abs(bias) <= INT32_MAX:
            return mult, bias, shift
    raise OverflowProofError(f"{what}: raw-to-input scale {real:.3g} cannot be applied within int32")
