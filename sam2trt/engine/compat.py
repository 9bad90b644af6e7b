"""Whether a model folder's TensorRT engines can run on this machine.

Used by ``track --backend auto`` and ``doctor``; needs neither TensorRT nor a
GPU to answer "no" with the reason.
"""

from __future__ import annotations

import json

from sam2trt.model_spec import ModelSpec

ENGINES_JSON = "engines.json"


def engines_status(spec: ModelSpec) -> tuple[bool, str]:
    """``(usable, reason)`` for the TensorRT engines in ``spec.root``.

    ``usable`` is True only when ``engines.json`` exists, TensorRT and a CUDA GPU
    are present, and the engines were built for this GPU, this TensorRT version
    and the current ONNX files. ``reason`` is one sentence for the user.
    """
    path = spec.root / ENGINES_JSON
    if not path.is_file():
        return False, f"no TensorRT engines in {spec.root} (run `sam2trt build-engines {spec.root}` on a GPU machine)"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False, f"{path} is unreadable: rerun `sam2trt build-engines {spec.root} --force`"
    from sam2trt.engine.environment import detect

    env = detect()
    if env.tensorrt_version is None:
        return False, "TensorRT is not installed (pip install 'sam2trt[trt]' from NVIDIA's index)"
    if not env.gpus:
        return False, "no CUDA GPU is visible"
    from sam2trt.engine.build import check_engines_meta

    problem = check_engines_meta(spec, meta, env)
    if problem:
        return False, problem
    return True, "engines match this GPU and TensorRT"
