#!/usr/bin/env python3
"""Export and briefly track every advertised config, through the real CLI (not run in CI).

    python scripts/export_all_configs.py [--configs sam2_hiera_t,sam2.1_hiera_l] [--max-frames 2]
        [--frames tests/data/vtest16] [--work DIR] [--keep] [--markdown]

For each config: ``sam2trt export --config C --random-weights`` (verification
on: every module is run in ONNX Runtime and compared with PyTorch), then
``sam2trt track FRAMES --box ... --max-frames N --backend onnxruntime``. Prints
one line per config: export ok, the largest verification |ONNX - PyTorch| per
module (over the checked shapes and outputs, from ``model.json``), track ok,
and the seconds each step took. Random weights: this checks that the export
and the tracker run for each architecture, not mask quality.

Model folders go under ``--work`` (default: a temporary folder) and are
deleted after each config unless ``--keep`` (large: ~0.9 GB for hiera_l).

Exit code: 0 when every config exported and tracked, else 1.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sam2trt.export.exporter import CONFIGS  # noqa: E402
from sam2trt.model_spec import MODEL_JSON, MODULES  # noqa: E402

SHORT = {"image_encoder": "image_enc", "memory_attention": "mem_attn", "mask_decoder": "mask_dec",
         "memory_encoder": "mem_enc"}


def cli(*args: str, timeout: float) -> tuple[int, str, float]:
    """Run ``python -m sam2trt.cli ARGS``; returns (exit code, stderr tail, seconds)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "sam2trt.cli", *args], capture_output=True, text=True,
                           timeout=timeout, cwd=ROOT)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        rc, err = 124, f"timed out after {timeout:.0f} s"
    lines = [line for line in err.splitlines() if line.strip() and "MergeShapeInfo" not in line]
    return rc, "\n".join(lines[-3:]), time.perf_counter() - t0


def run_config(config: str, work: pathlib.Path, frames: str, box: str, max_frames: int, timeout: float) -> dict:
    """Export ``config`` with random weights and track ``max_frames`` frames; returns a result row."""
    model = work / config
    row = {"config": config, "export_ok": False, "track_ok": False, "diffs": {}, "export_s": None, "track_s": None}
    rc, err, row["export_s"] = cli("export", "--config", config, "--random-weights", "--out", str(model),
                                   timeout=timeout)
    if rc != 0:
        row["error"] = f"export exit {rc}: {err}"
        return row
    meta = json.loads((model / MODEL_JSON).read_text())
    row["export_ok"] = True
    row["diffs"] = {m: max(meta["files"][m]["verify_max_abs_diff"].values()) for m in MODULES}
    row["inputs"] = {m: meta["files"][m]["inputs"] for m in MODULES}
    js = work / f"{config}.jsonl"
    rc, err, row["track_s"] = cli("track", frames, "--model", str(model), "--box", box, "--max-frames", str(max_frames),
                                  "--backend", "onnxruntime", "--json", str(js), "--quiet", timeout=timeout)
    if rc != 0:
        row["error"] = f"track exit {rc}: {err}"
        return row
    rows = [json.loads(line) for line in js.read_text().splitlines()]
    row["track_ok"] = len(rows) == max_frames
    if not row["track_ok"]:
        row["error"] = f"track wrote {len(rows)} frames, expected {max_frames}"
    return row


def fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_rows(rows: list[dict], markdown: bool) -> None:
    head = ["config", "export", *[f"{SHORT[m]} max abs diff" for m in MODULES], "track", "export s", "track s"]
    table = [[r["config"], "ok" if r["export_ok"] else "FAIL", *[fmt(r["diffs"].get(m), ".1e") for m in MODULES],
              "ok" if r["track_ok"] else "FAIL", fmt(r["export_s"]), fmt(r["track_s"])] for r in rows]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for t in table:
            print("| " + " | ".join(t) + " |")
    else:
        widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
        for t in [head, *table]:
            print("  ".join(c.ljust(w) for c, w in zip(t, widths)))
    for r in rows:
        if r.get("error"):
            print(f"{r['config']}: {r['error']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated config names (default: all)")
    ap.add_argument("--frames", default=str(ROOT / "tests" / "data" / "vtest16"), help="video or frame folder")
    ap.add_argument("--box", default="250,215,36,97", help="x,y,w,h of the tracked object on frame 0")
    ap.add_argument("--max-frames", type=int, default=2, help="frames to track per config")
    ap.add_argument("--work", type=pathlib.Path, default=None, help="folder for the exported models")
    ap.add_argument("--keep", action="store_true", help="keep the exported model folders")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per export or track")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"error: unknown config {', '.join(unknown)}: use some of {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="sam2trt-configs-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for config in configs:
            row = run_config(config, work, args.frames, args.box, args.max_frames, args.timeout)
            rows.append(row)
            print(f"{config}: export {'ok' if row['export_ok'] else 'FAIL'} ({fmt(row['export_s'])} s), "
                  f"max|diff| {' '.join(f'{SHORT[m]}={v:.1e}' for m, v in row['diffs'].items())}, "
                  f"track {'ok' if row['track_ok'] else 'FAIL'} ({fmt(row['track_s'])} s)"
                  + (f" -- {row['error']}" if row.get("error") else ""), flush=True)
            if not args.keep:
                shutil.rmtree(work / config, ignore_errors=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_rows(rows, args.markdown)
    return 0 if rows and all(r["export_ok"] and r["track_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
