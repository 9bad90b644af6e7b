"""``sam2trt verify``: is a backend and precision faithful to the fp32 reference on this machine?

Tracks the same prompts over the same frames twice with
:func:`sam2trt.pipeline.run_track`: first with the backend and precision
under test (so one that cannot run here fails at once), then with the
reference, ONNX Runtime fp32 on the CPU; both
write COCO RLE results (:mod:`sam2trt.video.coco`) to a temporary folder,
removed afterwards. The masks under test are then scored against the
reference's as ground truth with DAVIS 2017 J&F over every frame
(:func:`sam2trt.metrics.evaluate.evaluate`, ``all_frames=True``), and the
lowest frame-object J (IoU) is named. The gate is ``J&F-Mean >= min_jf``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sam2trt.engine.compat import read_engines_meta
from sam2trt.errors import UsageError
from sam2trt.metrics.evaluate import EvalReport, evaluate
from sam2trt.model_spec import ModelSpec
from sam2trt.pipeline import TrackJob, run_track
from sam2trt.runtime.base import ModuleRunners
from sam2trt.runtime.onnxruntime_backend import make_runners as onnxruntime_runners
from sam2trt.runtime.openvino_backend import PRECISIONS as OPENVINO_PRECISIONS
from sam2trt.runtime.select import open_runners
from sam2trt.tracker import ObjectPrompt

DEFAULT_MIN_JF = 0.98
"""The default bar of ``verify --min-jf``: the mean-IoU bar the parity tests hold reduced precision to."""

PRECISIONS = {"onnxruntime": ("fp32", "fp16"), "openvino": tuple(OPENVINO_PRECISIONS), "tensorrt": ("fp32", "fp16")}
"""The precisions ``verify --precision`` accepts per backend (TensorRT: the one its engines were built with)."""


@dataclass
class VerifyResult:
    """What :func:`verify` measured: the report (:class:`~sam2trt.metrics.evaluate.EvalReport`, every frame),
    the runs' labels (``"onnxruntime fp32"``, ``"openvino bf16"``...), frames tracked and seconds per run."""

    report: EvalReport
    tested: str
    reference: str
    frames: int
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready: tested, reference, frames, objects, ``J&F-Mean``, ``J-Mean``, ``F-Mean``, worst
        (``{"object", "frame", "J", "F"}``) and seconds per run."""
        s, worst = self.report.summary(), dict(self.report.worst())
        worst.pop("video", None)
        return {"tested": self.tested, "reference": self.reference, "frames": self.frames,
                "objects": [o.obj_id for o in self.report.videos[0].objects], "J&F-Mean": s["J&F-Mean"],
                "J-Mean": s["J-Mean"], "F-Mean": s["F-Mean"], "worst": worst,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}

    def line(self) -> str:
        """One line: ``<tested> vs <reference>, N frames, K objects: J&F x (J x, F x); worst IoU x at frame f object o``."""
        d = self.as_dict()
        w = d["worst"]
        return (f"{d['tested']} vs {d['reference']}, {d['frames']} frames, {len(d['objects'])} object(s): "
                f"J&F {d['J&F-Mean']:.5f} (J {d['J-Mean']:.5f}, F {d['F-Mean']:.5f}); "
                f"worst IoU {w['J']:.5f} at frame {w['frame']} object {w['object']}")


def check_verify_precision(backend: str, precision: str | None, engines_precision: str | None = None) -> str:
    """The precision to test: ``precision`` checked against ``backend``, or the backend's default.

    Defaults: ONNX Runtime fp16 (the ``.fp16.onnx`` files), OpenVINO ``auto``,
    TensorRT ``engines_precision`` (what ``engines.json`` records; fp16 when unknown).

    Raises:
        UsageError: ``backend`` is not onnxruntime, openvino or tensorrt; ``precision``
            is not one of :data:`PRECISIONS` for it, or not the TensorRT engines' precision.
    """
    if backend not in PRECISIONS:
        raise UsageError(f"--backend {backend!r}: verify tests one of {', '.join(PRECISIONS)}")
    default = {"onnxruntime": "fp16", "openvino": "auto", "tensorrt": engines_precision or "fp16"}[backend]
    precision = precision or default
    if precision not in PRECISIONS[backend]:
        raise UsageError(f"--precision {precision!r} for --backend {backend}: use one of {', '.join(PRECISIONS[backend])}")
    if backend == "tensorrt" and engines_precision is not None and precision != engines_precision:
        raise UsageError(f"--precision {precision}: the TensorRT engines are {engines_precision}; rebuild them with "
                         f"`sam2trt build-engines MODEL --precision {precision}`, or drop --precision")
    return precision


@contextlib.contextmanager
def open_run_runners(spec: ModelSpec, backend: str, precision: str, threads: int | None = None):
    """Activated :class:`~sam2trt.runtime.base.ModuleRunners` of one run (a context manager).

    ONNX Runtime fp32 or fp16 (:func:`sam2trt.runtime.onnxruntime_backend.make_runners`),
    else :func:`sam2trt.runtime.select.open_runners` (OpenVINO with its precision, TensorRT).
    """
    if backend == "onnxruntime":
        made = onnxruntime_runners(spec, threads=threads, precision=precision)
        with ModuleRunners(**made, backend="onnxruntime", reason=f"{precision} ONNX") as active:
            yield active
    else:
        with open_runners(spec, backend, threads=threads,
                          precision=precision if backend == "openvino" else None) as active:
            yield active


def verify(spec: ModelSpec, video: str, prompts: list[ObjectPrompt], *, backend: str, precision: str | None = None,
           frames: int = 20, threads: int | None = None, log: Callable[[str], None] | None = None,
           open_run: Callable | None = None) -> VerifyResult:
    """Track ``frames`` frames forward from the earliest prompt with the reference and with ``backend``/``precision``.

    Args:
        spec: the model folder.
        video: video file or frame folder.
        prompts: the objects' prompts (video pixels, as :class:`~sam2trt.pipeline.TrackJob`).
        backend, precision: the run under test (:func:`check_verify_precision`).
        frames: frames tracked by each run (>= 1).
        threads: CPU threads of ONNX Runtime / OpenVINO.
        log: called with a line as each run starts and once its runners are open (the backend's reason,
            e.g. the precision OpenVINO ``auto`` resolved to).
        open_run: ``(spec, backend, precision, threads) -> context manager of ModuleRunners``
            (default :func:`open_run_runners`; tests pass stand-ins).

    Returns:
        :class:`VerifyResult`; the caller applies the bar (:class:`~sam2trt.errors.BelowThreshold`).

    Raises:
        UsageError, InputError, ModelError, RuntimeFailure, EnvironmentMissing: as ``track``.
    """
    if frames < 1:
        raise UsageError(f"--frames {frames} must be at least 1")
    built = (read_engines_meta(spec) or {}).get("precision") if backend == "tensorrt" else None
    precision = check_verify_precision(backend, precision, built)
    open_run = open_run or open_run_runners
    # the run under test first: a backend that cannot run here fails before the slow CPU reference
    runs = {"tested": (backend, precision), "reference": ("onnxruntime", "fp32")}
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="sam2trt-verify-") as tmp:
        for name, (run_backend, run_precision) in runs.items():
            if log:
                log(f"verify: tracking {frames} frames with {run_backend} {run_precision} ({name})")
            job = TrackJob(video=str(video), prompts=prompts, max_frames=frames, coco=str(Path(tmp) / f"{name}.json"),
                           direction="forward", input_files=(str(video),))
            t0 = time.perf_counter()
            with open_run(spec, run_backend, run_precision, threads) as runners:
                if log:
                    log(f"verify: {name} on {runners.backend} ({runners.reason})")
                summary = run_track(job, spec, runners)  # raises on failure
            seconds[name] = time.perf_counter() - t0
        report = evaluate(Path(tmp) / "tested.json", Path(tmp) / "reference.json", all_frames=True)
    return VerifyResult(report, f"{backend} {precision}", "onnxruntime fp32", summary.frames, seconds)
