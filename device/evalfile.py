# Windows or a sample stream from a file through the cell. The host's
# micropython backend runs this under the unix port; it runs on a board too.
#
#   micropython evalfile.py windows MODEL IN OUT [trace]
#     IN:  int32 n, T, C; int8 x [n, T, C] (int16 for a model of int16 inputs); int32 lengths [n]
#     OUT: int32 logits [n, K]; with trace, after each window's logits, per
#          step and layer: h [H] (int8, or int16 for a 16-bit state) then int16 c [H]
#   micropython evalfile.py stream MODEL IN OUT
#     IN:  int32 N, C, window, hop, continuous, raw; then int8 x [N, C] (int16 for a
#          model of int16 inputs), or
#          int16 raw readings [N, C] when raw is 1 (quantized on the device)
#     OUT: per decision: int32 sample index, class, score, logits [K]
#   micropython evalfile.py frontend MODEL IN OUT
#     IN:  int32 N, chunk; int16 samples [N], fed `chunk` at a time
#     OUT: int16 features [frames, bands], one row per frame the front-end completes
#   micropython evalfile.py anomaly MODEL IN OUT
#     IN:  as stream (window, hop, continuous unused: the blob holds the window)
#     OUT: per sample: int32 score, event (0 none, 1 onset, 2 end)
import struct
import sys

import blob
import cell
from layout import BoardModel
from stream import Stream, decide


def _ints(fh, n):
    return struct.unpack("<%di" % n, fh.read(4 * n))


def windows(model, src, out, trace):
    n, steps, channels = _ints(src, 3)
    xw = model.x_bits // 8
    x = src.read(n * steps * channels * xw)
    lengths = _ints(src, n)
    c = cell.Cell(model)
    state = cell.State(model)
    H = model.hidden
    h_fmt = "<%d%s" % (H, "h" if model.h_bits == 16 else "b")
    for w in range(n):
        state.reset()
        base = w * steps * channels
        for t in range(lengths[w]):
            c.set_input_bytes(x, xw * (base + t * channels))
            c.step(state)
            if trace:
                for k in range(model.n_layers):
                    out.write(struct.pack(h_fmt, *state.hidden(k)))
                    out.write(struct.pack("<%dh" % H, *state.cell(k)))
        out.write(struct.pack("<%di" % model.n_classes, *c.head(state)))


def _feed(c, sample, channels, raw):
    """One sample into the cell's inputs: int16 readings quantized on the device,
    or the model's inputs already quantized."""
    if raw:
        for ch in range(channels):
            c.raw[ch] = struct.unpack_from("<h", sample, 2 * ch)[0]
        c.quantize(c.raw)
    else:
        c.set_input_bytes(sample)


def stream(model, src, out):
    total, channels, window, hop, continuous, raw = _ints(src, 6)
    c = cell.Cell(model)
    s = Stream(c, window, hop, continuous == 1)
    size = 2 if raw else model.x_bits // 8
    for t in range(total):
        _feed(c, src.read(channels * size), channels, raw)
        ready = s.push()
        if ready is not None:
            logits = c.head(ready)
            k, score = decide(model, logits)
            out.write(struct.pack("<3i", t, k, score))
            out.write(struct.pack("<%di" % model.n_classes, *logits))


def anomaly(model, src, out):
    from anomaly import Anomaly

    total, channels, _, _, _, raw = _ints(src, 6)
    c = cell.Cell(model)
    a = Anomaly(c, model)
    size = 2 if raw else model.x_bits // 8
    for t in range(total):
        _feed(c, src.read(channels * size), channels, raw)
        event = a.push()
        out.write(struct.pack("<2i", a.score, event))


def frontend(model_path, src, out):
    import array

    from frontend import Frontend

    fe = Frontend(blob.load(model_path))
    total, chunk = _ints(src, 2)
    feats = array.array("h", [0] * fe.bands)
    done = 0
    while done < total:
        n = min(chunk, total - done)
        buf = array.array("h", src.read(2 * n))
        i = 0
        while i < n:
            i = fe.feed(buf, i, n)
            if fe.due():
                fe.compute(feats)
                out.write(feats)
        done += n


def main(argv):
    mode, model_path, in_path, out_path = argv[1:5]
    if mode == "frontend":
        with open(in_path, "rb") as src, open(out_path, "wb") as out:
            return frontend(model_path, src, out)
    model = BoardModel(blob.load(model_path))
    with open(in_path, "rb") as src, open(out_path, "wb") as out:
        if mode == "windows":
            windows(model, src, out, len(argv) > 5 and argv[5] == "trace")
        elif mode == "anomaly":
            anomaly(model, src, out)
        else:
            stream(model, src, out)


if __name__ == "__main__":
    main(sys.argv)
