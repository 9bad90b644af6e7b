#!/usr/bin/env python3
"""Side-by-side benchmark: the official SAM2VideoPredictor vs ``sam2trt track``.

Both run on the same machine, on the same JPEG frames, with the same weights
(one checkpoint file, seeded random weights unless --checkpoint is given),
the same box and the same CPU thread count. Each run is its own child
process, so peak RSS (``ru_maxrss`` from ``os.wait4``) is that run's alone.

Timed: from "here is the frame folder" to "the last frame's video-resolution
masks exist" -- the official ``init_state`` + ``add_new_points_or_box`` +
``propagate_in_video``; sam2trt's ``run_track`` (streaming decode, inference,
upsampling). Model loading (and OpenVINO's compiling) is excluded on both sides.

    python scripts/bench_vs_official.py --video ../shared/videos/vtest.avi --lengths 30,150 --threads 2
    python scripts/bench_vs_official.py --video ../shared/videos/vtest.avi --lengths 30 --threads 2 \
        --tools official,sam2trt,openvino:fp32,openvino:bf16 --repeat 3

Tools: ``official``; ``sam2trt`` (ONNX Runtime fp32); ``openvino:fp32`` and
``openvino:bf16`` (sam2trt on ``--backend openvino --precision ...``). With
``--repeat N`` the tools run in turn N times per length (interleaved, so a
change in the machine's load hits them alike) and each row is the median run.

Prints one table row per (tool, length) with wall seconds, fps, CPU seconds per
frame (user + system, all threads: less sensitive to other processes than wall
time) and peak RSS; the fps ratio of each sam2trt tool to the official one per
length; the RSS growth from the shortest to the longest length; and, for the
sam2trt tools, per-module median / p90 latency (memory attention also at a full
memory bank: 7 memories and 16 object pointers). The load average is printed
before and after: the numbers are only as quiet as the machine.
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
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    n = 0
    with torch.inference_mode():
        state = model.init_state(a.frames)
        model.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=[x, y, x + w, y + h])
        for _ in model.propagate_in_video(state):
            n += 1
    return {"frames": n, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0}


class ModuleTimer:
    """Wraps a runner: records (seconds, input shapes) of every ``infer`` call."""

    def __init__(self, runner):
        self.runner, self.name, self.calls = runner, getattr(runner, "name", ""), []

    def infer(self, feed, keep=()):
        from sam2trt.runtime.base import to_host

        shapes = {k: to_host(v).shape for k, v in feed.items()}
        t0 = time.perf_counter()
        out = self.runner.infer(feed, keep=keep)
        self.calls.append((time.perf_counter() - t0, shapes))
        return out


def module_stats(calls) -> dict:
    """``{median_ms, p90_ms, calls}`` of (seconds, shapes) pairs (None when empty)."""
    import numpy as np

    t = np.asarray([c[0] for c in calls]) * 1000
    if not t.size:
        return {"median_ms": None, "p90_ms": None, "calls": 0}
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "calls": int(t.size)}


def child_sam2trt(a) -> dict:
    from sam2trt.model_spec import MODULES, load_model_spec
    from sam2trt.pipeline import TrackJob, run_track
    from sam2trt.runtime import ModuleRunners, open_runners
    from sam2trt.tracker import ObjectPrompt

    spec = load_model_spec(a.model)
    x, y, w, h = BOX
    with open_runners(spec, a.backend, threads=a.threads, precision=a.precision) as runners:
        timed = ModuleRunners(**{m: ModuleTimer(getattr(runners, m)) for m in MODULES}, backend=runners.backend)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        s = run_track(TrackJob(video=a.frames, prompts=[ObjectPrompt(1, 0, box=(x, y, x + w, y + h))]), spec, timed)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    modules = {m: module_stats(getattr(timed, m).calls) for m in MODULES}
    full = [c for c in timed.memory_attention.calls
            if c[1]["maskmem_features"][1] == spec.num_maskmem and c[1]["obj_ptrs"][1] == spec.max_obj_ptrs_in_encoder]
    modules["memory_attention_full_bank"] = module_stats(full)
    return {"frames": s.frames, "seconds": seconds, "cpu_seconds": cpu, "modules": modules,
            "backend": f"{runners.backend} ({runners.reason})"}


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


TOOLS = {  # tool -> child arguments
    "official": ["--child", "official"],
    "sam2trt": ["--child", "sam2trt", "--backend", "onnxruntime"],
    "openvino:fp32": ["--child", "sam2trt", "--backend", "openvino", "--precision", "fp32"],
    "openvino:bf16": ["--child", "sam2trt", "--backend", "openvino", "--precision", "bf16"],
}


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def median_run(runs: list[dict]) -> dict:
    """The run with the median fps (lower middle for an even count), with every run's fps attached."""
    ranked = sorted(runs, key=lambda r: r["fps"])
    row = dict(ranked[(len(ranked) - 1) // 2])
    row["all_fps"] = [r["fps"] for r in runs]
    if all("modules" in r for r in runs):  # per module: the median of the runs' medians
        import numpy as np

        row["modules"] = {}
        for m in runs[0]["modules"]:
            vals = {k: [r["modules"][m][k] for r in runs if r["modules"][m][k] is not None] for k in ("median_ms", "p90_ms")}
            row["modules"][m] = {k: (float(np.median(v)) if v else None) for k, v in vals.items()}
            row["modules"][m]["calls"] = runs[0]["modules"][m]["calls"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="source video (frames are extracted to JPEG)")
    p.add_argument("--lengths", default="30,150", help="video lengths in frames, comma-separated")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--config", default="sam2.1_hiera_t")
    p.add_argument("--checkpoint", help="official checkpoint (default: seeded random weights)")
    p.add_argument("--workdir", help="keep frames/model here (default: a temporary folder)")
    p.add_argument("--tools", default="official,sam2trt",
                   help=f"which tools to run, comma-separated: {', '.join(TOOLS)}")
    p.add_argument("--repeat", type=int, default=1, help="runs per tool and length (median reported)")
    p.add_argument("--json", dest="json_out", help="also write every run to this JSON file")
    p.add_argument("--child", choices=["official", "sam2trt"], help=argparse.SUPPRESS)
    p.add_argument("--frames", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="onnxruntime", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child_official(a) if a.child == "official" else child_sam2trt(a)))
        return
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tools {unknown}: use {', '.join(TOOLS)}")

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
    print(f"machine: {m['cpu']}, {m['cores']} cores; threads: {a.threads}; model: {a.config}; box {BOX}; "
          f"repeat {a.repeat}; load average at start: {load_average()}")
    print(f"{'tool':14s} {'frames':>6s} {'seconds':>9s} {'fps':>8s} {'CPU s/frame':>12s} {'peak RSS MiB':>13s}  runs' fps")
    rows, every = {}, []
    for n in [int(v) for v in a.lengths.split(",")]:
        frames = extract_frames(a.video, n, work / f"frames{n}")
        common = ["--frames", str(frames), "--threads", str(a.threads), "--config", a.config, "--video", a.video]
        runs: dict[str, list] = {t: [] for t in tools}
        for _ in range(a.repeat):
            for tool in tools:
                extra = ["--checkpoint", ckpt] if tool == "official" else ["--model", str(model_dir)]
                r = run_child([*TOOLS[tool], *common, *extra])
                r["fps"] = r["frames"] / r["seconds"]
                r.update(tool=tool, length=n)
                runs[tool].append(r)
                every.append(r)
        for tool in tools:
            r = rows[tool, n] = median_run(runs[tool])
            print(f"{tool:14s} {r['frames']:6d} {r['seconds']:9.1f} {r['fps']:8.3f} {r['cpu_seconds'] / r['frames']:12.2f} "
                  f"{r['peak_rss_mib']:13.0f}  {' '.join(f'{v:.3f}' for v in r['all_fps'])}", flush=True)
        if "official" in tools:
            for tool in tools:
                if tool != "official":
                    ratio = rows[tool, n]["fps"] / rows["official", n]["fps"]
                    print(f"{'':14s} {tool} / official fps at {n} frames: {ratio:.2f}x", flush=True)
    lengths = sorted({n for _, n in rows})
    if len(lengths) > 1:
        lo, hi = lengths[0], lengths[-1]
        for tool in tools:
            growth = rows[tool, hi]["peak_rss_mib"] / rows[tool, lo]["peak_rss_mib"] - 1
            print(f"{tool}: peak RSS at {hi} frames is {100 * growth:+.1f}% vs {lo} frames")
    for (tool, n), r in rows.items():
        if "modules" not in r:
            continue
        print(f"{tool} at {n} frames, {r['backend']}: per-module median / p90 ms (median of {a.repeat} runs)")
        for name, v in r["modules"].items():
            if v["median_ms"] is not None:
                print(f"  {name:27s} {v['median_ms']:9.1f} {v['p90_ms']:9.1f}   ({v['calls']} calls)")
    print(f"load average at end: {load_average()}")
    if a.json_out:
        pathlib.Path(a.json_out).write_text(json.dumps(every, indent=1))


if __name__ == "__main__":
    main()
