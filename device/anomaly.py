# The anomaly head on the board: the LSTM's head predicts the next input; the
# weighted distance to what arrives, averaged, is the score (docs/arithmetic.md,
# "Anomaly score"; host twin: edge_agent/reference/anomaly.py). One state, reset
# every `window` steps; the score and the event logic per sample, no allocation.
import array

import micropython

from cell import State

NONE = 0
ONSET = 1
END = 2


@micropython.viper
def step_error(pred: ptr16, x: ptr8, w: ptr32, n: int) -> int:
    """sum_c min(|pred_c - x_c << 12| >> 8, 2047) * w_c >> 6, at most 2**19 - 1;
    x is stored +128 (kernels.py). pred (int32) is read as two 16-bit halves: the
    unix port zero-extends a ptr32 load, the boards do not (kernels.py)."""
    total = 0
    c = 0
    while c < n:
        p = ((pred[2 * c + 1] ^ 0x8000) - 0x8000) << 16 | pred[2 * c]
        d = p - ((int(x[c]) - 128) << 12)
        if d < 0:
            d = 0 - d
        d = d >> 8
        if d > 2047:
            d = 2047
        total += d * w[c]
        c += 1
    total = total >> 6
    return total if total < 524287 else 524287


@micropython.viper
def smooth(st: ptr32, e: int, shift: int) -> int:
    """s = s - (s >> shift) + e; the score is s >> shift (s < 2**29)."""
    s = st[0]
    s = s - (s >> shift) + e
    st[0] = s
    return s >> shift


class Anomaly:
    """Steps the cell's State on each sample in cell.x and scores it."""

    def __init__(self, cell, model):
        if getattr(model, "task", "classify") != "anomaly":
            raise ValueError("this is a classifier model blob; an anomaly model blob is expected here")
        self.cell = cell
        threshold, shift, window, warmup = model.anomaly_params
        self.threshold = threshold
        self.release = threshold - (threshold >> 2)
        self.shift = shift
        self.window = window
        self.warmup = warmup
        self.weights = array.array("i", model.anomaly_weights)
        self.n = model.n_inputs
        self.state = State(model)
        self.acc = array.array("i", [0])  # the moving average, << shift
        self.pos = 0  # steps into the current window
        self.have = False  # a prediction from >= warmup steps waits for this sample
        self.score = 0
        self.active = False
        self.peak = 0

    def reset(self):
        self.state.reset()
        self.acc[0] = 0
        self.pos = 0
        self.have = False
        self.score = 0
        self.active = False

    def push(self):
        """Score the sample in cell.x against the last prediction, then step and
        predict the next. Returns ONSET, END or NONE."""
        c = self.cell
        event = NONE
        if self.have:
            e = step_error(c.logits, c.x, self.weights, self.n)  # pyright: ignore[reportArgumentType]
            s = smooth(self.acc, e, self.shift)  # pyright: ignore[reportArgumentType]
            self.score = s
            if not self.active:
                if s >= self.threshold:
                    self.active = True
                    self.peak = s
                    event = ONSET
            elif s < self.release:
                self.active = False
                event = END
            elif s > self.peak:
                self.peak = s
        if self.pos == 0:
            self.state.reset()
        c.step(self.state)
        c.head(self.state)  # the prediction for the next sample, in c.logits
        self.pos += 1
        self.have = self.pos >= self.warmup
        if self.pos == self.window:
            self.pos = 0
        return event


def ratio(score, threshold):
    """score / threshold in 1/10000, rounded half up (link.dumps writes it 0.nnnn)."""
    t = threshold if threshold > 0 else 1
    return (score * 10000 + t // 2) // t
