# Window semantics over a stream of samples, and the decision at a window's end;
# host twin: edge_agent/reference/stream.py (stream_decisions, decide). Three cases:
# - hop == window: one state, reset at every window start;
# - hop < window: overlapping windows, each from a zero state. Window w starts
#   at sample w*hop and runs in state w % n, n = ceil(window / hop): by the time
#   window w + n starts, window w has ended, so n states suffice;
# - continuous: one state that is never reset; a decision every hop samples
#   once the first `window` samples have passed.
# Counters stay below n*hop, so nothing grows (no long ints) on a board that runs for years.
from cell import State


class Stream:
    def __init__(self, cell, window, hop, continuous=False):
        if window < 1 or hop < 1 or hop > window:
            raise ValueError("need 1 <= hop <= window")
        self.cell = cell
        self.window = window
        self.hop = hop
        self.continuous = continuous
        n = 1 if continuous else (window + hop - 1) // hop
        self.states = [State(cell.model) for _ in range(n)]
        self.period = n * hop
        self.pos = 0  # sample index modulo period
        self.warm = False  # the first window has been filled
        self.filled = 0

    def reset(self):
        for s in self.states:
            s.reset()
        self.pos = 0
        self.warm = False
        self.filled = 0

    def push(self):
        """Step on the sample in cell.x; return the state to decide on, or None."""
        pos = self.pos
        states = self.states
        if not self.continuous and pos % self.hop == 0:
            states[pos // self.hop].reset()
        for s in states:
            self.cell.step(s)
        if not self.warm:
            self.filled += 1
            self.warm = self.filled >= self.window
        ready = None
        if self.warm:
            start = (pos - self.window + 1) % self.period  # of the window ending here
            if start % self.hop == 0:
                ready = states[0] if self.continuous else states[start // self.hop]
        self.pos = pos + 1 if pos + 1 < self.period else 0
        return ready


def decide(model, logits):
    """(class, score) once per window: the softmax probability of the top class in
    Q0.15, from the exp table (docs/arithmetic.md, "Head and decision")."""
    k_top = 0
    for k in range(1, model.n_classes):
        if logits[k] > logits[k_top]:
            k_top = k
    top = logits[k_top]
    ls = model.lut_shift
    table = model.exp_table
    total = 32768
    for k in range(model.n_classes):
        if k == k_top:
            continue
        d = top - logits[k]
        if model.out_frac > 12:
            t = (d + (1 << (model.out_frac - 13))) >> (model.out_frac - 12)
        else:
            t = d << (12 - model.out_frac)
        u = 32768 - (t if t < 32768 else 32768)
        i = u >> ls
        lo = table[i]
        total += lo + (((table[i + 1] - lo) * (u & ((1 << ls) - 1)) + (1 << (ls - 1))) >> ls)
    score = ((1 << 30) + total // 2) // total
    return k_top, score if score < 32767 else 32767


class Smoother:
    """Posterior smoothing and a refractory period over the per-window decisions,
    so one spoken keyword gives one detection (host twin: reference/stream.py
    smooth_detections). The smoothed score of the current class is the sum of the
    scores the last `n` decisions gave that class, // n; a detection needs it at or
    above the class threshold and no detection in the last `refractory` decisions.
    n = 1 and refractory = 0: every decision stands alone (windowed use)."""

    def __init__(self, n, refractory, thresholds):
        self.n = n
        self.refractory = refractory
        self.thresholds = thresholds
        self.classes = [0] * n  # the last n decisions, a ring (-1: none yet)
        self.scores = [0] * n
        self.reset()

    def reset(self):
        for i in range(self.n):
            self.classes[i] = -1
            self.scores[i] = 0
        self.at = 0
        self.quiet = 0  # decisions left in the refractory period

    def push(self, k, score):
        """The smoothed score to publish for class k, or -1 for no detection."""
        self.classes[self.at] = k
        self.scores[self.at] = score
        self.at = self.at + 1 if self.at + 1 < self.n else 0
        total = 0
        for i in range(self.n):
            if self.classes[i] == k:
                total += self.scores[i]
        total //= self.n
        if self.quiet > 0:
            self.quiet -= 1
            return -1
        if total < self.thresholds[k]:
            return -1
        self.quiet = self.refractory
        return total
