#!/usr/bin/env python3
"""Four short videos: one ``sam2trt track`` process with 2 threads against ``--ray local`` with 2 workers of 1 core.

    python scripts/bench_ray.py ../shared/videos/vtest.avi --model M [--videos 4] [--frames 4] [--repeat 1]

Cuts ``--videos`` clips of ``--frames`` frames from VIDEO (mp4, consecutive
stretches), then times, end to end from the command's start to its exit:

- ``single``: ``sam2trt track CLIPS --threads 2`` (the model loaded once, videos in turn);
- ``ray``: ``sam2trt track CLIPS --ray local --ray-cpus-per-worker 1`` (a private Ray
  instance with this machine's cores, one worker per core, each ONNX Runtime with 1 thread;
  includes starting Ray and loading the model in each worker).

Prints wall seconds, frames per second over all videos, and the tracking time the
jobs report (their own ``seconds``, summed). Both write the same outputs (--json and --masks-dir).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time


def cut_clips(video: str, folder: pathlib.Path, n: int, frames: int) -> list[pathlib.Path]:
    from sam2trt.video import OverlayVideoWriter, open_frames, probe

    info = probe(video)
    clips, writers = [], []
    for k in range(n):
        clips.append(folder / f"clip{k}.mp4")
        writers.append(OverlayVideoWriter(clips[-1], info.width, info.height, info.fps))
    with open_frames(video) as src:
        for idx, rgb in src:
            k = idx // frames
            if k >= n:
                break
            writers[k].write(rgb)
    for w in writers:
        w.close()
    return clips


def timed(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd[:6])} ... failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {"wall": wall, "frames": sum(r["frames"] for r in rows), "job_s": sum(r["seconds"] for r in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--model", required=True)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        tmp = pathlib.Path(tmp)
        clips = cut_clips(args.video, tmp, args.videos, args.frames)
        base = [sys.executable, "-m", "sam2trt.cli", "track", *map(str, clips), "--model", args.model,
                "--box", "250,215,36,97", "--json-summary", "--quiet"]
        runs: dict[str, list[dict]] = {"single": [], "ray": []}
        for r in range(args.repeat):
            for name, extra in (("single", ["--threads", "2"]),
                                ("ray", ["--ray", "local", "--ray-cpus-per-worker", "1"])):
                o = tmp / f"{name}{r}"
                runs[name].append(timed(base + extra + ["--json", f"{o}/{{stem}}.jsonl",
                                                        "--masks-dir", f"{o}/{{stem}}_m"]))
    print(f"{args.videos} videos x {args.frames} frames, median of {args.repeat}")
    print(f"{'run':8} {'wall s':>8} {'fps':>7} {'job s (sum)':>12}")
    for name, rs in runs.items():
        wall = statistics.median(x["wall"] for x in rs)
        frames = rs[0]["frames"]
        print(f"{name:8} {wall:8.1f} {frames / wall:7.3f} {statistics.median(x['job_s'] for x in rs):12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
