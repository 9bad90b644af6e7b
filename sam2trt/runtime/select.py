"""Backend selection: which backend runs a model folder here, and opening its four runners.

``auto`` picks TensorRT when :func:`sam2trt.engine.compat.engines_status`
says the folder's engines run on this machine, else ONNX Runtime. Asking for
``tensorrt`` where they cannot run raises the status's error: EnvironmentMissing
(exit 5) when this machine lacks TensorRT, cuda-python or a GPU, ModelError
(exit 3) when the engines are missing, stale or built for another GPU.

``openvino`` (:mod:`sam2trt.runtime.openvino_backend`) is used only when asked
for; ``auto`` never picks it (README: OpenVINO backend, "Why auto does not pick
OpenVINO"). Its ``--precision`` (auto, fp32, bf16) belongs to it alone:
:func:`check_precision`. Without OpenVINO installed, asking for it is
EnvironmentMissing (exit 5).

``sam2trt doctor`` (:func:`sam2trt.cli.doctor_lines`) reports this choice for a model folder.
"""

from __future__ import annotations

import contextlib
import os

from sam2trt.engine.compat import engines_status
from sam2trt.errors import UsageError
from sam2trt.model_spec import MODULES, ModelSpec
from sam2trt.platform import Environment
from sam2trt.runtime.base import ModuleRunners
from sam2trt.runtime.onnxruntime_backend import make_runners as onnxruntime_runners
from sam2trt.runtime.openvino_backend import PRECISIONS as OPENVINO_PRECISIONS
from sam2trt.runtime.openvino_backend import import_openvino
from sam2trt.runtime.openvino_backend import make_runners as openvino_runners
from sam2trt.runtime.tensorrt_backend import make_runners as tensorrt_runners

BACKENDS = ("auto", "onnxruntime", "tensorrt", "openvino")


def check_precision(backend: str, precision: str | None) -> None:
    """``--precision`` is the OpenVINO backend's option: raise :class:`UsageError` (exit 2) for another backend.

    ``precision`` None means not given. ``auto`` never picks OpenVINO, so ``--backend auto`` counts as another backend.
    An unknown precision is a UsageError too.
    """
    if precision is not None and precision not in OPENVINO_PRECISIONS:
        raise UsageError(f"--precision {precision!r}: use one of {', '.join(OPENVINO_PRECISIONS)}")
    if precision is not None and backend != "openvino":
        raise UsageError(f"--precision {precision} applies to --backend openvino only, not {backend}: "
                         "add --backend openvino or drop --precision")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> None:
    """``--threads`` must be 1..usable_cores(); raises :class:`UsageError` naming the limit."""
    if threads is None:
        return
    limit = usable_cores()
    if not 1 <= threads <= limit:
        raise UsageError(f"--threads {threads} is out of range: use 1..{limit} (the cores available here)")


def choose_backend(spec: ModelSpec, backend: str = "auto",
                   env: Environment | None = None) -> tuple[str, str]:
    """Pick the backend for ``spec``'s folder.

    Args:
        spec: the loaded model folder.
        backend: ``auto``, ``onnxruntime``, ``tensorrt`` or ``openvino``.
        env: a precomputed :func:`sam2trt.platform.detect` (default: detect when needed).

    Returns:
        ``(backend, reason)`` -- the reason is a short human-readable sentence.

    Raises:
        UsageError: unknown backend name (exit 2).
        sam2trt.errors.EnvironmentMissing: ``tensorrt`` asked for on a machine
            without TensorRT, cuda-python or a CUDA GPU, or ``openvino`` where
            OpenVINO is not installed (exit 5).
        sam2trt.errors.ModelError: ``tensorrt`` asked for, but the folder's
            engines are missing, stale or for another GPU (exit 3).
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        return backend, "asked for with --backend onnxruntime"
    if backend == "openvino":
        import_openvino()
        return backend, "asked for with --backend openvino"
    status = engines_status(spec, env)
    if backend == "tensorrt":
        if not status.usable:
            raise status.error()
        return "tensorrt", "asked for with --backend tensorrt"
    if status.usable:
        return "tensorrt", "TensorRT engines built for this GPU were found"
    return "onnxruntime", status.reason


@contextlib.contextmanager
def open_runners(spec: ModelSpec, backend: str = "auto", *, threads: int | None = None,
                 precision: str | None = None):
    """Open the four module runners of ``spec`` on one backend, and its preprocessing runner if any (a context manager).

    Args:
        spec: the loaded model folder.
        backend: ``auto``, ``onnxruntime``, ``tensorrt`` or ``openvino``.
        threads: intra-op threads for ONNX Runtime, inference threads for
            OpenVINO (default: all cores).
        precision: OpenVINO only (:func:`check_precision`): ``auto`` (default
            when None: bf16 where the CPU reports BF16), ``fp32`` or ``bf16``.

    Yields:
        :class:`~sam2trt.runtime.base.ModuleRunners`. On TensorRT with
        preprocessing engines (``build-engines`` since they exist),
        ``preprocess`` is a :class:`~sam2trt.runtime.tensorrt_backend.TensorRTPreprocess`:
        call its ``check_frame_size(height, width)`` before tracking a video
        (ModelError, exit 3, outside the engines' frame-size profile). ONNX
        Runtime has none (``preprocess`` is None): frames are preprocessed on
        the host with PIL, bit-exact and faster than the graph on a CPU.

    Raises:
        UsageError: ``precision`` given for another backend than ``openvino``.
        As :func:`choose_backend`, and what the runners raise when they open.
    """
    check_precision(backend, precision)
    chosen, reason = choose_backend(spec, backend)
    if chosen == "openvino":
        runners = openvino_runners(spec, threads=threads, precision=precision or "auto")
        first = runners[MODULES[0]]
        reason = f"{reason}; {first.precision}: {first.precision_reason}"
    else:
        make = tensorrt_runners if chosen == "tensorrt" else onnxruntime_runners
        runners = make(spec, threads=threads)
    with ModuleRunners(**{name: runners[name] for name in MODULES}, preprocess=runners.get("preprocess"),
                       backend=chosen, reason=reason) as active:
        yield active
