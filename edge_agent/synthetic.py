"""Synthetic wrist-IMU activity data: the bundled demo and the test fixtures.

Six channels at 50 Hz, like an MPU6050 on a wrist: accelerometer x, y, z in g
and gyroscope x, y, z in deg/s. Four activities:

* still: gravity through a random tilt, sensor noise and bias;
* walk: 1.4-2.4 Hz steps, 0.15-0.5 g bounce with harmonics, arm swing;
* run: 2.2-3.3 Hz, 0.5-1.3 g, faster and larger swing;
* shake: a short 5-8 Hz burst (a gesture) at a random moment inside a still or
  walking background, so the class depends on when, not only on how much.

Walk and run overlap in cadence and amplitude on purpose: the task is not trivial.
"""
from __future__ import annotations

import numpy as np

RATE_HZ = 50
CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")
CLASSES = ("still", "walk", "run", "shake")


def _rotation(rng: np.random.Generator, max_tilt: float) -> np.ndarray:
    angles = rng.uniform(-max_tilt, max_tilt, size=3)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _gait(rng, t, freq, amp, swing):
    phase = rng.uniform(0, 2 * np.pi)
    w = 2 * np.pi * freq * t + phase
    acc = np.stack([
        0.35 * amp * np.sin(w / 2 + rng.uniform(0, 1)),
        0.25 * amp * np.sin(w + 1.3),
        amp * (np.sin(w) + 0.3 * np.sin(2 * w + 0.7) + 0.1 * np.sin(3 * w)),
    ], axis=1)
    gyro = np.stack([
        swing * np.sin(w / 2),
        0.4 * swing * np.sin(w / 2 + 0.8),
        0.2 * swing * np.sin(w + 0.3),
    ], axis=1)
    return acc, gyro


def _segment(rng: np.random.Generator, label: int, steps: int) -> np.ndarray:
    t = np.arange(steps) / RATE_HZ
    acc = np.zeros((steps, 3))
    gyro = np.zeros((steps, 3))
    if label == 1:
        acc, gyro = _gait(rng, t, rng.uniform(1.4, 2.4), rng.uniform(0.15, 0.5), rng.uniform(20, 70))
    elif label == 2:
        acc, gyro = _gait(rng, t, rng.uniform(2.2, 3.3), rng.uniform(0.5, 1.3), rng.uniform(60, 200))
    elif label == 3:
        if rng.random() < 0.5:  # a gesture while walking slowly
            acc, gyro = _gait(rng, t, rng.uniform(1.4, 2.0), rng.uniform(0.1, 0.3), rng.uniform(15, 40))
        length = int(rng.uniform(0.4, 0.8) * RATE_HZ)
        start = rng.integers(0, max(1, steps - length))
        burst = np.zeros(steps)
        window = np.hanning(length)
        freq = rng.uniform(5, 8)
        burst[start:start + length] = window[: steps - start] * np.sin(2 * np.pi * freq * t[: min(length, steps - start)])
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        acc = acc + rng.uniform(0.8, 2.0) * burst[:, None] * axis
        gyro = gyro + rng.uniform(150, 400) * burst[:, None] * np.roll(axis, 1)
    rot = _rotation(rng, 0.6)
    gravity = rot @ np.array([0.0, 0.0, 1.0])  # 1 g, through the wrist's tilt
    acc = (rot @ acc.T).T + gravity
    acc += rng.normal(0, 0.02, size=3) + rng.normal(0, 0.015, size=acc.shape)
    gyro = (rot @ gyro.T).T + rng.normal(0, 1.0, size=3) + rng.normal(0, 0.8, size=gyro.shape)
    return np.concatenate([acc, gyro], axis=1)


def make_windows(n: int, steps: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n labelled windows [n, steps, 6] float32 and their classes, balanced."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    x = np.stack([_segment(rng, int(label), steps) for label in y]).astype(np.float32)
    return x, y.astype(np.int64)


def make_dataset(n_train: int, n_test: int, steps: int = 100, seed: int = 0) -> dict:
    x_train, y_train = make_windows(n_train, steps, seed)
    x_test, y_test = make_windows(n_test, steps, seed + 1)
    return {"X_train": x_train, "y_train": y_train, "X_test": x_test, "y_test": y_test,
            "class_names": np.array(CLASSES)}


def make_recording(segments: int, seconds: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A continuous stream of activities: samples [N, 6] float32 and a label per sample."""
    rng = np.random.default_rng(seed)
    steps = int(seconds * RATE_HZ)
    labels = rng.integers(0, len(CLASSES), size=segments)
    x = np.concatenate([_segment(rng, int(label), steps) for label in labels]).astype(np.float32)
    return x, np.repeat(labels, steps)


# ---- vibration anomaly: a motor's accelerometer -----------------------------------------

VIBRATION_CLASSES = ("normal", "imbalance", "bearing", "looseness")


def make_vibration(n: int, steps: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3-axis accelerometer on a motor (g), 1 kHz: the rotation frequency varies
    per window; faults change the spectrum: imbalance raises 1x, a bearing fault
    adds periodic impacts that ring at high frequency, looseness adds harmonics
    and clipping. Fault severity varies down to barely visible."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(VIBRATION_CLASSES)
    rng.shuffle(y)
    t = np.arange(steps) / 1000.0
    out = np.empty((n, steps, 3), np.float32)
    for k, label in enumerate(y):
        f = rng.uniform(20, 40)  # rotation, Hz
        phase = rng.uniform(0, 2 * np.pi, 3)
        amp = np.array([1.0, 0.8, 0.5]) * rng.uniform(0.05, 0.12)
        sig = amp * np.sin(2 * np.pi * f * t[:, None] + phase)
        sig += 0.3 * amp * np.sin(4 * np.pi * f * t[:, None] + phase)
        severity = rng.uniform(0.3, 1.0)
        if label == 1:
            sig += severity * 2.5 * amp * np.sin(2 * np.pi * f * t[:, None] + phase)
        elif label == 2:
            period = 1.0 / (f * rng.uniform(3.0, 5.0))  # ball-pass frequency
            ring = np.zeros(steps)
            for start in np.arange(rng.uniform(0, period), t[-1], period):
                dt = t - start
                on = dt >= 0
                ring[on] += np.exp(-dt[on] * 300) * np.sin(2 * np.pi * rng.uniform(180, 260) * dt[on])
            sig += severity * 0.15 * ring[:, None] * rng.uniform(0.5, 1.0, 3)
        elif label == 3:
            for h in (3, 4, 5):
                sig += severity * amp * 0.6 / h * np.sin(2 * np.pi * h * f * t[:, None] + rng.uniform(0, 6, 3))
            sig = np.clip(sig, -np.abs(sig).max() * 0.8, None)
        sig += rng.normal(0, 0.01, sig.shape) + np.array([0.0, 0.0, 1.0])
        out[k] = sig
    return out, y.astype(np.int64)


# ---- keyword spotting: MFCC-like feature frames ----------------------------------------

KEYWORD_CLASSES = ("silence", "unknown", "yes", "no", "go")


def make_keywords(n: int, steps: int = 49, seed: int = 0, n_mfcc: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Frames of 10 cepstral coefficients (25 ms hop, ~1 s): a keyword is a
    sequence of 3 phone prototypes with random durations, speaking rate, start
    time, loudness and noise; "unknown" strings random phones; "silence" is
    noise. The classes differ in the order of their phones, so a model must
    remember what came before."""
    rng_proto = np.random.default_rng(1234)  # the language is fixed, the speakers vary
    phones = rng_proto.normal(0, 1, (8, n_mfcc))
    words = {2: (0, 1, 2), 3: (2, 1, 0), 4: (3, 4, 1)}
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(KEYWORD_CLASSES)
    rng.shuffle(y)
    out = np.empty((n, steps, n_mfcc), np.float32)
    for k, label in enumerate(y):
        frames = rng.normal(0, 0.3, (steps, n_mfcc))  # background
        if label != 0:
            seq = words.get(int(label)) or tuple(rng.integers(0, 8, 3))
            speaker = rng.normal(0, 0.25, n_mfcc)
            pos = int(rng.integers(0, steps // 3))
            for p in seq:
                d = int(rng.integers(4, 10))
                end = min(steps, pos + d)
                frames[pos:end] += (phones[p] + speaker) * rng.uniform(0.7, 1.3)
                pos = end
        out[k] = frames
    return out, y.astype(np.int64)


# ---- a rotating machine: 3-axis accelerometer, normal running and faults -----------------

MACHINE_RATE_HZ = 1600  # an ADXL345's 1600 Hz output data rate
MACHINE_CHANNELS = ("ax", "ay", "az")  # g; x, y radial, z axial (gravity on z)
MACHINE_SPEEDS_HZ = (15.0, 20.0, 25.0, 29.5)  # the running speeds (900 .. 1770 rpm)
MACHINE_FAULTS = ("imbalance", "misalignment", "bearing", "looseness")
COUNTS_PER_G = 256  # ADXL345 full resolution: 3.9 mg per count
BPFO, BPFI = 3.58, 5.42  # bearing defect frequencies, multiples of the shaft speed (9 balls)
TAPS = 256  # the resonance's impulse response (decayed to 2e-7 by then)


class Machine:
    """A motor driving a load, sampled continuously: the running speed moves
    between a few set points, the load drifts up and down, and a fault, once set,
    changes the spectrum at its characteristic frequencies:

    * imbalance: 1x shaft speed, radial (x and y in quadrature);
    * misalignment: 2x (and 1x) shaft speed, strongest axially (z);
    * bearing: impacts at the outer race (3.58x) or inner race (5.42x, modulated
      by 1x) defect frequency, each ringing a 350-550 Hz structural resonance;
    * looseness: many harmonics of 1x and half-orders, with clipped impacts.

    chunk(n) continues the signal where the last call left it."""

    def __init__(self, seed: int = 0, unit: int = 0):
        """seed: this run (speeds, loads, noise); unit: the machine itself (its
        amplitudes and resonance), the same in its training and test recordings."""
        own = np.random.default_rng(unit + 1_000_003)
        self.machine = own.uniform(0.8, 1.2, 4)  # this unit's own amplitudes
        self.base_res_hz = own.uniform(350, 550)
        self.rng = np.random.default_rng(seed)
        self.n = 0  # samples so far
        self.phase = self.rng.uniform(0, 2 * np.pi)
        self.speed = float(self.rng.choice(MACHINE_SPEEDS_HZ))
        self.target = self.speed
        self.next_speed = self._after(20, 90)
        self.load = self.rng.uniform(0.3, 1.0)
        self.load_to = self.load
        self.next_load = self._after(5, 30)
        self.tail = np.zeros(TAPS)  # the last excitation, ringing on into the next chunk
        self.fault: str | None = None
        self.severity = 0.0
        self.bearing = "outer"
        self.res_hz = self.base_res_hz

    def _after(self, lo: float, hi: float) -> int:
        return self.n + int(self.rng.uniform(lo, hi) * MACHINE_RATE_HZ)

    def set_fault(self, fault: str | None, severity: float = 1.0) -> None:
        if fault is not None and fault not in MACHINE_FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self.fault, self.severity = fault, severity
        if fault == "bearing":
            self.bearing = str(self.rng.choice(["outer", "inner"]))

    def chunk(self, n: int) -> np.ndarray:
        """The next n samples [n, 3] in g."""
        rng = self.rng
        speed = np.empty(n)
        load = np.empty(n)
        i = 0
        while i < n:  # between set-point and load changes both approach their targets exponentially
            k = self.n + i
            if k >= self.next_speed:
                self.target = float(rng.choice(MACHINE_SPEEDS_HZ))
                self.next_speed = k + int(rng.uniform(20, 90) * MACHINE_RATE_HZ)
            if k >= self.next_load:
                self.load_to = rng.uniform(0.3, 1.0)
                self.next_load = k + int(rng.uniform(5, 30) * MACHINE_RATE_HZ)
            j = min(n, self.next_speed - self.n, self.next_load - self.n)
            steps = np.arange(1, j - i + 1)
            speed[i:j] = self.target + (self.speed - self.target) * (1 - 2e-4) ** steps  # seconds to change
            load[i:j] = self.load_to + (self.load - self.load_to) * (1 - 5e-4) ** steps
            self.speed, self.load = float(speed[j - 1]), float(load[j - 1])
            i = j
        speed *= 1 + 0.003 * np.sin(2 * np.pi * 0.3 * (self.n + np.arange(n)) / MACHINE_RATE_HZ)
        phase = self.phase + np.cumsum(2 * np.pi * speed / MACHINE_RATE_HZ)
        self.phase = float(phase[-1] % (2 * np.pi))
        a1, a2, a6, anoise = self.machine
        rel = (speed / 20.0) ** 2  # centrifugal force grows with the square of speed
        x = np.zeros((n, 3))
        one = 0.020 * a1 * rel
        x[:, 0] += one * np.cos(phase)
        x[:, 1] += one * np.sin(phase)
        x[:, 2] += 0.004 * np.cos(phase + 0.5)
        two = 0.008 * a2 * (0.5 + load)
        x[:, 0] += two * np.cos(2 * phase + 1.0)
        x[:, 1] += 0.7 * two * np.sin(2 * phase + 1.3)
        x[:, 2] += 0.5 * two * np.cos(2 * phase + 0.2)
        vane = 0.010 * a6 * load  # a 6-blade fan or pump: 6x, load dependent
        x[:, 0] += vane * np.sin(6 * phase + 0.4)
        x[:, 2] += 0.6 * vane * np.sin(6 * phase + 2.0)
        s = self.severity
        if self.fault == "imbalance":
            x[:, 0] += s * 0.06 * rel * np.cos(phase + 0.3)
            x[:, 1] += s * 0.06 * rel * np.sin(phase + 0.3)
        elif self.fault == "misalignment":
            x[:, 2] += s * (0.05 * np.cos(2 * phase + 0.7) + 0.025 * np.cos(phase + 1.1))
            x[:, 0] += s * 0.025 * np.cos(2 * phase + 2.0)
        elif self.fault == "looseness":
            for h in range(1, 11):
                x[:, :2] += (s * 0.018 / np.sqrt(h)) * np.stack(
                    [np.cos(h * phase + 0.3 * h), np.sin(h * phase + 0.7 * h)], axis=1)
            x[:, 0] += s * 0.02 * np.cos(0.5 * phase + 0.2) + s * 0.012 * np.cos(1.5 * phase)
            x[:, :2] = np.clip(x[:, :2], -np.inf, 0.6 * np.abs(x[:, :2]).max(axis=0))  # a foot lifting
        drive = np.zeros(n)
        if self.fault == "bearing":
            order = BPFO if self.bearing == "outer" else BPFI
            ball = (order * phase / (2 * np.pi)) % 1.0
            hits = np.flatnonzero(np.diff(ball, prepend=ball[0]) < 0)  # one impact per defect passage
            gain = s * 0.8 * (1 + (0.6 * np.cos(phase[hits]) if self.bearing == "inner" else 0))
            drive[hits] = gain * rng.uniform(0.7, 1.3, len(hits))
        # structural resonance: broadband excitation (and bearing impacts) through a damped mode
        drive = drive + 0.003 * anoise * (0.5 + load) * rng.normal(size=n)
        k = np.arange(TAPS)
        w = 2 * np.pi * self.res_hz / MACHINE_RATE_HZ
        mode = np.exp(-0.06 * k) * np.sin(w * (k + 1)) / np.sin(w)  # a damped mode's impulse response
        full = np.convolve(np.concatenate([self.tail, drive]), mode)[TAPS:TAPS + n]
        self.tail = np.concatenate([self.tail, drive])[-TAPS:]
        ring = full
        x += ring[:, None] * np.array([1.0, 0.6, 0.4])
        x[:, 2] += 1.0  # gravity
        x += 0.004 * rng.normal(size=(n, 3))  # sensor noise, ~1 count
        self.n += n
        return x


def machine_recording(seconds: float, seed: int = 0, faults=(), normal_s=(60, 150), fault_s=(30, 60),
                      severity=(0.4, 1.0), chunk_s: float = 10.0, unit: int = 0):
    """x [N, 3] (g) and a label per sample ("normal" or the fault's name). With
    faults: normal running and fault episodes alternate, the faults in turn."""
    m = Machine(seed, unit)
    rng = np.random.default_rng(seed + 10_000)
    total = int(seconds * MACHINE_RATE_HZ)
    xs, labels = [], []
    done, k = 0, 0
    while done < total:
        if faults and k % 2 == 1:
            fault = faults[(k // 2) % len(faults)]
            m.set_fault(fault, rng.uniform(*severity))
            span = int(rng.uniform(*fault_s) * MACHINE_RATE_HZ)
        else:
            m.set_fault(None)
            span = int(rng.uniform(*normal_s) * MACHINE_RATE_HZ) if faults else total
        span = min(span, total - done)
        step = int(chunk_s * MACHINE_RATE_HZ)
        for start in range(0, span, step):
            xs.append(m.chunk(min(step, span - start)).astype(np.float32))
        labels.append((m.fault or "normal", span))
        done += span
        k += 1
    label = np.concatenate([np.full(n, name, dtype="<U12") for name, n in labels])
    return np.concatenate(xs), label


def machine_windows(n: int, seconds: float = 1.0, seed: int = 0, classes=("normal", "imbalance",
                                                                           "misalignment", "bearing")):
    """Labelled windows [n, T, 3] for the supervised fault classifier (severity
    down to barely visible, all running speeds and loads)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(classes)
    rng.shuffle(y)
    steps = int(seconds * MACHINE_RATE_HZ)
    out = np.empty((n, steps, 3), np.float32)
    for k, label in enumerate(y):
        m = Machine(int(rng.integers(1 << 31)))
        m.chunk(int(rng.uniform(0.2, 1.0) * MACHINE_RATE_HZ))  # a random moment of its running
        name = classes[label]
        m.set_fault(None if name == "normal" else name, rng.uniform(0.3, 1.0))
        out[k] = m.chunk(steps)
    return out, y.astype(np.int64)


def write_machine_dataset(out, n_train: int = 2000, n_test: int = 500, seed: int = 0,
                          normal_minutes: float = 20.0, test_minutes: float = 15.0, test_recordings: int = 2) -> str:
    """`edge-agent dataset vibration --out DIR`: one machine's accelerometer in
    sensor counts (ADXL345, 256 per g, 1600 Hz), as recordings (.npz: x, t, label):

    * DIR/train/normal.npz: normal running only, to train an anomaly model on;
    * DIR/test/machine_K.npz: normal running with fault episodes (imbalance,
      misalignment, bearing, looseness; label normal or the fault), to evaluate;
    * DIR/faults.npz: labelled 1.5 s windows (normal, imbalance, misalignment,
      bearing) for the supervised fault classifier (DATA .npz with rate_hz: train
      puts them through the spectral front-end)."""
    from pathlib import Path

    from .fileio import atomic_open

    out = Path(out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)

    names = ("normal",) + MACHINE_FAULTS

    def save(path, x, labels):  # label 0 / 1 (normal / anomaly); fault: which, by index into faults
        t = (np.arange(len(x)) / MACHINE_RATE_HZ).astype(np.float32)
        fault = np.searchsorted(np.array(names), labels, sorter=np.argsort(names))
        fault = np.argsort(names)[fault].astype(np.int8)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, x=np.clip(np.round(x * COUNTS_PER_G), -32768, 32767).astype(np.int16), t=t,
                     label=(fault > 0).astype(np.int8), fault=fault, faults=np.array(names))

    x, labels = machine_recording(normal_minutes * 60, seed=seed * 7 + 1)
    save(out / "train" / "normal.npz", x, labels)
    episodes = 0
    for k in range(test_recordings):
        x, labels = machine_recording(test_minutes * 60, seed=seed * 7 + 2 + k, faults=MACHINE_FAULTS[k:] + MACHINE_FAULTS[:k])
        episodes += int(np.sum((labels[1:] != "normal") & (labels[:-1] == "normal")) + (labels[0] != "normal"))
        save(out / "test" / f"machine_{k + 1}.npz", x, labels)
    classes = ("normal", "imbalance", "misalignment", "bearing")
    xs, ys = machine_windows(n_train + n_test, 1.5, seed)
    with atomic_open(out / "faults.npz", "wb") as fh:
        np.savez(fh, X_train=np.round(xs[:n_train] * COUNTS_PER_G).astype(np.float32), y_train=ys[:n_train],
                 X_test=np.round(xs[n_train:] * COUNTS_PER_G).astype(np.float32), y_test=ys[n_train:],
                 class_names=np.array(classes), rate_hz=np.float32(MACHINE_RATE_HZ))
    return (f"wrote {out}: train/normal.npz ({normal_minutes:g} min of normal running), "
            f"{test_recordings} test recordings ({test_minutes:g} min each, {episodes} fault episodes), "
            f"faults.npz ({n_train} + {n_test} labelled windows); 3 axes at {MACHINE_RATE_HZ} Hz in counts")
