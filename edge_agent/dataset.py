"""DATA files: an .npz of labelled windows (keys in docs/format.md)."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    from .reference.frontend import FrontendParams


@dataclass
class Split:
    x: np.ndarray  # [n, T, C] float32, raw sensor units
    y: np.ndarray  # [n] int
    lengths: np.ndarray | None  # [n] valid steps per window, or None for all T


@dataclass
class Dataset:
    train: Split
    test: Split
    class_names: list[str] | None
    frontend: "FrontendParams | None" = None  # the front-end that made x from the clips or sensor windows
    skipped: list[str] = field(default_factory=list)  # clips refused, one line each
    val: Split | None = None  # WAV data: the clips validation_list.txt names (never trained on)


def _split(z, path: Path, name: str, channels: int | None) -> Split:
    for key in (f"X_{name}", f"y_{name}"):
        if key not in z.files:
            raise UserError(f"{path}: missing array {key}")
    x, y = z[f"X_{name}"], z[f"y_{name}"]
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"{path}: X_{name} has shape {x.shape}, expected [n>0, T>0, C]")
    if channels is not None and x.shape[2] != channels:
        raise UserError(f"{path}: X_{name} has {x.shape[2]} channels, X_train has {channels}")
    if x.dtype.kind not in "biuf":  # complex would be truncated to its real part, text is not data
        raise UserError(f"{path}: X_{name} holds {x.dtype} values, expected real numbers")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)  # checked after the cast: float64 1e300 is inf in float32
    if not np.all(np.isfinite(x)):
        raise UserError(f"{path}: X_{name} must be finite numbers within float32's range")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: y_{name} must be {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= 65536:
        raise UserError(f"{path}: y_{name} holds a label outside 0..65535")
    lengths = z[f"lengths_{name}"] if f"lengths_{name}" in z.files else None
    if lengths is not None:
        if lengths.dtype.kind not in "iu":
            raise UserError(f"{path}: lengths_{name} must be integers")
        lengths = lengths.astype(np.int64)
        if lengths.shape != y.shape or lengths.min() < 1 or lengths.max() > x.shape[1]:
            raise UserError(f"{path}: lengths_{name} must be {len(y)} values in 1..{x.shape[1]}")
    return Split(x.astype(np.float32), y.astype(np.int64), lengths)


def from_recordings(folder: Path, window: int, hop: int, rate_hz: float, test_fraction: float = 0.2) -> Dataset:
    """Labelled CSV recordings (a `label` column) cut into windows every `hop`
    samples; a window's label is the one most of its samples carry. The last
    part of each recording is the test split (no window shared across splits)."""
    from .recording import load as load_recording
    from .reference.stream import window_starts

    files = sorted(folder.glob("*.csv"))
    if not files:
        raise UserError(f"{folder}: no .csv recordings in this folder")
    recs = [load_recording(f, rate_hz) for f in files]
    for f, rec in zip(files, recs):
        if rec.labels is None:
            raise UserError(f"{f}: a training recording needs a 'label' column")
        if rec.x.shape[1] != recs[0].x.shape[1]:
            raise UserError(f"{f}: {rec.x.shape[1]} channels, {files[0].name} has {recs[0].x.shape[1]}")
    names = sorted({label for rec in recs for label in rec.labels})
    index = {name: k for k, name in enumerate(names)}
    parts = {"train": ([], []), "test": ([], [])}
    for f, rec in zip(files, recs):
        labels = np.array([index[label] for label in rec.labels])
        starts = window_starts(len(rec.x), window, hop)
        if len(starts) == 0:
            raise UserError(f"{f}: shorter than one window ({window} samples)")
        cut = int(len(starts) * (1 - test_fraction))
        for n, start in enumerate(starts):
            # a test window must not overlap a training window
            split = "train" if n < cut else "test"
            if split == "test" and cut and start < starts[cut - 1] + window:
                continue
            xs, ys = parts[split]
            xs.append(rec.x[start:start + window])
            ys.append(np.bincount(labels[start:start + window], minlength=len(names)).argmax())
    if not parts["train"][0] or not parts["test"][0]:
        raise UserError(f"{folder}: too little data for a train and a test split at window {window}")
    make = lambda xs, ys: Split(np.stack(xs).astype(np.float32), np.array(ys, np.int64), None)
    return Dataset(make(*parts["train"]), make(*parts["test"]), names)


TEST_LIST = "testing_list.txt"
VAL_LIST = "validation_list.txt"
TEST_PERCENT = 20  # without a testing_list.txt: speakers hashed into the test split


def is_wav_folder(folder: Path) -> bool:
    """The Speech Commands layout: label subfolders holding .wav clips."""
    return folder.is_dir() and any(d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.wav"))
                                   for d in folder.iterdir())


def frontend_for(settings, wav: bool, rate_hz: float | None = None) -> "FrontendParams | None":
    """The front-end config.yaml asks for; `auto`: mel for WAV data; for windows of
    sensor samples whose rate the data gives (data_rate), log bands from 1 kHz up
    (vibration, as an anomaly model's recordings: learn/anomaly.py frontend_for);
    none otherwise."""
    from .reference.frontend import FrontendParams

    if not wav and rate_hz is not None:
        from .learn.anomaly import frontend_for as sensor_frontend

        return sensor_frontend(settings, rate_hz)
    fs = settings.frontend
    kind = ("mel" if wav else "none") if fs.kind == "auto" else fs.kind
    if kind == "none":
        return None
    return FrontendParams(kind, fs.rate_hz, fs.frame, fs.hop, fs.bands, fs.f_lo, fs.f_hi, fs.floor).build()


def frontend_of_data(settings, path: str | Path) -> "FrontendParams | None":
    """frontend_for the DATA at path: a WAV folder, or an .npz that may give its rate."""
    return frontend_for(settings, is_wav_folder(Path(path)), data_rate(path))


def clip_features(clips: list[np.ndarray], frontend: "FrontendParams", seconds: float = 1.0) -> np.ndarray:
    """Front-end features [n, T, B] of clips padded with zeros (or cut) to `seconds`."""
    from .reference.frontend import features, frames_of

    n = int(round(seconds * frontend.rate_hz))
    padded = np.zeros((len(clips), n), np.int64)
    for i, clip in enumerate(clips):
        padded[i, :min(len(clip), n)] = clip[:n]
    steps = len(frames_of(padded[0], frontend)) if len(clips) else 0
    out = np.zeros((len(clips), steps, frontend.bands), np.float32)
    for first in range(0, len(clips), 256):  # frames of 256 clips at a time bound the memory
        chunk = padded[first:first + 256]
        starts = np.arange(steps) * frontend.hop
        frames = chunk[:, starts[:, None] + np.arange(frontend.frame)].reshape(-1, frontend.frame)
        out[first:first + len(chunk)] = features(frames, frontend).reshape(len(chunk), steps, -1)
    return out


def _listed(folder: Path, name: str) -> set[str] | None:
    if not (folder / name).is_file():
        return None
    try:
        return {line.strip() for line in (folder / name).read_text(encoding="utf-8").splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{folder / name}: cannot read ({str(exc)[:120]})") from None


CACHE_DIR = ".edge-agent-cache"  # inside a WAV folder: features of its clips (from_wav_folder(cache=True))


def _cache_key(folder: Path, labels: list[str], frontend: "FrontendParams") -> str:
    """A digest of everything the features depend on: the front-end's settings and
    tables, the split lists, and every clip's name, size and modification time."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(repr(frontend.ints()).encode())
    for table in ("window", "cos", "sin", "slot", "weight", "log"):
        digest.update(np.ascontiguousarray(getattr(frontend, table)).tobytes())
    for name in (TEST_LIST, VAL_LIST):
        if (folder / name).is_file():
            digest.update(name.encode() + (folder / name).read_bytes())
    for label in labels:
        for wav in sorted((folder / label).glob("*.wav")):
            st = wav.stat()
            digest.update(f"{label}/{wav.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _read_cache(path: Path, labels: list[str]) -> Dataset | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if [str(s) for s in z["labels"].tolist()] != labels:
                return None
            splits = {name: Split(z[f"x_{name}"].astype(np.float32), z[f"y_{name}"].astype(np.int64), None)
                      if f"x_{name}" in z.files else None for name in ("train", "test", "val")}
            skipped = [str(s) for s in z["skipped"].tolist()]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a damaged or foreign cache: read the clips again
    return Dataset(splits["train"], splits["test"], labels, None, skipped, splits["val"])


def _write_cache(path: Path, data: Dataset) -> None:
    from .fileio import atomic_open

    arrays = {"labels": np.array(data.class_names), "skipped": np.array(data.skipped, dtype=str)}
    for name in ("train", "test", "val"):
        split = getattr(data, name)
        if split is not None:  # features are int16 values: stored as such
            arrays[f"x_{name}"], arrays[f"y_{name}"] = split.x.astype(np.int16), split.y
    try:
        path.parent.mkdir(exist_ok=True)
        for old in path.parent.glob("features-*.npz"):  # one cache per folder: the clips' current one
            old.unlink()
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError:
        pass  # a read-only folder: no cache, nothing lost


def from_wav_folder(folder: Path, frontend: "FrontendParams", progress=None, cache: bool = False) -> Dataset:
    """One subfolder per label of WAV clips (16-bit PCM mono at the front-end's
    rate), 1 s each (shorter clips padded with silence). The test split is the
    clips testing_list.txt names, else the speakers (name before _nohash_) whose
    hash falls in TEST_PERCENT; clips validation_list.txt names are a validation
    split, never trained on. A clip that cannot be read is skipped and listed.
    With cache, the features are kept in CACHE_DIR inside the folder, keyed by
    the front-end and every clip's name, size and time, and read back from there
    while nothing changed."""
    import zlib

    from .recording import read_wav

    labels = sorted(d.name for d in folder.iterdir()
                    if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.wav")))
    listed = _listed(folder, TEST_LIST)
    validation = _listed(folder, VAL_LIST) or set()
    cache_path = None
    if cache:
        key = _cache_key(folder, labels, frontend)
        cache_path = folder / CACHE_DIR / f"features-{key}.npz"
        if cache_path.is_file():
            hit = _read_cache(cache_path, labels)
            if hit is not None:
                hit.frontend = frontend
                return hit
    parts: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], []), "val": ([], [])}
    skipped = []
    bar = None
    if progress is None:
        import sys

        from tqdm import tqdm

        total = sum(1 for label in labels for _ in (folder / label).glob("*.wav"))
        # disable=None: no bar when stderr is not a terminal (logs, pipes, CI)
        bar = tqdm(total=total, desc="read clips", unit="clip", file=sys.stderr, leave=False, disable=None)
        progress = bar.update
    for k, label in enumerate(labels):
        for wav in sorted((folder / label).glob("*.wav")):
            rel = f"{label}/{wav.name}"
            try:
                samples, _ = read_wav(wav, frontend.rate_hz)
            except UserError as exc:
                skipped.append(str(exc))
                continue
            if listed is not None:
                test = rel in listed
            else:
                speaker = wav.name.split("_nohash_")[0]
                test = zlib.crc32(speaker.encode()) % 100 < TEST_PERCENT
            xs, ys = parts["test" if test else "val" if rel in validation else "train"]
            xs.append(samples)
            ys.append(k)
            if progress is not None:
                progress(1)
    if bar is not None:
        bar.close()
    for split in ("train", "test"):
        if not parts[split][0]:
            raise UserError(f"{folder}: no readable {split} clips ({len(skipped)} skipped"
                            + (f"; first: {skipped[0]}" if skipped else "") + ")")
    make = lambda xs, ys: Split(clip_features(xs, frontend), np.array(ys, np.int64), None)
    data = Dataset(make(*parts["train"]), make(*parts["test"]), labels, frontend, skipped,
                   make(*parts["val"]) if parts["val"][0] else None)
    if cache_path is not None:
        _write_cache(cache_path, data)
    return data


def load(path: str | Path, window: int = 100, hop: int = 100, rate_hz: float = 50.0,
         frontend: "FrontendParams | None" = None, cache: bool = False) -> Dataset:
    """DATA: an .npz, a folder of labelled CSV recordings cut by window/hop, or a
    folder of WAV clips (one subfolder per label) through `frontend` (with cache:
    features kept beside the clips, from_wav_folder). An .npz's windows go through
    `frontend` too when one is given (sensor samples: frontend_for, data_rate)."""
    path = Path(path)
    if is_wav_folder(path):
        if frontend is None:
            raise UserError(f"{path}: WAV clips need a spectral front-end (a model blob with one; "
                            "config.yaml frontend.kind other than none)")
        return from_wav_folder(path, frontend, cache=cache)
    if path.is_dir():
        return from_recordings(path, window, hop, rate_hz)
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            train = _split(z, path, "train", None)
            test = _split(z, path, "test", train.x.shape[2])
            names = [str(s) for s in z["class_names"].tolist()] if "class_names" in z.files else None
            rate = _rate(z, path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable .npz data file ({str(exc)[:120]})") from None
    if frontend is not None:  # windows of sensor samples: the front-end's frames are the model's steps
        if rate is not None and round(rate) != frontend.rate_hz:
            raise UserError(f"{path}: samples at {rate:g} Hz; the front-end takes {frontend.rate_hz} Hz")
        train, test = _through_frontend(train, frontend, path), _through_frontend(test, frontend, path)
    if names is not None and any(not n or "\n" in n or len(n) > 64 for n in names):
        raise UserError(f"{path}: class_names must be 1 to 64 characters on one line each")
    top = int(max(train.y.max(), test.y.max()))
    if names is not None and top >= len(names):
        raise UserError(f"{path}: label {top} has no entry in class_names ({len(names)} names)")
    return Dataset(train, test, names, frontend)


def _rate(z, path: Path) -> float | None:
    """A DATA file's optional rate_hz: the sample rate of its windows' steps."""
    if "rate_hz" not in z.files:
        return None
    rate = z["rate_hz"]
    if rate.shape != () or rate.dtype.kind not in "iuf" or not 0 < float(rate) <= 1e6:
        raise UserError(f"{path}: rate_hz must be one number in (0, 1e6] Hz")
    return float(rate)


def data_rate(path: str | Path) -> float | None:
    """The sample rate a DATA .npz gives for its windows (rate_hz), else None
    (also for folders and unreadable files: load() names what is wrong)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return _rate(z, path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _through_frontend(split: Split, frontend: "FrontendParams", path: Path) -> Split:
    """Windows of sensor samples [n, T, C] as front-end frames [n, F, B]: the
    channels summed into one stream (as the board's sensor feeds it), each
    window from a fresh front-end."""
    from .learn.anomaly import sensor_frames

    n = split.x.shape[1] if split.lengths is None else split.lengths
    feats = [sensor_frames(w[:t], frontend)[0] for w, t in zip(split.x, np.broadcast_to(n, len(split.x)))]
    counts = np.array([len(f) for f in feats])
    if counts.min() == 0:
        raise UserError(f"{path}: a window is shorter than one front-end frame ({frontend.frame} samples)")
    x = np.zeros((len(feats), counts.max(), frontend.bands), np.float32)
    for k, f in enumerate(feats):
        x[k, :len(f)] = f
    return Split(x, split.y, None if counts.min() == counts.max() else counts)


def write_synthetic(task: str, out: str | Path, n_train: int, n_test: int, seed: int = 0) -> str:
    """`edge-agent dataset activity|vibration`: a synthetic task as a DATA .npz
    (vibration: a folder of a machine's recordings, synthetic.write_machine_dataset)."""
    from . import synthetic
    from .fileio import atomic_open

    if n_train < 1 or n_test < 1:
        raise UserError("a data set needs at least one training and one test window")
    if task == "activity":
        arrays = synthetic.make_dataset(n_train, n_test, seed=seed)
    elif task == "vibration":  # a rotating machine: recordings and fault windows in a folder
        return synthetic.write_machine_dataset(out, n_train, n_test, seed)
    else:
        raise UserError(f"unknown synthetic task {task!r} (activity | vibration)")
    with atomic_open(out, "wb") as fh:
        np.savez(fh, **arrays)
    return f"wrote {out}: {task}, {n_train} training and {n_test} test windows"
