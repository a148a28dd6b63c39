"""A keyword-spotting corpus from real speech synthesis (Debian's espeak-ng).

The ten Speech Commands keywords, other words as `unknown`, and `silence`
(background noise alone), as 1-s 16 kHz 16-bit mono WAV clips in the Speech
Commands layout: DIR/<label>/<speaker>_nohash_<n>.wav, plus testing_list.txt
naming the test clips. A speaker is an espeak-ng accent with a voice variant;
the test split's variants are never used for training (held-out voices).
Each clip draws a speaking rate, pitch, gain, position in the second and a
background noise (white, pink, brown, mains hum, babble of other words) at a
random signal-to-noise ratio; training clips are also warped in frequency
(resampled by 0.85-1.18, as a longer or shorter vocal tract would speak), so
a model meets more voices than espeak-ng's variants. Nothing is downloaded.

make_recording() builds a long stream for continuous replay: keywords between
stretches of noise and other speech, with the time of every keyword.
"""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .recording import write_wav

RATE_HZ = 16000
CLIP = RATE_HZ  # 1-s clips
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
                 "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "learn", "follow", "forward", "backward", "visual")
CLASSES = ("silence", "unknown") + KEYWORDS
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
# espeak-ng voice variants (espeak-ng --voices=variant): human-sounding ones only
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "klatt2",
                  "klatt3", "adam", "Alex", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin",
                  "boris", "caleb", "david", "ed", "edward", "Gene", "gustave", "Henrique", "Hugo",
                  "iven", "iven2", "Jacky", "john", "linda", "marcelo", "Marco", "Mario", "max",
                  "Michael", "michel", "miguel", "Mike", "paul", "pedro", "quincy", "rob", "robert",
                  "steph", "steph2", "travis", "victor", "zac", "norbert", "sandro", "shelby")
TEST_VARIANTS = ("m7", "f5", "klatt4", "Lee", "Nguyen", "pablo", "steph3", "iven3", "Denis",
                 "Diogo", "Alicia", "Andrea", "edward2", "Gene2", "anika", "grandma")
SYNTH_RATE = 22050  # what espeak-ng writes
UNKNOWN_TIMES = 3  # training clips of `unknown` per clip of another class
WARP = (0.85, 1.18)  # training clips are resampled by this factor: unseen voices' formants


@dataclass
class Speaker:
    accent: str
    variant: str

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"

    @property
    def name(self) -> str:
        return f"{self.accent}-{self.variant}".replace("_", "-")


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise UserError("the keyword corpus needs espeak-ng: apt-get install espeak-ng")
    return path


def synthesize(word: str, speaker: Speaker, rate_wpm: int, pitch: int) -> np.ndarray:
    """One word from espeak-ng, float in [-1, 1] at 16 kHz, silence trimmed."""
    proc = subprocess.run([espeak(), "-v", speaker.voice, "-s", str(rate_wpm), "-p", str(pitch),
                           "--stdout", word], capture_output=True, timeout=60)
    if proc.returncode != 0 or len(proc.stdout) < 44:
        raise UserError(f"espeak-ng failed on {word!r} with voice {speaker.voice}: "
                        f"{proc.stderr.decode(errors='replace').strip()[:120]}")
    data = proc.stdout
    at = data.find(b"data", 12)  # espeak-ng's --stdout header has an unknown data size
    pcm = np.frombuffer(data[at + 8:len(data) - (len(data) - at - 8) % 2], "<i2").astype(np.float64) / 32768
    audio = resample(pcm, SYNTH_RATE, RATE_HZ)
    loud = np.flatnonzero(np.abs(audio) > 0.02 * max(np.abs(audio).max(), 1e-9))
    if len(loud) == 0:
        return np.zeros(0)
    return audio[max(loud[0] - 160, 0):loud[-1] + 160]


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling through the FFT (the clip is short)."""
    n_out = int(round(len(x) * rate_out / rate_in))
    if len(x) == 0 or n_out == 0:
        return np.zeros(n_out)
    spec = np.fft.rfft(x)
    keep = n_out // 2 + 1
    out = np.zeros(keep, complex)
    m = min(keep, len(spec))
    out[:m] = spec[:m]
    return np.fft.irfft(out, n_out) * (n_out / len(x))


def noise(rng: np.random.Generator, n: int, babble: list[np.ndarray] | None = None) -> np.ndarray:
    """Background noise with unit RMS: white, pink, brown, hum or babble."""
    kind = rng.choice(["white", "pink", "brown", "hum", "babble"] if babble else ["white", "pink", "brown", "hum"])
    if kind == "hum":
        t = np.arange(n) / RATE_HZ
        f0 = rng.choice([50.0, 60.0])
        x = sum(rng.uniform(0.2, 1) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) for h in range(1, 8))
        x = x + 0.3 * rng.normal(size=n)
    elif kind == "babble":
        x = np.zeros(n)
        for _ in range(int(rng.integers(2, 5))):
            w = babble[int(rng.integers(len(babble)))]
            at = int(rng.integers(-len(w) // 2, n))
            lo, hi = max(at, 0), min(at + len(w), n)
            if hi > lo:
                x[lo:hi] += w[lo - at:hi - at] * rng.uniform(0.3, 1)
        x = x + 0.05 * rng.normal(size=n)
    else:
        spec = np.fft.rfft(rng.normal(size=n))
        f = np.maximum(np.arange(len(spec)), 1)
        spec = spec / (np.sqrt(f) if kind == "pink" else f if kind == "brown" else 1)
        x = np.fft.irfft(spec, n)
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _clip(rng: np.random.Generator, word_audio: np.ndarray | None, babble) -> np.ndarray:
    """A 1-s clip: the word (if any) at a random place, gain and SNR, over noise."""
    out = np.zeros(CLIP)
    if word_audio is not None and len(word_audio):
        w = word_audio[:CLIP]
        at = int(rng.integers(0, CLIP - len(w) + 1))
        w = w / max(np.abs(w).max(), 1e-9) * 10 ** rng.uniform(-1.3, -0.05)  # peak -26..-0.5 dBFS
        out[at:at + len(w)] = w
        noise_rms = np.sqrt(np.mean(w**2)) / 10 ** (rng.uniform(5, 30) / 20)  # SNR 5..30 dB
    else:
        noise_rms = 10 ** (rng.uniform(-80, -20) / 20)  # silence: from a quiet room to a loud one
    return to_int16(out + noise(rng, CLIP, babble) * noise_rms)


def _jobs(per_class: int, variants, seed: int, unknown_times: int = 1):
    """(label, word, speaker, rate, pitch, clip seed) for one split."""
    rng = np.random.default_rng(seed)
    for label in CLASSES:
        for n in range(per_class * (unknown_times if label == "unknown" else 1)):
            speaker = Speaker(str(rng.choice(ACCENTS)), str(rng.choice(variants)))
            word = None if label == "silence" else \
                str(rng.choice(UNKNOWN_WORDS)) if label == "unknown" else label
            yield label, word, speaker, int(rng.integers(110, 230)), int(rng.integers(15, 85)), \
                int(rng.integers(2**31))


def _babble(seed: int, variants) -> list[np.ndarray]:
    """A few other-speech words to murmur under clips (never a keyword)."""
    rng = np.random.default_rng(seed)
    out = []
    for word in rng.choice(UNKNOWN_WORDS, 12, replace=False):
        sp = Speaker(str(rng.choice(ACCENTS)), str(rng.choice(variants)))
        out.append(synthesize(str(word), sp, int(rng.integers(130, 200)), int(rng.integers(20, 80))))
    return out


def make_corpus(out: str | Path, per_class: int = 300, test_per_class: int = 60, seed: int = 0,
                workers: int = 2, progress=None, unknown_times: int = UNKNOWN_TIMES) -> dict:
    """Write the corpus; return counts. progress(n) is called per clip written. The
    training split holds unknown_times as many `unknown` clips as of each other
    class: the many words that are not commands are what false detections come from."""
    out = Path(out)
    espeak()
    if per_class < 1 or test_per_class < 1:
        raise UserError("a keyword corpus needs at least one clip per class in each split")
    try:
        for label in CLASSES:
            (out / label).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the corpus folder ({exc.strerror})") from None
    babble = {"train": _babble(seed + 1, TRAIN_VARIANTS), "test": _babble(seed + 2, TEST_VARIANTS)}
    jobs = [("train", j) for j in _jobs(per_class, TRAIN_VARIANTS, seed, unknown_times)] + \
           [("test", j) for j in _jobs(test_per_class, TEST_VARIANTS, seed + 7919)]
    counters: dict[str, int] = {}
    names = []
    for split, (label, word, speaker, *_rest) in jobs:
        key = f"{label}/{speaker.name}"
        counters[key] = counters.get(key, 0) + 1
        names.append(f"{label}/{speaker.name}_nohash_{counters[key] - 1}.wav")

    def one(i: int) -> str:
        split, (label, word, speaker, rate, pitch, clip_seed) = jobs[i]
        rng = np.random.default_rng(clip_seed)
        audio = synthesize(word, speaker, rate, pitch) if word else None
        if audio is not None and split == "train":  # vocal tract length: formants and pitch move together
            audio = resample(audio, 1000, int(round(1000 / rng.uniform(*WARP))))
        write_wav(out / names[i], _clip(rng, audio, babble[split]), RATE_HZ)
        return split

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(one, range(len(jobs))):
            if progress is not None:
                progress(1)
    test = [n for (split, _), n in zip(jobs, names) if split == "test"]
    from .fileio import write_text_atomic

    write_text_atomic(out / "testing_list.txt", "\n".join(test) + "\n")
    return {"clips": len(jobs), "test": len(test), "classes": len(CLASSES)}


def make_recording(seconds: float = 60.0, seed: int = 0, variants=TEST_VARIANTS,
                   keyword_every: float = 3.0, keyword_share: float = 0.6) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """A long int16 stream: a word every ~keyword_every s, a keyword with probability
    keyword_share, else another word, over background noise. Returns the samples and
    [(time of the keyword's middle in s, word)]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE_HZ)
    babble = _babble(seed + 3, variants)
    bed = noise(rng, n, babble) * 10 ** (rng.uniform(-50, -35) / 20)
    speech = np.zeros(n)
    truth = []
    t = rng.uniform(0.5, 1.0)
    while t < seconds - 1.5:
        speaker = Speaker(str(rng.choice(ACCENTS)), str(rng.choice(variants)))
        is_keyword = rng.random() < keyword_share
        word = str(rng.choice(KEYWORDS if is_keyword else UNKNOWN_WORDS))
        audio = synthesize(word, speaker, int(rng.integers(120, 220)), int(rng.integers(20, 80)))[:CLIP]
        at = int(t * RATE_HZ)
        if len(audio) and at + len(audio) < n:
            speech[at:at + len(audio)] = audio / max(np.abs(audio).max(), 1e-9) * 10 ** rng.uniform(-1.0, -0.1)
            if is_keyword:
                truth.append(((at + len(audio) / 2) / RATE_HZ, word))
        t += rng.uniform(0.6, 1.4) * keyword_every
    return to_int16(speech + bed), truth

