"""Sample-to-subscriber latency over MQTT on loopback, and bridge throughput.

1. A virtual board (window = hop = 1, so every sample makes a detection)
   publishes over MQTT to a real mosquitto; one sample is written to its
   serial port at a time, and the time until a subscriber holds the detection
   is measured: p50 / p99 (goal p99 < 20 ms).
2. The bridge: a load generator writes framed detection lines (the board's own
   line format) into a pseudo-terminal as fast as it can; the bridge moves them
   through its disk queue to the broker; detections/s at the subscriber.

    python bench/mqtt_latency.py [--samples 300] [--bridge 3000]
"""
from __future__ import annotations

import argparse
import os
import pty
import queue
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Broker  # noqa: E402
from edge_agent.board import link  # noqa: E402
from edge_agent.mqtt import client as mqtt  # noqa: E402
from edge_agent.mqtt.bridge import Bridge, DiskQueue, QueueLimits, run  # noqa: E402
from mqtt_helpers import Board, settings_for  # noqa: E402


def subscriber(url: str, topic: str) -> tuple:
    got: queue.Queue = queue.Queue()
    client = mqtt.connect(mqtt.target(url), on_message=lambda m: got.put((time.perf_counter(), m.payload)),
                          on_connect=lambda c, f, r: c.subscribe(topic, 1))
    time.sleep(0.3)
    return client, got


def latency(broker: Broker, n: int, tmp: Path) -> None:
    board = Board(tmp / "board", settings_for(broker.url, "lat-01", window=1))
    client, got = subscriber(broker.url, "edge/lat-01/detection")
    time.sleep(1.0)
    while not got.empty():
        got.get()
    samples = []
    for i in range(n + 20):
        start = time.perf_counter()
        os.write(board.writer, link.sample_line([100 * (i % 5)] * 6))
        arrived, _ = got.get(timeout=5)
        if i >= 20:  # the first ones warm caches and the connection
            samples.append(arrived - start)
    client.disconnect()
    board.close()
    ms = np.array(samples) * 1000
    print(f"sample -> MQTT subscriber, virtual board on loopback, {n} samples: "
          f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms "
          f"(goal p99 < 20 ms)")


def bridge_throughput(broker: Broker, n: int, tmp: Path) -> None:
    master, slave = pty.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    client, got = subscriber(broker.url, "edge/brg-01/detection")
    b = Bridge(mqtt.target(broker.url), DiskQueue(tmp / "q.sqlite", QueueLimits()), "brg-01")
    stop = threading.Event()
    reader = threading.Thread(target=run, args=(port, b, stop), daemon=True)
    reader.start()
    time.sleep(0.5)
    lines = [link.frame("det", {"seq": i + 1, "boot": "b0", "t_ms": i, "sample": i, "class": 1,
                                "label": "walk", "score": 0.9}).encode() for i in range(n)]
    start = time.perf_counter()
    for line in lines:
        os.write(master, line)
    last = start
    for _ in range(n):
        last, _ = got.get(timeout=60)
    took = last - start
    stop.set()
    reader.join(timeout=5)
    b.close()
    client.disconnect()
    print(f"bridge: {n} detections board -> disk queue -> broker -> subscriber in {took:.2f} s: "
          f"{n / took:,.0f} detections/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--bridge", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        broker = Broker(tmp).start()
        try:
            latency(broker, args.samples, tmp)
            bridge_throughput(broker, args.bridge, tmp)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
