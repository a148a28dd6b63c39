# The serial line protocol, device side (host twin: edge_agent/link.py).
#
# Board -> host: "EA1 <kind> <json>*<crc32 as 8 hex digits>\n", the CRC taken
# over "<kind> <json>". The prefix and the CRC let the host tell a message from
# stray REPL output, and a corrupted line from a good one.
# Host -> board: "s <v1> <v2> ...\n", one sample of raw int16 readings, or
# "c <json>\n", a command; or, for audio-rate samples text cannot keep up with, a
# binary frame: FRAME_SYNC, u16 n (1..512), n int16 samples (all little-endian),
# u32 CRC-32 of the length and samples. The sync byte never starts a text line.
import json

from blob import crc32

PREFIX = "EA1 "
FRAME_SYNC = 0xA5


def dumps(payload):
    """JSON, with "score" (held as an integer in 1/10000) written as an exact
    four-decimal number: a float's repr differs between ports, this does not."""
    score = payload.get("score")
    if not isinstance(score, int):
        return json.dumps(payload)
    payload["score"] = -1
    text = json.dumps(payload)
    payload["score"] = score
    return text.replace('"score": -1', '"score": %d.%04d' % (score // 10000, score % 10000))


def frame(kind, payload):
    body = kind + " " + dumps(payload)
    return "%s%s*%08x\n" % (PREFIX, body, crc32(body.encode()))


def parse_sample(line, out):
    """Fill out (array 'h') from "s v1 v2 ..."; False if the line is not a sample."""
    parts = line.split()
    if len(parts) != len(out) + 1 or parts[0] != "s":
        return False
    for i in range(len(out)):
        v = int(parts[i + 1])
        out[i] = -32768 if v < -32768 else 32767 if v > 32767 else v
    return True
