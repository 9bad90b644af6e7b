"""The ``sam2trt eval`` and ``sam2trt verify`` commands (registered on the typer app in :mod:`sam2trt.cli`).

``eval``: DAVIS 2017 J&F of results against ground truth (:mod:`sam2trt.metrics`).
``verify``: a backend and precision against ONNX Runtime fp32 on one video (:mod:`sam2trt.verify`).
Exit codes as :mod:`sam2trt.errors`; docs/eval.md describes both.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import List, Optional

import typer

from sam2trt.errors import BelowThreshold, UsageError
from sam2trt.metrics.evaluate import evaluate
from sam2trt.metrics.report import report_csv, report_json, report_table
from sam2trt.model_spec import load_model_spec
from sam2trt.runtime.select import check_threads
from sam2trt.tracker.prompts import build_prompts, load_mask_png
from sam2trt.verify import DEFAULT_MIN_JF, check_verify_precision
from sam2trt.verify import verify as verify_backend


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def eval_command(
    pred: pathlib.Path = typer.Argument(..., metavar="PRED", help="results: a folder of indexed PNGs (track "
                                        "--masks-dir), a COCO RLE .json (track --coco), or a folder of sequences"),
    gt: pathlib.Path = typer.Argument(..., metavar="GT", help="ground truth in the same forms (the DAVIS "
                                      "Annotations/480p/<sequence> layout, 255 = void)"),
    all_frames: bool = typer.Option(False, "--all-frames", help="count every frame (parity); default: leave out "
                                    "the first and the last frame (DAVIS semi-supervised)"),
    void_as_background: bool = typer.Option(False, "--void-as-background", help="count void (255) ground-truth "
                                            "pixels as background, as the official semi-supervised script does"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    as_csv: bool = typer.Option(False, "--csv", help="print CSV rows (per object, per video, global) instead of a table"),
):
    """DAVIS 2017 J&F of PRED against GT: J, F (Mean, Recall, Decay) and J&F-Mean per object, per video and overall.

    Always recomputed from the masks (no results file is read or written).
    Exit 2: --json with --csv; exit 3: a missing or unreadable file, missing
    frames, frames of different sizes, or result ids the ground truth lacks (docs/eval.md).
    """
    if as_json and as_csv:
        raise UsageError("--json and --csv both given: choose one output form")
    report = evaluate(pred, gt, all_frames=all_frames, void_as_background=void_as_background)
    if as_json:
        print(json.dumps(report_json(report)))
    elif as_csv:
        print(report_csv(report), end="")
    else:
        from rich.console import Console

        Console().print(report_table(report))


def verify_command(
    model: pathlib.Path = typer.Argument(..., metavar="MODEL", help="model folder from `sam2trt export`"),
    video: str = typer.Argument(..., metavar="VIDEO", help="video file or folder of JPEG/PNG frames"),
    box: List[str] = typer.Option([], "--box", metavar="X,Y,W,H", help="box as in track (prefix ID:, @FRAME: or "
                                          "ID@FRAME:; repeat for more objects)"),
    point: List[str] = typer.Option([], "--point", metavar="X,Y[,L]", help="click as in track (repeat for more clicks)"),
    mask: List[str] = typer.Option([], "--mask", metavar="PNG", help="initial mask as in track (repeat for more objects)"),
    prompt_frame: int = typer.Option(0, help="frame index of prompts given without @FRAME"),
    backend: str = typer.Option(..., help="the backend under test: onnxruntime | openvino | tensorrt"),
    precision: Optional[str] = typer.Option(None, help="onnxruntime: fp16 (default) | fp32; openvino: auto "
                                            "(default) | fp32 | bf16; tensorrt: the engines' precision"),
    frames: int = typer.Option(20, help="frames tracked forward from the earliest prompt frame, by each run"),
    min_jf: float = typer.Option(DEFAULT_MIN_JF, "--min-jf", help="the bar: exit 7 when J&F (all frames) is below it"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ONNX Runtime or OpenVINO"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of the line"),
):
    """Track the same prompts with the backend/precision under test and with ONNX Runtime fp32; compare with J&F.

    Prints J&F over every frame and the worst frame-object IoU (its frame and
    object); exits 7 when J&F is below --min-jf (docs/eval.md).
    """
    check_threads(threads)
    if not (box or point or mask):
        raise UsageError("no objects: give at least one --box x,y,w,h, --point x,y or --mask PNG")
    if not min_jf >= 0:
        raise UsageError(f"--min-jf {min_jf} must be >= 0 (J&F is in 0..1; above 1 always fails)")
    check_verify_precision(backend, precision)  # a bad name is a usage error before the model loads
    prompts = build_prompts(box, point, mask, prompt_frame, load_mask=load_mask_png)
    spec = load_model_spec(model)
    result = verify_backend(spec, video, prompts, backend=backend, precision=precision, frames=frames,
                            threads=threads, log=_err)
    measured = result.as_dict()
    passed = measured["J&F-Mean"] >= min_jf
    print(json.dumps({**measured, "min_jf": min_jf, "passed": passed}) if as_json else f"verify: {result.line()}",
          flush=True)
    if not passed:
        raise BelowThreshold(f"J&F {measured['J&F-Mean']:.5f} of {result.tested} against {result.reference} is below "
                             f"--min-jf {min_jf}: use a higher precision for this model and video, or report it")
