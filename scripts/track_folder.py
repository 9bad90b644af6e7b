#!/usr/bin/env python3
"""Track every video in a folder from a CSV of boxes, on the workers of a Ray cluster (a thin example).

    python scripts/track_folder.py VIDEOS_DIR --boxes boxes.csv --model engines/sam2.1_hiera_t \\
        --out results/ [--ray auto|local|HOST:PORT] [--max-frames N] [--direction both|forward|backward] \\
        [-- EXTRA TRACK ARGS]

``boxes.csv`` has a header and ``video,box`` rows (see scripts/boxes_example.csv):
``video`` is a file or frame-folder name in VIDEOS_DIR (with or without its
extension), ``box`` is ``x,y,w,h`` (quoted, it has commas), optionally with the
``ID@FRAME:`` prefix of ``--box``. Several rows for one video = several objects.

The script only writes the manifest ``OUT/jobs.csv`` (one row per video) and runs

    sam2trt track --manifest OUT/jobs.csv --ray ADDRESS --json-summary --skip-existing \\
        --out 'OUT/{stem}.mp4' --masks-dir 'OUT/{stem}_masks' --json 'OUT/{stem}.jsonl' --coco 'OUT/{stem}.coco.json'

which hands the videos to one worker per GPU (or per node, on CPU nodes) as
they free up, retries a video whose worker died, and streams one JSON summary
line per video, collected into ``OUT/summary.jsonl`` and printed on stdout.
Run it again after a crash or Ctrl-C: finished videos are skipped. Exit code:
that of ``sam2trt track`` (docs/cli.md: exit codes).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import signal
import subprocess
import sys

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
    ap.add_argument("--model", type=pathlib.Path, required=True, help="model folder (the same path on every node)")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="output folder (on storage every node sees)")
    ap.add_argument("--ray", default="auto", help="auto (a running cluster), local (a private instance) or HOST:PORT")
    ap.add_argument("--max-frames", type=int, default=None,
                    help="track at most this many frames per video in each direction")
    ap.add_argument("--direction", choices=("both", "forward", "backward"), default=None,
                    help="as `sam2trt track --direction` (default: both, forward and backward from the box's frame)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # more `sam2trt track` options, after --
    args = ap.parse_args(argv[:len(argv) - len(extra) - 1] if "--" in argv else argv)

    boxes = read_boxes(args.boxes)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "jobs.csv"
    rows = 0
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["input", "box"])
        for v in find_videos(args.videos):
            b = boxes.get(v.name) or boxes.get(v.stem)
            if b:
                writer.writerow([str(v.resolve()), ";".join(b)])
                rows += 1
            else:
                print(f"warning: no box for {v.name} in {args.boxes}: not tracked", file=sys.stderr)
    if not rows:
        print(f"error: no video in {args.videos} has a box in {args.boxes}: add video,box rows", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "sam2trt.cli", "track", "--manifest", str(manifest), "--model", str(args.model),
           "--ray", args.ray, "--json-summary", "--skip-existing",
           "--out", str(out / "{stem}.mp4"), "--masks-dir", str(out / "{stem}_masks"),
           "--json", str(out / "{stem}.jsonl"), "--coco", str(out / "{stem}.coco.json")]
    if args.max_frames:
        cmd += ["--max-frames", str(args.max_frames)]
    if args.direction:
        cmd += ["--direction", args.direction]
    proc = subprocess.Popen(cmd + extra, stdout=subprocess.PIPE, text=True)  # stderr passes through
    with open(out / "summary.jsonl", "w", encoding="utf-8") as f:
        def copy():
            for line in proc.stdout:  # one line per video, as each finishes
                f.write(line)
                f.flush()
                print(line, end="", flush=True)
        try:
            copy()
        except KeyboardInterrupt:  # Ctrl-C reached sam2trt too: it closes the outputs and reports, exit 130
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            copy()
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
