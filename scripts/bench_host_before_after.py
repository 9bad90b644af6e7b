#!/usr/bin/env python3
"""Host side before and after issue #11, in one run: the track pipeline with instant module runners.

"before" is the pipeline of commit BASE (default 109e5e3: PIL preprocessing in one
reader thread, one writer thread for every output), checked out in a temporary git
worktree, with today's null runners copied in and no preprocessing module (so the
host preprocesses, as it did then). "after" is today's ``sam2trt bench --host-only``
(preprocessing as a device module, stages in threads). Each configuration runs
``--repeat`` times, alternating with the decode + libx264 re-encode floor; medians
are printed.

    python scripts/bench_host_before_after.py ../shared/videos/vtest.avi --frames 300 --repeat 2

Prints one table per configuration; ratios are to the floor measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

BEFORE = r'''
import json, os, sys, tempfile, time
from sam2trt.bench import spread_boxes
from sam2trt.pipeline import TrackJob, run_track
from sam2trt.runtime import ModuleRunners
from sam2trt.runtime.null_backend import host_only_spec, make_runners
from sam2trt.tracker import ObjectPrompt
from sam2trt.video import probe
video, frames, objects, outs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
info = probe(video)
spec = host_only_spec()
prompts = [ObjectPrompt(i + 1, 0, box=b) for i, b in enumerate(spread_boxes(objects, info.width, info.height))]
names = {"out": "o.mp4", "json": "t.jsonl", "masks_dir": "masks", "coco": "c.json"}
with tempfile.TemporaryDirectory() as tmp:
    runners = ModuleRunners(**make_runners(spec), backend="null")
    job = TrackJob(video=video, prompts=prompts, max_frames=frames, **{k: os.path.join(tmp, names[k]) for k in outs})
    w0, c0 = time.perf_counter(), time.process_time()
    s = run_track(job, spec, runners)
    w, c = time.perf_counter() - w0, time.process_time() - c0
print(json.dumps({"frames": s.frames, "wall_s": w, "cpu_s": c}))
'''


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--base", default="109e5e3")
    ap.add_argument("--configs", default="out,json:1;out,json:4;out,json,masks_dir,coco:1",
                    help="OUTPUTS:OBJECTS;... (outputs comma-separated)")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="sam2trt-before-"))
    old = tmp / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.base], check=True)
    try:
        shutil.copy(ROOT / "sam2trt" / "runtime" / "null_backend.py", old / "sam2trt" / "runtime" / "null_backend.py")
        (tmp / "before.py").write_text(BEFORE)
        env_old = {**os.environ, "PYTHONPATH": str(old)}
        env_new = {**os.environ, "PYTHONPATH": str(ROOT)}
        for config in args.configs.split(";"):
            outputs, objects = config.split(":")
            rows: dict[str, list] = {"floor": [], "before": [], "after": []}
            for _ in range(args.repeat):
                after = run_json([sys.executable, "-m", "sam2trt.cli", "bench", "--host-only", "--video", args.video,
                                  "--frames", str(args.frames), "--objects", objects, "--outputs", outputs, "--json"],
                                 env_new)
                f = after["floor"]
                rows["floor"].append((f["wall_s"], f["cpu_s"], f["frames"], None))
                rows["after"].append((after["wall_s"], after["cpu_s"], after["frames"], after["serial_ms_per_frame"]))
                b = run_json([sys.executable, str(tmp / "before.py"), args.video, str(args.frames), objects, outputs],
                             env_old)
                rows["before"].append((b["wall_s"], b["cpu_s"], b["frames"], None))
            floor_w = statistics.median(r[0] for r in rows["floor"])
            floor_c = statistics.median(r[1] for r in rows["floor"])
            print(f"\n{objects} object(s), outputs {outputs}, {args.frames} frames of {args.video} "
                  f"(median of {args.repeat})")
            print(f"{'':8s} {'wall s':>8s} {'fps':>7s} {'CPU ms/frame':>13s} {'wall/floor':>11s} {'CPU/floor':>10s}"
                  f" {'serial ms':>10s}")
            for name, rs in rows.items():
                w = statistics.median(r[0] for r in rs)
                c = statistics.median(r[1] for r in rs)
                n = rs[0][2]
                serial = statistics.median(r[3] for r in rs) if rs[0][3] is not None else None
                print(f"{name:8s} {w:8.2f} {n / w:7.1f} {1000 * c / n:13.1f} {w / floor_w:11.2f} {c / floor_c:10.2f}"
                      f" {'' if serial is None else f'{serial:10.2f}'}")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
