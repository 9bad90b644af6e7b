"""The live reader's own cost: CPU and wall time per frame, and the mailbox hand-off latency.

Usage::

    PYTHONPATH=. python scripts/bench_live_reader.py VIDEO [--repeats R]

Reads VIDEO once with the file reader (:func:`sam2trt.video.reader.open_frames`) and
once with :func:`sam2trt.video.live.open_live` (not paced, an eager consumer that takes
every frame as soon as it is there), and prints, per frame, the process CPU time, the
wall time, and the p50/p95 of ``time.monotonic() - LiveFrame.received_s`` at the moment
the consumer got the frame (decode -> consumer hand-off).
"""

from __future__ import annotations

import argparse
import time

from sam2trt.video.live import open_live
from sam2trt.video.reader import open_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    for _ in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        with open_frames(args.video) as src:
            n = sum(1 for _ in src)
        print(f"file reader: {n} frames, {1000 * (time.process_time() - c0) / n:.2f} ms CPU/frame, "
              f"{1000 * (time.perf_counter() - t0) / n:.2f} ms wall/frame")
        c0, t0 = time.process_time(), time.perf_counter()
        handoff = []
        with open_live(args.video) as src:
            for frame in src:
                handoff.append(time.monotonic() - frame.received_s)
            stats = src.stats
        handoff.sort()
        n = stats.frames_received
        print(f"live reader: {n} received, {stats.frames_taken} taken, {stats.frames_dropped} dropped, "
              f"{1000 * (time.process_time() - c0) / n:.2f} ms CPU/frame, "
              f"{1000 * (time.perf_counter() - t0) / n:.2f} ms wall/frame, hand-off p50 "
              f"{1e3 * handoff[len(handoff) // 2]:.2f} ms, p95 {1e3 * handoff[int(0.95 * (len(handoff) - 1))]:.2f} ms")


if __name__ == "__main__":
    main()
