"""Runtime backends: one runner per module, each a context manager with
``infer(feed, keep=()) -> dict`` (the Polygraphy runner shape; ``keep``
names outputs a device backend may leave in its memory).

- :mod:`sam2trt.runtime.base`                -- the runner interface, ``ModuleRunners`` (a context manager)
- :mod:`sam2trt.runtime.select`              -- backend choice, ``open_runners``
- :mod:`sam2trt.runtime.onnxruntime_backend` -- ONNX Runtime (CPU, default everywhere)
- :mod:`sam2trt.runtime.openvino_backend`    -- OpenVINO (CPU, fp32 or bf16; only when asked for)
- :mod:`sam2trt.runtime.tensorrt_backend`    -- TensorRT engine loader and runner
- :mod:`sam2trt.runtime.cuda_memory`         -- CUDA stream, block pool, device tensors
- :mod:`sam2trt.runtime.null_backend`        -- placeholder outputs for host-only runs

Heavy imports (onnxruntime, openvino, tensorrt, cuda) happen when a runner is
activated, so the CLI starts without them.
"""

from sam2trt.runtime.base import ModuleRunners, Runner
from sam2trt.runtime.select import open_runners

__all__ = ["ModuleRunners", "Runner", "open_runners"]
