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
