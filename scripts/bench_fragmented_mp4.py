"""What fragmented MP4 costs for ``--out FILE.mp4``: encode+mux time, file size, frames decoded back.

Usage::

    PYTHONPATH=. python scripts/bench_fragmented_mp4.py [--video PATH] [--frames N] [--repeats R]

Variants, all libx264 crf 18 through :func:`sam2trt.video.writers.add_video_stream`:

- ``plain``: today's file output (``preset fast``, x264's default GOP, moov at the end);
- ``frag-only``: the same encoder, fragmented container (:data:`FRAGMENT_MOVFLAGS`): the container's own cost;
- ``frag-live``: what a live run writes (fragmented, keyframe every second, ``zerolatency``, flushed per packet).

Only the writer's calls are timed (decoding the input is not); the best of ``R`` runs
is printed, wall and CPU seconds per frame.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

from sam2trt.video.reader import open_frames
from sam2trt.video.writers import FRAGMENT_MOVFLAGS, add_video_stream, encode_rgb

VARIANTS = {
    "plain": ({}, False),
    "frag-only": ({"movflags": FRAGMENT_MOVFLAGS}, False),
    "frag-live": ({"movflags": FRAGMENT_MOVFLAGS, "flush_packets": "1"}, True),
}


def run_once(video: str, frames: int, variant: str, out: Path) -> tuple[float, float, int]:
    """``(wall seconds, CPU seconds, bytes)`` of writing ``frames`` frames of ``video`` as ``variant``."""
    options, low_latency = VARIANTS[variant]
    wall = cpu = 0.0
    with open_frames(video) as src:
        info = src.info
        container = av.open(str(out), "w", format="mp4", options=dict(options))
        stream = add_video_stream(container, info.width, info.height, Fraction(info.fps).limit_denominator(1001),
                                  low_latency=low_latency)
        for i, (_, rgb) in enumerate(src):
            if i == frames:
                break
            t0, c0 = time.perf_counter(), time.process_time()
            container.mux(encode_rgb(stream, rgb, i))
            wall, cpu = wall + time.perf_counter() - t0, cpu + time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        container.mux(stream.encode(None))
        container.close()
        wall, cpu = wall + time.perf_counter() - t0, cpu + time.process_time() - c0
    return wall, cpu, out.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "live_clip.mp4"))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"video {args.video}, {args.frames} frames max, best of {args.repeats}")
        print(f"{'variant':10} {'ms/frame wall':>14} {'ms/frame CPU':>13} {'KiB':>8} {'frames back':>12}")
        for variant in VARIANTS:
            out = Path(tmp) / f"{variant}.mp4"
            best = min(run_once(args.video, args.frames, variant, out) for _ in range(args.repeats))
            with av.open(str(out)) as c:
                back = sum(1 for _ in c.decode(video=0))
            print(f"{variant:10} {1000 * best[0] / back:14.2f} {1000 * best[1] / back:13.2f} "
                  f"{best[2] / 1024:8.0f} {back:12d}")
            os.remove(out)


if __name__ == "__main__":
    main()
