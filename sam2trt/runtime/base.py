"""The runner interface shared by all backends, and backend selection."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Collection, Protocol

import numpy as np

from sam2trt.errors import UsageError
from sam2trt.model_spec import MODULES, ModelSpec

BACKENDS = ("auto", "onnxruntime", "tensorrt")


class Runner(Protocol):
    """One module's inference session.

    A runner is a context manager that owns its session and buffers from
    ``__enter__`` to ``__exit__``. ``infer(feed, keep=())`` takes a feed of
    named inputs (shapes as in :mod:`sam2trt.export.modules`) and returns every
    output by name. An input is a float32/int32 NumPy array, a tensor an
    earlier call of the same model's runners returned, or a (nested) list of
    either, stacked along new leading axes (e.g. ``[B][T]`` memory frames of
    ``[Cm, H, W]`` each for ``maskmem_features``). Outputs named in ``keep`` may
    stay in the backend's memory (TensorRT: a GPU
    :class:`~sam2trt.runtime.tensorrt_backend.CudaTensor`, to feed back in);
    every other output is a NumPy array the caller may keep. Both kinds support
    ``t.shape``, ``t[i]`` (row ``i`` along axis 0) and ``np.asarray(t)``.
    """

    name: str

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc) -> None: ...

    def infer(self, feed: dict, keep: Collection[str] = ()) -> dict: ...


def to_host(value) -> np.ndarray:
    """A feed value as one host array: nested lists are stacked, device tensors downloaded.

    ``value``: an array, anything ``np.asarray`` takes (a kept device tensor), or a
    nested list of those with equal shapes. Returns the stacked NumPy array.
    """
    if isinstance(value, (list, tuple)):
        return np.stack([to_host(v) for v in value])
    return np.asarray(value)


@dataclass
class ModuleRunners:
    """The four module runners of one model, plus the backend that made them."""

    image_encoder: Runner
    memory_attention: Runner
    mask_decoder: Runner
    memory_encoder: Runner
    backend: str
    reason: str = ""


def choose_backend(spec: ModelSpec, backend: str = "auto") -> tuple[str, str]:
    """Pick the backend for ``spec``'s folder.

    ``auto`` picks TensorRT when engines compatible with this GPU and TensorRT
    exist in the model folder, else ONNX Runtime.

    Returns:
        ``(backend, reason)`` -- the reason is a short human-readable sentence.

    Raises:
        UsageError: unknown backend name.
        sam2trt.errors.ModelError: ``tensorrt`` asked for but unusable here.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        return backend, "asked for with --backend onnxruntime"
    from sam2trt.engine.compat import engines_status

    ok, why = engines_status(spec)
    if backend == "tensorrt":
        if not ok:
            from sam2trt.errors import ModelError

            raise ModelError(why)
        return "tensorrt", "asked for with --backend tensorrt"
    if ok:
        return "tensorrt", "TensorRT engines built for this GPU were found"
    return "onnxruntime", why


@contextlib.contextmanager
def open_runners(spec: ModelSpec, backend: str = "auto", *, threads: int | None = None):
    """Open the four module runners of ``spec`` on one backend (a context manager).

    Args:
        spec: the loaded model folder.
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``.
        threads: intra-op threads for ONNX Runtime (default: all cores).

    Yields:
        :class:`ModuleRunners`.
    """
    chosen, reason = choose_backend(spec, backend)
    if chosen == "tensorrt":
        from sam2trt.runtime.tensorrt_backend import make_runners
    else:
        from sam2trt.runtime.onnxruntime_backend import make_runners
    runners = make_runners(spec, threads=threads)
    with contextlib.ExitStack() as stack:
        active = {name: stack.enter_context(runners[name]) for name in MODULES}
        yield ModuleRunners(**active, backend=chosen, reason=reason)
