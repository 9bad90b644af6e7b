"""Helpers shared by test modules (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import importlib
# ------------------------------------------------------------ TensorRT / engines (issue 9)
import contextlib
import functools
import pathlib
import time

import numpy as np
import pytest

from sam2trt import platform
from sam2trt.engine.compat import ENGINES_JSON, META_FORMAT
from sam2trt.platform import Environment, GpuInfo
from sam2trt.model_spec import MODULES
from sam2trt.runtime.base import ModuleRunners, to_host
from sam2trt.tracker import FrameStepper, ObjectPrompt, track_frames
from sam2trt.tracker.processing import upsample_logits
from sam2trt.video import open_frames

PROMPT = ObjectPrompt(obj_id=1, frame_idx=0, box=(250, 215, 286, 312))  # --box 250,215,36,97
VIDEO_HW = (576, 768)
NUM_FRAMES = 16
MIN_MEAN_IOU = 0.98


@functools.lru_cache(maxsize=None)
def trt_skip_reason() -> str | None:
    """Why the TensorRT GPU tests cannot run here, or None when TensorRT, cuda-python and a GPU exist."""
    try:
        importlib.import_module("tensorrt")
    except Exception:
        return "TensorRT is not installed (pip install 'sam2trt[trt]')"
    if platform.import_cudart() is None:
        return "cuda-python is not installed"
    if not platform.detect().gpus:
        return "no CUDA GPU is visible"
    return None


def needs_tensorrt_gpu(test):
    """Mark ``test`` as a GPU test, skipped (before any fixture runs) without TensorRT + cuda-python + a GPU."""
    reason = trt_skip_reason()
    return pytest.mark.gpu(pytest.mark.skipif(reason is not None, reason=reason or "")(test))


def link_model(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """A model folder of symlinks to ``src``'s ONNX and JSON files (new files written there stay there)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix in (".onnx", ".json") and not f.name.endswith(".fp16.onnx") and f.name != ENGINES_JSON:
            (dst / f.name).symlink_to(f)
    return dst


def fake_env(gpu="NVIDIA H100 80GB HBM3", cc="9.0", trt="10.3.0", cuda="12.4") -> Environment:
    """An :class:`Environment` as :func:`sam2trt.engine.platform.detect` would report it (None: absent)."""
    return Environment(gpus=[GpuInfo(gpu, cc, 79.6)] if gpu else [], driver_version="550.54.15",
                       cuda_runtime_version=cuda, tensorrt_version=trt,
                       tensorrt_major=int(trt.split(".")[0]) if trt else None,
                       onnxruntime_version="1.31.1", onnxruntime_providers=["CPUExecutionProvider"])


def engines_meta(onnx_sha: dict, **over) -> dict:
    """An ``engines.json`` record for the fake environment's GPU, with fields replaced by ``over``."""
    meta = {"format_version": META_FORMAT, "tensorrt_version": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0", "precision": "fp16", "max_objects": 8, "onnx_sha256": dict(onnx_sha)}
    meta.update(over)
    return meta


class ShapeRecorder:
    """Wraps a runner and records the shape of every input it is fed."""

    def __init__(self, runner, shapes: dict):
        self.runner, self.shapes, self.name = runner, shapes, runner.name

    def infer(self, feed, keep=()):
        for k, v in feed.items():
            self.shapes.setdefault((self.name, k), set()).add(to_host(v).shape)
        return self.runner.infer(feed, keep=keep)


def track_masks(spec, runners: dict, backend: str, frames_dir: pathlib.Path, max_frames: int,
                shapes: dict | None = None, num_frames: int = NUM_FRAMES,
                banks: dict | None = None) -> tuple[list[np.ndarray], float]:
    """Track :data:`PROMPT`; returns (per-frame ``[1, H, W]`` bool masks at video resolution, seconds).

    ``shapes``: a dict to receive the input shapes fed to each runner; ``banks``:
    a dict to receive the memory banks (by object id).
    """
    with contextlib.ExitStack() as stack:
        active = {name: stack.enter_context(runners[name]) for name in MODULES}
        if shapes is not None:
            active = {k: ShapeRecorder(v, shapes) for k, v in active.items()}
        stepper = FrameStepper(spec, ModuleRunners(**active, backend=backend))
        masks = []
        t0 = time.perf_counter()
        with open_frames(frames_dir) as frames:
            for out in track_frames(stepper, frames, [PROMPT], num_frames=num_frames, max_frames=max_frames,
                                    banks=banks):
                masks.append(upsample_logits(out.mask_logits, *VIDEO_HW) > 0)
        return masks, time.perf_counter() - t0


def mean_iou(a: list[np.ndarray], b: list[np.ndarray], label: str) -> float:
    """Mean per-frame IoU of two mask lists (printed per frame)."""
    ious = []
    for x, y in zip(a, b, strict=True):
        union = np.logical_or(x, y).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
    print(f"{label}: per-frame IoU " + " ".join(f"{v:.4f}" for v in ious) + f"; mean {np.mean(ious):.4f}")
    return float(np.mean(ious))
# ------------------------------------------------------------ end TensorRT / engines
