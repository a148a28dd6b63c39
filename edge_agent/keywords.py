"""A keyword-spotting corpus from real speech synthesis (Debian's espeak-ng).

The ten Speech Commands keywords, other words as `unknown`, and `silence`
(background noise alone), as 1-s 16 kHz 16-bit mono WAV clips in the Speech
Commands layout: DIR/<label>/<speaker>_nohash_<n>.wav, plus testing_list.txt
and validation_list.txt naming the held-out clips. A speaker is an espeak-ng
accent with a voice variant. Three sets of voices never meet: training
(TRAIN_VARIANTS, and RANDOM_VOICES more made from them by crossing two
variants' settings and moving pitch and formants: random_voices), validation
(VAL_VARIANTS) and test (TEST_VARIANTS).
Each clip draws a speaking rate, pitch, gain, position in the second and a
background noise (white, pink, brown, mains hum, babble of other words) at a
random signal-to-noise ratio; training clips are also warped in frequency
(resampled by 0.85-1.18, as a longer or shorter vocal tract would speak), and
are cut as the 1-s windows of a stream cut speech: `unknown` also holds pieces
of words (keywords too) at a clip's edge, and a whole word often has a piece of
a neighbouring word at an edge; the other words most often heard as a keyword
(HARD_UNKNOWN) are drawn three times as often as the rest. Nothing is downloaded.

make_recording() builds a long stream for continuous replay: keywords between
stretches of noise and other speech, with the time of every keyword; voices
made from the stock ones (random_voices) may speak half its words.
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
MADE_ACCENTS = tuple(a for a in ACCENTS if a != "en-gb")  # espeak-ng applies no variant to plain en-gb
# espeak-ng voice variants (espeak-ng --voices=variant): human-sounding ones only
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "klatt2",
                  "klatt3", "adam", "Alex", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin",
                  "boris", "caleb", "david", "ed", "edward", "Gene", "gustave", "Henrique", "Hugo",
                  "iven", "iven2", "Jacky", "john", "linda", "marcelo", "Marco", "Mario", "max",
                  "Michael", "michel", "miguel", "Mike", "paul", "pedro", "quincy", "rob", "robert",
                  "steph", "steph2", "travis", "victor", "zac", "norbert", "sandro", "shelby")
TEST_VARIANTS = ("m7", "f5", "klatt4", "Lee", "Nguyen", "pablo", "steph3", "iven3", "Denis",
                 "Diogo", "Alicia", "Andrea", "edward2", "Gene2", "anika", "grandma")
# validation voices: neither trained on nor tested; for choices such as the decision thresholds
VAL_VARIANTS = ("m8", "iven4", "grandpa", "croak", "kaukovalta", "AnxiousAndy", "Storm", "klatt5")
RANDOM_VOICES = 3000  # training voices made by crossing and perturbing the training variants (random_voices)
SYNTH_RATE = 22050  # what espeak-ng writes
UNKNOWN_TIMES = 3  # training clips of whole other words (`unknown`) per clip of another class
CUT_TIMES = 3  # training clips of cut words (`unknown`) per clip of another class
NEIGHBOUR_SHARE = 0.4  # whole-word training clips with a piece of a neighbouring word at an edge
# the other words that streams of validation voices most often hear as a keyword
# (bench/keywords.py prints them): wow as no, dog as down, one as down or on,
# eight as right, learn as on. Training draws them HARD_TIMES as often as the rest.
HARD_UNKNOWN = ("wow", "dog", "one", "eight", "learn")
HARD_TIMES = 3
WARP = (0.85, 1.18)  # training clips are resampled by this factor: unseen voices' formants


@dataclass
class Speaker:
    accent: str
    variant: str
    data: str | None = None  # an espeak-ng data folder holding the variant (random_voices), else the stock one

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
    path = [f"--path={speaker.data}"] if speaker.data else []
    proc = subprocess.run([espeak(), *path, "-v", speaker.voice, "-s", str(rate_wpm), "-p", str(pitch),
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


def stock_data() -> Path:
    """espeak-ng's own data folder (espeak-ng --version names it)."""
    proc = subprocess.run([espeak(), "--version"], capture_output=True, text=True, timeout=60)
    at = proc.stdout.find("Data at:")
    folder = Path(proc.stdout[at + 8:].strip()) if at >= 0 else Path()
    if at < 0 or not (folder / "voices" / "!v").is_dir():
        raise UserError(f"cannot find espeak-ng's voice variants (espeak-ng --version: {proc.stdout.strip()[:120]})")
    return folder


QUALITY = ("tone", "voicing", "breath", "breathw", "consonants", "klatt", "intonation", "stressAdd",
           "stressAmp", "stressLength", "flutter", "roughness", "echo")  # what a crossover takes from another voice


def perturb_variant(text: str, rng: np.random.Generator, other: str | None = None) -> str:
    """A new voice from a variant file: pitch and formants moved (a longer or
    shorter vocal tract, a higher or lower voice), voice quality redrawn, and
    with `other` (another variant file) a crossover: each QUALITY setting of
    `other` replaces this one's with probability 1/2."""
    tract = rng.uniform(0.88, 1.15)  # all formant frequencies move together ...
    pitch = rng.uniform(0.8, 1.3)
    if other is not None:
        take = {key for key in QUALITY if rng.random() < 0.5}
        keep = [ln for ln in text.splitlines() if not ln.split() or ln.split()[0] not in take]
        text = "\n".join(keep + [ln for ln in other.splitlines() if ln.split() and ln.split()[0] in take])
    lines, formants = [], set()
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("//", "#")) or words[0] == "name":
            continue
        if words[0] == "pitch" and len(words) >= 3:
            line = f"pitch {int(float(words[1]) * pitch)} {int(float(words[2]) * pitch)}"
        elif words[0] == "formant" and len(words) >= 5:
            k = int(words[1])
            formants.add(k)
            jitter = rng.uniform(0.95, 1.05) if k == 0 else tract * rng.uniform(0.94, 1.06)  # ... each a little
            line = " ".join(["formant", words[1], str(int(float(words[2]) * jitter)),
                             str(int(float(words[3]) * rng.uniform(0.8, 1.25))),
                             str(int(float(words[4]) * rng.uniform(0.8, 1.25)))] + words[5:])
        lines.append(line)
    for k in range(1, 6):  # variants that leave the formants alone get moved ones
        if k not in formants:
            lines.append(f"formant {k} {int(100 * tract * rng.uniform(0.94, 1.06))} 100 100")
    if rng.random() < 0.5:
        lines.append(f"flutter {int(rng.integers(0, 20))}")
    if rng.random() < 0.3:
        lines.append(f"roughness {int(rng.integers(0, 6))}")
    if rng.random() < 0.3:
        lines.append(f"voicing {int(rng.integers(60, 160))}")
    if rng.random() < 0.3:
        lines.append(f"consonants {int(rng.integers(60, 125))} {int(rng.integers(60, 125))}")
    if rng.random() < 0.3:
        lines.append(f"intonation {int(rng.integers(1, 5))}")
    return "\n".join(["language variant", "name random"] + [ln for ln in lines if ln.split()[0] != "language"]) + "\n"


VOICES_PER_FOLDER = 200  # espeak-ng lists at most 349 voices in a data folder


def random_voices(folder: str | Path, n: int, seed: int, bases=None) -> list[Speaker]:
    """n new voices, each a training variant crossed with another and perturbed
    (perturb_variant), in espeak-ng data folders made here (VOICES_PER_FOLDER
    each): links to the stock data plus the new variants, for espeak-ng
    --path=folder/k. Returns speakers with a random accent."""
    folder = Path(folder)
    stock = stock_data()
    rng = np.random.default_rng(seed)
    bases = list(bases or TRAIN_VARIANTS)
    read = lambda v: (stock / "voices" / "!v" / v).read_text(encoding="utf-8", errors="replace")
    out = []
    for i in range(n):
        sub = folder / f"{i // VOICES_PER_FOLDER}"
        data = sub / "espeak-ng-data"
        variants = data / "voices" / "!v"
        if i % VOICES_PER_FOLDER == 0:
            variants.mkdir(parents=True, exist_ok=True)
            for entry in stock.iterdir():  # all but the voices (mbrola's and the stock variants)
                if entry.name != "voices" and not (data / entry.name).exists():
                    (data / entry.name).symlink_to(entry)
        base, other = (str(v) for v in rng.choice(bases, 2))
        name = f"rv{i:04d}"
        (variants / name).write_text(perturb_variant(read(base), rng, read(other)), encoding="utf-8")
        out.append(Speaker(str(rng.choice(MADE_ACCENTS)), name, str(sub)))
    return out


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


def unknown_share() -> np.ndarray:
    """How often training draws each of UNKNOWN_WORDS as a whole `unknown` word."""
    weight = np.array([HARD_TIMES if w in HARD_UNKNOWN else 1 for w in UNKNOWN_WORDS], float)
    return weight / weight.sum()


def _train_jobs(per_class: int, speakers: list[Speaker], seed: int, unknown_times: int, cut_times: int):
    """The training split's jobs: (label, word, speaker, rate, pitch, clip seed,
    cut, neighbour). `unknown` holds whole other words (unknown_times per class)
    and, cut_times per class, words cut by the clip's edge (keywords too: a
    1-s window every 200 ms cuts through words, and a piece of a keyword is not
    the keyword). A whole word has a cut neighbour at an edge in NEIGHBOUR_SHARE
    of the clips, as windows of a stream have."""
    rng = np.random.default_rng(seed)
    share = unknown_share()
    for label in CLASSES:
        whole = per_class * (unknown_times if label == "unknown" else 1)
        for n in range(whole + (per_class * cut_times if label == "unknown" else 0)):
            base = speakers[int(rng.integers(len(speakers)))]
            # espeak-ng applies no variant to plain en-gb, nor one of another --path folder's
            accent = str(rng.choice(ACCENTS if base.data is None else MADE_ACCENTS))
            speaker = Speaker(accent, base.variant, base.data)
            cut = n >= whole
            if label == "silence":
                word = None
            elif cut:
                word = str(rng.choice(KEYWORDS if rng.random() < 0.6 else UNKNOWN_WORDS))
            else:
                word = str(rng.choice(UNKNOWN_WORDS, p=share)) if label == "unknown" else label
            neighbour = str(rng.choice(KEYWORDS + UNKNOWN_WORDS)) \
                if word and rng.random() < (0.3 if cut else NEIGHBOUR_SHARE) else None
            yield label, word, speaker, int(rng.integers(110, 230)), int(rng.integers(15, 85)), \
                int(rng.integers(2**31)), cut, neighbour


def _piece(rng: np.random.Generator, w: np.ndarray, most: float) -> tuple[np.ndarray, bool]:
    """The head or the tail of a word, 10% to `most` of it; True for the tail."""
    keep = max(1, int(len(w) * rng.uniform(0.1, most)))
    tail = bool(rng.random() < 0.5)
    return (w[len(w) - keep:] if tail else w[:keep]), tail


def _train_speech(rng: np.random.Generator, word_audio: np.ndarray, cut: bool,
                  neighbour_audio) -> tuple[np.ndarray, np.ndarray]:
    """The speech of a 1-s training clip as a stream's window sees it: a whole
    word at a random place and gain (or, with cut, a piece of one at the clip's
    edge), maybe a piece of a neighbouring word at an edge, apart from it.
    Returns the clip's speech and the (placed) word."""
    out = np.zeros(CLIP)
    w = word_audio[:CLIP]
    w = w / max(np.abs(w).max(), 1e-9) * 10 ** rng.uniform(-1.3, -0.05)  # peak -26..-0.5 dBFS
    if cut:
        w, tail = _piece(rng, w, 0.6)
        lo = 0 if tail else CLIP - len(w)  # a word's tail opens the window, its head closes it
    else:
        lo = int(rng.integers(0, CLIP - len(w) + 1))
    out[lo:lo + len(w)] = w
    if neighbour_audio is not None and len(neighbour_audio):
        v = neighbour_audio[:CLIP]
        v = v / max(np.abs(v).max(), 1e-9) * np.abs(w).max() * rng.uniform(0.5, 1.2)
        gap = int(rng.uniform(0.05, 0.3) * RATE_HZ)
        before, after = lo - gap, CLIP - (lo + len(w) + gap)  # room on each side
        room = max(before, after)
        if room > 0.05 * RATE_HZ:
            keep = min(room, max(1, int(len(v) * rng.uniform(0.1, 0.6))))
            if before >= after:  # the previous word's tail opens the clip
                out[:keep] = v[len(v) - keep:]
            else:  # the next word's head closes it
                out[CLIP - keep:] = v[:keep]
    return out, w


def _train_clip(rng: np.random.Generator, word_audio, babble, cut: bool, neighbour_audio) -> np.ndarray:
    """A 1-s training clip: _train_speech over noise at a random SNR (silence: _clip)."""
    if word_audio is None or not len(word_audio):
        return _clip(rng, None, babble)
    speech, w = _train_speech(rng, word_audio, cut, neighbour_audio)
    noise_rms = np.sqrt(np.mean(w**2)) / 10 ** (rng.uniform(5, 30) / 20)  # SNR 5..30 dB
    return to_int16(speech + noise(rng, CLIP, babble) * noise_rms)


def corpus_size(per_class: int, test_per_class: int, val_per_class: int | None = None,
                unknown_times: int = UNKNOWN_TIMES, cut_times: int = CUT_TIMES) -> int:
    """Clips make_corpus writes."""
    val = test_per_class if val_per_class is None else val_per_class
    train = per_class * (len(CLASSES) - 1 + unknown_times + cut_times)
    return train + len(CLASSES) * (test_per_class + val)


def make_corpus(out: str | Path, per_class: int = 800, test_per_class: int = 80, seed: int = 0,
                workers: int = 2, progress=None, unknown_times: int = UNKNOWN_TIMES,
                cut_times: int = CUT_TIMES, val_per_class: int | None = None,
                random_voices_n: int = RANDOM_VOICES) -> dict:
    """Write the corpus; return counts. progress(n) is called per clip written.
    Training voices: TRAIN_VARIANTS and random_voices_n voices perturbed from
    them; the training split holds unknown_times as many whole `unknown` words
    as of each other class (the many words that are not commands are what false
    detections come from; HARD_UNKNOWN drawn HARD_TIMES as often as the rest)
    and cut_times as many cut words (_train_jobs). The validation split
    (validation_list.txt, val_per_class clips per class, default test_per_class)
    is spoken by VAL_VARIANTS, the test split (testing_list.txt) by
    TEST_VARIANTS: neither is ever trained on."""
    import tempfile

    out = Path(out)
    espeak()
    val_per_class = test_per_class if val_per_class is None else val_per_class
    if per_class < 1 or test_per_class < 1 or val_per_class < 0:
        raise UserError("a keyword corpus needs at least one clip per class in each split")
    try:
        for label in CLASSES:
            (out / label).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the corpus folder ({exc.strerror})") from None
    with tempfile.TemporaryDirectory(prefix="edge-agent-voices-") as voices:
        stock = [Speaker(ACCENTS[0], v) for v in TRAIN_VARIANTS]
        made = random_voices(voices, random_voices_n, seed + 11) if random_voices_n else []
        speakers = stock * max(1, round(len(made) / len(stock))) + made  # stock or made, about evenly
        babble = {"train": _babble(seed + 1, TRAIN_VARIANTS), "test": _babble(seed + 2, TEST_VARIANTS),
                  "val": _babble(seed + 3, VAL_VARIANTS)}
        jobs = [("train", j) for j in _train_jobs(per_class, speakers, seed, unknown_times, cut_times)] + \
               [("test", (*j, False, None)) for j in _jobs(test_per_class, TEST_VARIANTS, seed + 7919)] + \
               ([("val", (*j, False, None)) for j in _jobs(val_per_class, VAL_VARIANTS, seed + 4243)]
                if val_per_class else [])
        counters: dict[str, int] = {}
        names = []
        for split, (label, word, speaker, *_rest) in jobs:
            key = f"{label}/{speaker.name}"
            counters[key] = counters.get(key, 0) + 1
            names.append(f"{label}/{speaker.name}_nohash_{counters[key] - 1}.wav")

        def one(i: int) -> str:
            split, (label, word, speaker, rate, pitch, clip_seed, cut, neighbour) = jobs[i]
            rng = np.random.default_rng(clip_seed)
            audio = synthesize(word, speaker, rate, pitch) if word else None
            if split != "train":
                write_wav(out / names[i], _clip(rng, audio, babble[split]), RATE_HZ)
                return split
            warp = rng.uniform(*WARP)  # vocal tract length: formants and pitch move together
            if audio is not None:
                audio = resample(audio, 1000, int(round(1000 / warp)))
            other = None
            if neighbour:
                other = synthesize(neighbour, speaker, int(rng.integers(110, 230)), pitch)
                other = resample(other, 1000, int(round(1000 / warp)))
            write_wav(out / names[i], _train_clip(rng, audio, babble[split], cut, other), RATE_HZ)
            return split

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(one, range(len(jobs))):
                if progress is not None:
                    progress(1)
    from .fileio import write_text_atomic

    listed = {}
    for split, list_name in (("test", "testing_list.txt"), ("val", "validation_list.txt")):
        listed[split] = [n for (sp, _), n in zip(jobs, names) if sp == split]
        if listed[split]:
            write_text_atomic(out / list_name, "\n".join(listed[split]) + "\n")
    return {"clips": len(jobs), "test": len(listed["test"]), "validation": len(listed["val"]),
            "classes": len(CLASSES)}


def make_recording(seconds: float = 60.0, seed: int = 0, variants=TEST_VARIANTS,
                   keyword_every: float = 3.0, keyword_share: float = 0.6,
                   made: list[Speaker] | tuple = (), spoken: list | None = None
                   ) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """A long int16 stream: a word every ~keyword_every s, a keyword with probability
    keyword_share, else another word, over background noise. Returns the samples and
    [(time of the keyword's middle in s, word)]. With `made` (random_voices made
    from `variants`), half the words are spoken by them: many voices near the
    stock ones, where a few stock voices alone say little about unseen ones.
    `spoken`, if given, receives (start s, end s, word, speaker name) of every word."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE_HZ)
    babble = _babble(seed + 3, variants)
    bed = noise(rng, n, babble) * 10 ** (rng.uniform(-50, -35) / 20)
    speech = np.zeros(n)
    truth = []
    t = rng.uniform(0.5, 1.0)
    while t < seconds - 1.5:
        if made and rng.random() < 0.5:
            voice = made[int(rng.integers(len(made)))]
            speaker = Speaker(str(rng.choice(MADE_ACCENTS)), voice.variant, voice.data)
        else:
            speaker = Speaker(str(rng.choice(ACCENTS)), str(rng.choice(variants)))
        is_keyword = rng.random() < keyword_share
        word = str(rng.choice(KEYWORDS if is_keyword else UNKNOWN_WORDS))
        audio = synthesize(word, speaker, int(rng.integers(120, 220)), int(rng.integers(20, 80)))[:CLIP]
        at = int(t * RATE_HZ)
        if len(audio) and at + len(audio) < n:
            speech[at:at + len(audio)] = audio / max(np.abs(audio).max(), 1e-9) * 10 ** rng.uniform(-1.0, -0.1)
            if is_keyword:
                truth.append(((at + len(audio) / 2) / RATE_HZ, word))
            if spoken is not None:
                spoken.append((at / RATE_HZ, (at + len(audio)) / RATE_HZ, word, speaker.name))
        t += rng.uniform(0.6, 1.4) * keyword_every
    return to_int16(speech + bed), truth

