#!/usr/bin/env python3
"""Track every video in a folder from a CSV of boxes, on several worker processes.

    python scripts/track_folder.py VIDEOS_DIR --boxes boxes.csv --model engines/sam2.1_hiera_t \\
        --out results/ [--workers 2] [--gpus 0,1] [--max-frames N] [-- EXTRA TRACK ARGS]

``boxes.csv`` has a header and ``video,box`` rows (see scripts/boxes_example.csv):
``video`` is a file or frame-folder name in VIDEOS_DIR (with or without its
extension), ``box`` is ``x,y,w,h`` (quoted, it has commas), optionally with the
``ID@FRAME:`` prefix of ``--box``. Several rows for one video = several objects.

The videos are dealt round-robin into one shard per worker. Each worker is one
``sam2trt track --manifest SHARD --json-summary`` process, so it loads the model
once for its whole shard. With ``--gpus 0,1`` worker i gets
``CUDA_VISIBLE_DEVICES=gpus[i % len(gpus)]``; on CPU each worker gets
``cores / workers`` ONNX Runtime threads. Per video, the results are
``OUT/{stem}.mp4``, ``OUT/{stem}_masks/``, ``OUT/{stem}.jsonl`` and
``OUT/{stem}.coco.json``; the workers' JSON summaries (one line per video)
are collected into ``OUT/summary.jsonl`` and printed on stdout.

Exit code: 0 when every video succeeded (or was skipped), else the first
non-zero exit code of a worker (2 usage, 3 input, 4 runtime, 130 interrupted).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}


def find_videos(folder: pathlib.Path) -> list[pathlib.Path]:
    """Video files and frame folders (sub-folders holding .jpg/.jpeg/.png) in ``folder``, by name."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            out.append(p)
        elif p.is_dir() and any(f.suffix.lower() in (".jpg", ".jpeg", ".png") for f in p.iterdir()):
            out.append(p)
    return out


def read_boxes(path: pathlib.Path) -> dict[str, list[str]]:
    """``{video name: [box, ...]}`` from a ``video,box`` CSV (header required)."""
    boxes: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not {"video", "box"} <= set(reader.fieldnames or []):
            sys.exit(f"error: {path} needs a header with video,box columns")
        for row in reader:
            if (row["video"] or "").strip():
                boxes.setdefault(row["video"].strip(), []).append(row["box"].strip())
    return boxes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", type=pathlib.Path, help="folder of videos and/or frame folders")
    ap.add_argument("--boxes", type=pathlib.Path, required=True, help="CSV with video,box rows")
    ap.add_argument("--model", type=pathlib.Path, required=True, help="model folder from `sam2trt export`")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="output folder")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (each loads the model once)")
    ap.add_argument("--gpus", default=None, help="comma-separated GPU ids, dealt to the workers round-robin")
    ap.add_argument("--max-frames", type=int, default=None, help="track at most this many frames per video")
    ap.add_argument("extra", nargs="*", help="more `sam2trt track` options, after --")
    args = ap.parse_args(argv)

    boxes = read_boxes(args.boxes)
    jobs = []
    for v in find_videos(args.videos):
        b = boxes.get(v.name) or boxes.get(v.stem)
        if b:
            jobs.append((v, b))
        else:
            print(f"warning: no box for {v.name} in {args.boxes}: not tracked", file=sys.stderr)
    if not jobs:
        print(f"error: no video in {args.videos} has a box in {args.boxes}", file=sys.stderr)
        return 2
    workers = max(1, min(args.workers, len(jobs)))
    gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else []
    args.out.mkdir(parents=True, exist_ok=True)
    outs = {"--out": "{stem}.mp4", "--masks-dir": "{stem}_masks", "--json": "{stem}.jsonl", "--coco": "{stem}.coco.json"}
    procs = []
    with tempfile.TemporaryDirectory(prefix="track_folder-") as tmp:
        for w in range(workers):
            shard = pathlib.Path(tmp) / f"shard{w}.csv"
            with open(shard, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["input", "box"])
                for v, b in jobs[w::workers]:
                    writer.writerow([str(v.resolve()), ";".join(b)])
            cmd = [sys.executable, "-m", "sam2trt.cli", "track", "--manifest", str(shard), "--model", str(args.model),
                   "--json-summary", "--quiet"]
            for opt, pattern in outs.items():
                cmd += [opt, str(args.out.resolve() / pattern)]
            if args.max_frames:
                cmd += ["--max-frames", str(args.max_frames)]
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[w % len(gpus)]
            elif "--threads" not in args.extra:
                cmd += ["--threads", str(max(1, (os.cpu_count() or 1) // workers))]
            procs.append(subprocess.Popen(cmd + args.extra, stdout=subprocess.PIPE, env=env, text=True))
        codes, lines = [], []
        for p in procs:  # stderr (progress, errors) passes through
            out, _ = p.communicate()
            codes.append(p.returncode)
            lines += [line for line in out.splitlines() if line.strip().startswith("{")]
    with open(args.out / "summary.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
            print(line)
    bad = [json.loads(line) for line in lines if json.loads(line)["status"] not in ("ok", "skipped")]
    print(f"{len(lines) - len(bad)} of {len(jobs)} videos ok; summaries in {args.out / 'summary.jsonl'}", file=sys.stderr)
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main())
