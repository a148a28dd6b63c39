"""The integer spectral front-end: device/frontend.py under the real MicroPython unix
port equals edge_agent/reference/frontend.py bit for bit (random signals, full-scale
tones, silence, clipped input; mel and linear/log filterbanks; fed one sample at a
time and in odd blocks), its blob section round-trips and is refused when damaged,
and the frame loop allocates nothing."""
import struct
import subprocess
import zlib

import numpy as np
import pytest

from edge_agent import blob, recording
from edge_agent.board import unixport
from edge_agent.errors import UserError
from edge_agent.quant.frontend import quantize_with_frontend
from edge_agent.reference import frontend as fe
from helpers import random_model, run_cli

AUDIO = dict(kind="mel", rate_hz=16000, frame=512, hop=320, bands=32, f_lo=125, f_hi=7500)
VIBRATION = dict(rate_hz=1600, frame=256, hop=128, bands=16, f_lo=10, f_hi=800)


def params(kind: str) -> fe.FrontendParams:
    return fe.FrontendParams(**(AUDIO if kind == "mel" else dict(VIBRATION, kind=kind))).build()


def model_with(p: fe.FrontendParams, seed: int = 0) -> blob.QuantModel:
    rng = np.random.default_rng(seed)
    fm = random_model(rng, n_in=p.bands, hidden=4, layers=1, classes=3)
    return quantize_with_frontend(fm, rng.normal(0, 1000, (2, 5, p.bands)), p)


def signals(rate: int, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    tone = lambda f, a: np.round(a * np.sin(2 * np.pi * f * t)).astype(np.int64)
    return {
        "random": rng.integers(-32768, 32768, n),
        "full-scale tone": tone(rate / 16, 32767),
        "quiet tone": tone(rate / 5.3, 3),
        "silence": np.zeros(n, np.int64),
        "clipped": np.clip(rng.normal(0, 60000, n), -32768, 32767).astype(np.int64),
        "square": np.where((np.arange(n) // 7) % 2 == 0, 32767, -32768),
        "impulses": np.where(np.arange(n) % 300 == 0, -32768, 0),
        "lsb noise": rng.integers(-1, 2, n),
    }


@pytest.mark.parametrize("kind", ["mel", "linear", "log"])
def test_device_equals_reference_bit_for_bit(kind):
    p = params(kind)
    data = blob.pack(model_with(p))
    sig = signals(p.rate_hz, 4 * p.frame + 3 * p.hop + 17)
    stream = np.concatenate(list(sig.values()))  # one stream: frames also straddle the changes
    want = fe.run(stream, p)
    assert len(want) > 40
    for chunk in (1, 97, 512):  # sample by sample, and in blocks that do not divide the hop
        got = unixport.run_frontend(data, stream, p.bands, chunk)
        assert np.array_equal(got, want), f"{kind}, fed {chunk} at a time"
    # every signal alone too: each starts its own frames
    for name, s in sig.items():
        assert np.array_equal(unixport.run_frontend(data, s, p.bands, 333), fe.run(s, p)), name


def test_scaling_is_documented_and_int32_safe():
    """The documented bounds hold at their extremes: |v| <= 2**14 after normalisation,
    power < 2**31, band energies < 2**31 (the reference raises if one is not)."""
    p = params("mel")
    for name, s in signals(16000, 4096).items():
        trace: dict = {}
        feats = fe.features(fe.frames_of(s, p), p, trace)
        assert trace["power"].max() < 2**31, name
        assert trace["e"].min() >= -1 and trace["e"].max() <= 14, name
        assert feats.min() >= p.floor and feats.max() < 2**15, name
    # a full-scale tone lands in the band around its frequency, silence at the floor
    tone = signals(16000, 4096)["full-scale tone"]
    assert fe.run(tone, p)[3].argmax() == int(np.argmin(np.abs(fe._edges(p)[1:-1] - 1000)))
    assert (fe.run(np.zeros(4096, int), p) == p.floor).all()


def test_blob_round_trip_and_refusals(tmp_path):
    p = params("log")
    qm = model_with(p)
    data = blob.pack(qm)
    back = blob.unpack(data)
    assert back.frontend is not None and back.frontend.same_as(p)
    assert blob.pack(back) == data
    # a model without a front-end: no FE sections, as before
    plain = blob.unpack(data)
    plain.frontend = None
    packed = blob.pack(plain)
    assert b"FEPR" not in packed and blob.unpack(packed).frontend is None
    # damage: a flipped byte inside the front-end tables fails the CRC, host and device
    at = data.index(b"FEWN")
    offset = struct.unpack_from("<I", data, at + 8)[0]
    bad = bytearray(data)
    bad[offset + 5] ^= 0x40
    with pytest.raises(blob.BlobError, match="CRC"):
        blob.unpack(bytes(bad))
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(bad))
    out = _mpy(f"import blob\ntry:\n blob.load('{path}')\nexcept blob.BlobError as e:\n print('refused', e)")
    assert out.startswith("refused") and "CRC" in out
    # consistent but wrong: more bands than the model takes, with a good CRC
    wrong = bytearray(data)
    fepr = struct.unpack_from("<I", data, data.index(b"FEPR") + 8)[0]
    struct.pack_into("<i", wrong, fepr + 5 * 4, p.bands + 1)
    struct.pack_into("<I", wrong, len(wrong) - 4, zlib.crc32(bytes(wrong[:-4])))
    with pytest.raises(blob.BlobError, match="bands"):
        blob.unpack(bytes(wrong))
    path.write_bytes(bytes(wrong))
    out = _mpy(f"import blob, frontend\ntry:\n frontend.of_blob(blob.load('{path}'))\n"
               f"except ValueError as e:\n print('refused', e)")
    assert out.startswith("refused") and "bands" in out


def _mpy(code: str) -> str:
    proc = subprocess.run([unixport.binary(), "-c", code], capture_output=True, text=True, timeout=120,
                          env={"MICROPYPATH": f"{unixport.DEVICE_DIR}:.frozen"})
    assert proc.returncode == 0, proc.stderr or proc.stdout
    return proc.stdout.strip()


def test_no_allocation_per_frame(tmp_path):
    p = params("mel")
    path = tmp_path / "m.bin"
    path.write_bytes(blob.pack(model_with(p)))
    out = _mpy(f"""
import array, gc, blob, frontend
f = frontend.of_blob(blob.load('{path}'))
buf = bytearray(2 * 1000)
for i in range(1000):
    v = (i * 7919) % 65536
    buf[2 * i] = v & 255
    buf[2 * i + 1] = v >> 8
out = array.array('h', [0] * f.bands)
def run(blocks):
    frames = 0
    for _ in range(blocks):
        i = 0
        while i < 1000:
            i = f.feed(buf, i, 1000)
            if f.due():
                f.compute(out)
                frames += 1
    return frames
def alloc(blocks):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    frames = run(blocks)
    used = gc.mem_alloc() - before
    gc.enable()
    return frames, used
alloc(2)
short, long = alloc(5), alloc(25)
print(long[0] - short[0], long[1] - short[1])  # the call's own constant cost cancels
""")
    frames, allocated = map(int, out.split())
    assert frames >= 60 and allocated == 0  # frames beyond the first 5 blocks' cost nothing


def test_wav_reading_is_strict(tmp_path):
    good = tmp_path / "a.wav"
    recording.write_wav(good, np.array([0, 1, -1, 32767], np.int16), 16000)
    samples, rate = recording.read_wav(good, 16000)
    assert rate == 16000 and samples.tolist() == [0, 1, -1, 32767]
    import wave

    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(16000), w.writeframes(bytes(16))
    with pytest.raises(UserError, match="16-bit PCM mono"):
        recording.read_wav(stereo)
    with pytest.raises(UserError, match="22050 Hz; need 16000"):
        recording.write_wav(tmp_path / "b.wav", np.zeros(10, np.int16), 22050)
        recording.read_wav(tmp_path / "b.wav", 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt nonsense")
    with pytest.raises(UserError, match="not a 16-bit PCM WAV"):
        recording.read_wav(junk)
    # through the CLI: one line, no traceback
    res = run_cli("replay", str(stereo))
    assert res.returncode != 0 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_sample_streams_frame_like_the_host():
    p = params("mel")
    assert fe.frame_sample_index(3, p).tolist() == [511, 831, 1151]
    assert len(fe.run(np.zeros(511, int), p)) == 0 and len(fe.run(np.zeros(512, int), p)) == 1
    # frames cut a batch at a time (hours of audio) are the frames of the whole stream, in order
    x = np.random.default_rng(3).integers(-32768, 32768, 20_000).astype(np.int16)
    whole = fe.features(fe.frames_of(x, p), p)
    assert len(whole) == (len(x) - p.frame) // p.hop + 1
    for batch in (1, 5, 4096):
        assert np.array_equal(fe.run(x, p, batch=batch), whole)


def thumb_twiddles(p: fe.FrontendParams) -> bytes:
    """The words device/frontend.py prepares for frontend_thumb.fft: c, s, Kr, Ki per W_M^t."""
    out = b""
    for t in range(p.frame // 4):
        c, s = int(p.cos[2 * t]), int(p.sin[2 * t])
        base = 16384 + 32769 * 32768
        out += struct.pack("<4I", c & 0xFFFFFFFF, s & 0xFFFFFFFF, (base - 32768 * (c + s)) & 0xFFFFFFFF,
                           (base - 32768 * (c - s)) & 0xFFFFFFFF)
    return out


@pytest.mark.parametrize("frame", [64, 512, 1024])
def test_thumb_fft_equals_reference(frame):
    """frontend_thumb.fft, mpy-cross's armv6m machine code, on an emulated Cortex-M
    (tests/armv6m.py): equal to the reference FFT at the bounds |v| <= 2**14."""
    from armv6m import RAM_BASE, CortexM, asm_functions, compile_kernel, wide_instructions

    code = asm_functions(compile_kernel("armv6m", unixport.DEVICE_DIR / "frontend_thumb.py"))[0].code
    assert not wide_instructions(code)
    cpu = CortexM(code)
    p = fe.FrontendParams(frame=frame, hop=frame // 2, bands=4, f_lo=500).build()
    m = frame // 2
    rng = np.random.default_rng(frame)
    cases = [rng.integers(-16384, 16385, (2, m)), np.full((2, m), 16384), np.full((2, m), -16384),
             np.where(rng.random((2, m)) < 0.5, 16384, -16384), np.zeros((2, m), np.int64)]
    tw_at = RAM_BASE + 4 * m
    cpu.uc.mem_write(tw_at, thumb_twiddles(p))
    for v in cases:
        z = np.empty(2 * m, np.int64)
        z[0::2], z[1::2] = v[0], v[1]
        cpu.uc.mem_write(RAM_BASE, (z + 32768).astype("<u2").tobytes())
        cpu.call(RAM_BASE, tw_at, m, count=True)
        got = np.frombuffer(bytes(cpu.uc.mem_read(RAM_BASE, 4 * m)), "<u2").astype(np.int64) - 32768
        wr, wi = fe.fft(v[0][None], v[1][None], p)
        assert np.array_equal(got[0::2], wr[0]) and np.array_equal(got[1::2], wi[0])
    if frame == 512:
        per_butterfly = cpu.instructions / len(cases) / (m // 2 * (m.bit_length() - 1))
        assert per_butterfly < 50  # ~41 in the loop: the reason it exists (viper: ~5x more cycles)


def thumb_bins(p: fe.FrontendParams) -> bytes:
    """The per-bin words device/frontend.py prepares for frontend_thumb.bands."""
    m, out = p.frame // 2, b""
    for k in range(m + 1):
        if p.slot[k] == fe.SKIP:
            continue
        c, s = int(p.cos[k]), int(p.sin[k])
        out += struct.pack("<5I", 4 * (k % m) | 4 * ((m - k) % m) << 16, (c & 0xFFFF) | (s & 0xFFFF) << 16,
                           (16384 - 65536 * c) & 0xFFFFFFFF, (16384 + 65536 * s) & 0xFFFFFFFF,
                           4 * int(p.slot[k]) | int(p.weight[k]) << 16)
    return out


@pytest.mark.parametrize("kind", ["mel", "log"])
def test_thumb_bands_equal_reference(kind):
    """frontend_thumb.bands (split, power, filterbank) on the emulated Cortex-M: the
    energy slots equal the reference's, FFT outputs at their bounds."""
    from armv6m import RAM_BASE, CortexM, asm_functions, compile_kernel, wide_instructions

    code = asm_functions(compile_kernel("armv6m", unixport.DEVICE_DIR / "frontend_thumb.py"))[1].code
    assert not wide_instructions(code)
    cpu = CortexM(code)
    p = params(kind)
    m = p.frame // 2
    bins = thumb_bins(p)
    z_at, bins_at = RAM_BASE, RAM_BASE + 4 * m
    e_at = bins_at + len(bins)
    cpu.uc.mem_write(bins_at, bins)
    rng = np.random.default_rng(3)
    # the FFTs of the extreme signals (every value an FFT output can take obeys Parseval)
    frames = np.stack([sig[:p.frame] for sig in signals(p.rate_hz, p.frame).values()])
    v, e = fe.window_normalise(frames, p)
    rev = fe._bit_reverse(m)
    zr, zi = fe.fft(v[:, 0::2][:, rev], v[:, 1::2][:, rev], p)
    cases = list(zip(zr, zi))
    for re, im in cases:
        z = np.empty(2 * m, np.int64)
        z[0::2], z[1::2] = re, im
        cpu.uc.mem_write(z_at, (z + 32768).astype("<u2").tobytes())
        cpu.uc.mem_write(e_at, bytes(4 * (p.bands + 2)))
        cpu.call(z_at, bins_at, e_at, bins_at + len(bins))
        got = np.frombuffer(bytes(cpu.uc.mem_read(e_at, 4 * (p.bands + 2))), "<i4")
        trace: dict = {}
        fe.bands(np.asarray(re)[None], np.asarray(im)[None], np.zeros(1, np.int64), p, trace)
        assert np.array_equal(got, trace["slots"][0])
