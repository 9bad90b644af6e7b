#!/usr/bin/env python3
"""Side-by-side benchmark: the official SAM2VideoPredictor vs ``sam2trt track``.

Both run on the same machine, on the same JPEG frames, with the same weights
(one checkpoint file, seeded random weights unless --checkpoint is given),
the same box and the same CPU thread count. Each run is its own child
process, so peak RSS (``ru_maxrss`` from ``os.wait4``) is that run's alone.

Timed: from "here is the frame folder" to "the last frame's video-resolution
masks exist" -- the official ``init_state`` + ``add_new_points_or_box`` +
``propagate_in_video``; sam2trt's ``run_track`` (streaming decode, inference,
upsampling). Model loading is excluded on both sides.

    python scripts/bench_vs_official.py --video ../shared/videos/vtest.avi --lengths 30,150 --threads 2

Prints one table row per (tool, length), the fps ratio per length, and the
RSS growth from the shortest to the longest length.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

BOX = (250, 215, 36, 97)  # x, y, w, h: a pedestrian on frame 0 of vtest.avi


def extract_frames(video: str, n: int, folder: pathlib.Path) -> pathlib.Path:
    """First ``n`` frames of ``video`` as JPEGs ``00000.jpg ...`` (the official loader reads JPEG folders)."""
    from PIL import Image

    from sam2trt.video import open_frames

    folder.mkdir(parents=True, exist_ok=True)
    with open_frames(video) as src:
        for idx, rgb in src:
            if idx >= n:
                break
            Image.fromarray(rgb).save(folder / f"{idx:05d}.jpg", quality=95)
    return folder


def child_official(a) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    from sam2trt.export.exporter import build_model

    model = build_model(a.config, checkpoint=a.checkpoint)
    x, y, w, h = BOX
    t0 = time.perf_counter()
    n = 0
    with torch.inference_mode():
        state = model.init_state(a.frames)
        model.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=[x, y, x + w, y + h])
        for _ in model.propagate_in_video(state):
            n += 1
    return {"frames": n, "seconds": time.perf_counter() - t0}


def child_sam2trt(a) -> dict:
    from sam2trt.model_spec import load_model_spec
    from sam2trt.pipeline import TrackJob, run_track
    from sam2trt.runtime import open_runners
    from sam2trt.tracker import ObjectPrompt

    spec = load_model_spec(a.model)
    x, y, w, h = BOX
    with open_runners(spec, "onnxruntime", threads=a.threads) as runners:
        t0 = time.perf_counter()
        s = run_track(TrackJob(video=a.frames, prompts=[ObjectPrompt(1, 0, box=(x, y, x + w, y + h))]), spec, runners)
    return {"frames": s.frames, "seconds": time.perf_counter() - t0}


def run_child(args: list[str]) -> dict:
    """Run this script as a child; returns its JSON result plus its own peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="source video (frames are extracted to JPEG)")
    p.add_argument("--lengths", default="30,150", help="video lengths in frames, comma-separated")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--config", default="sam2.1_hiera_t")
    p.add_argument("--checkpoint", help="official checkpoint (default: seeded random weights)")
    p.add_argument("--workdir", help="keep frames/model here (default: a temporary folder)")
    p.add_argument("--tools", default="official,sam2trt", help="which side(s) to run, comma-separated")
    p.add_argument("--child", choices=["official", "sam2trt"], help=argparse.SUPPRESS)
    p.add_argument("--frames", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child_official(a) if a.child == "official" else child_sam2trt(a)))
        return

    from sam2trt.bench import machine_description

    work = pathlib.Path(a.workdir or tempfile.mkdtemp(prefix="sam2trt-vs-official-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = a.checkpoint
    if ckpt is None:
        import torch

        from sam2trt.export.exporter import build_model

        ckpt = str(work / "random.pt")
        if not os.path.exists(ckpt):
            torch.save({"model": build_model(a.config, seed=0).state_dict()}, ckpt)
    model_dir = work / "model"
    if not (model_dir / "model.json").exists():
        subprocess.run([sys.executable, "-m", "sam2trt.cli", "export", "--config", a.config, "--checkpoint", ckpt,
                        "--out", str(model_dir), "--no-verify"], check=True, stderr=subprocess.DEVNULL)
    m = machine_description()
    print(f"machine: {m['cpu']}, {m['cores']} cores; threads: {a.threads}; model: {a.config}; box {BOX}")
    print(f"{'tool':10s} {'frames':>6s} {'seconds':>9s} {'fps':>8s} {'peak RSS MiB':>13s}")
    rows = {}
    for n in [int(v) for v in a.lengths.split(",")]:
        frames = extract_frames(a.video, n, work / f"frames{n}")
        common = ["--frames", str(frames), "--threads", str(a.threads), "--config", a.config]
        for tool, extra in (("official", ["--checkpoint", ckpt]), ("sam2trt", ["--model", str(model_dir)])):
            if tool not in a.tools.split(","):
                continue
            r = run_child(["--child", tool, *common, *extra, "--video", a.video])
            r["fps"] = r["frames"] / r["seconds"]
            rows[tool, n] = r
            print(f"{tool:10s} {r['frames']:6d} {r['seconds']:9.1f} {r['fps']:8.3f} {r['peak_rss_mib']:13.0f}", flush=True)
        if ("official", n) in rows and ("sam2trt", n) in rows:
            ratio = rows["sam2trt", n]["fps"] / rows["official", n]["fps"]
            print(f"{'':10s} sam2trt / official fps at {n} frames: {ratio:.2f}x", flush=True)
    lengths = sorted({n for _, n in rows})
    if len(lengths) > 1:
        lo, hi = lengths[0], lengths[-1]
        for tool in sorted({t for t, _ in rows}):
            growth = rows[tool, hi]["peak_rss_mib"] / rows[tool, lo]["peak_rss_mib"] - 1
            print(f"{tool}: peak RSS at {hi} frames is {100 * growth:+.1f}% vs {lo} frames")


if __name__ == "__main__":
    main()
