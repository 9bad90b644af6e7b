#!/usr/bin/env python3
"""Peak RSS of ``track`` against video length, per direction: does memory stay flat?

    python scripts/bench_rss_directions.py ../shared/videos/vtest.avi [--lengths 150,600]
        [--directions both,forward] [--repeat 3] [--outputs out,json,masks_dir,coco]

Each run is ``sam2trt bench --host-only`` (the real pipeline with instant null
modules, :func:`sam2trt.bench.run_host_only`, no floor) in a fresh process, so
its peak RSS (``ru_maxrss``) is its own. For a length ``L`` the boxes are on
frame ``L // 2`` and ``--max-frames L // 2`` bounds each direction: ``both``
processes frames ``0 .. L - 1`` (backward ``L/2 - 1 .. 0`` through the video
read backward in chunks, forward ``L/2 .. L - 1``); ``forward`` starts at
frame 0 and processes ``L`` frames. Prints one line per run, then per
direction the median peak RSS at each length and its change from the shortest.
glibc malloc's own variation between identical runs is a few percent
(thread arenas), hence the repeats and the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's sam2trt


def child(video: str, direction: str, length: int, outputs: tuple[str, ...]) -> None:
    from sam2trt.bench import run_host_only
    from sam2trt.runtime.null_backend import host_only_spec

    prompt_frame, frames = (length // 2, length // 2) if direction != "forward" else (0, length)
    r = run_host_only(host_only_spec(), video, frames, 1, outputs, direction=direction, prompt_frame=prompt_frame,
                      floor=False)
    print(json.dumps({"direction": direction, "length": length, "frames": r["frames"],
                      "peak_rss_mib": r["peak_rss_mib"], "wall_s": r["wall_s"]}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--lengths", default="150,600", help="processed frames per run, comma-separated")
    ap.add_argument("--directions", default="both,forward")
    ap.add_argument("--repeat", type=int, default=3, help="runs per direction and length (median reported)")
    ap.add_argument("--outputs", default="out,json,masks_dir,coco")
    ap.add_argument("--child", nargs=2, metavar=("DIRECTION", "LENGTH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    outputs = tuple(o for o in args.outputs.split(",") if o)
    if args.child:
        child(args.video, args.child[0], int(args.child[1]), outputs)
        return 0
    lengths = [int(n) for n in args.lengths.split(",")]
    results: dict = {}
    for direction in args.directions.split(","):
        for _ in range(args.repeat):
            for length in lengths:  # interleaved, so that a change in the machine's load hits every length
                proc = subprocess.run([sys.executable, __file__, args.video, "--outputs", args.outputs,
                                       "--child", direction, str(length)], capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return proc.returncode
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(json.dumps(r), flush=True)
                results.setdefault(direction, {}).setdefault(length, []).append(r["peak_rss_mib"])
    print(f"\npeak RSS (MiB), median of {args.repeat}; outputs {', '.join(outputs)}")
    for direction, by_len in results.items():
        base = statistics.median(by_len[lengths[0]])
        cells = [f"{n} frames {statistics.median(v):.1f} (runs {', '.join(f'{x:.0f}' for x in v)}; "
                 f"{100 * (statistics.median(v) / base - 1):+.1f}%)" for n, v in by_len.items()]
        print(f"{direction:8s} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
