"""The runner interface shared by all backends (selection: :mod:`sam2trt.runtime.select`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Collection, Protocol

import numpy as np


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
    :class:`~sam2trt.runtime.cuda_memory.CudaTensor`, to feed back in);
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
    """The four module runners of one model, plus the backend that made them.

    ``preprocess``: optional runner of the preprocessing graph
    (:mod:`sam2trt.preprocess_graph`) on the backend's device:
    ``infer({"frame": uint8 [H, W, 3]}, keep=("image",)) -> {"image": [1, 3, S, S] float32}``;
    the runner supplies the resize weights for the frame's size itself. When
    ``None`` (ONNX Runtime), frames are preprocessed on the host with PIL
    (:func:`sam2trt.tracker.processing.preprocess_frame`), bit-exact with the
    official loader.

    A context manager: ``with ModuleRunners(...) as runners`` activates the
    four runners in module order, then ``preprocess`` (each field becomes what
    its ``__enter__`` returned), and closes them in reverse order on exit.
    Built around runners that are already active (wrappers, stand-ins), it is
    used without ``with``.
    """

    image_encoder: Runner
    memory_attention: Runner
    mask_decoder: Runner
    memory_encoder: Runner
    backend: str
    reason: str = ""
    preprocess: Runner | None = None
    _stack: contextlib.ExitStack | None = field(default=None, init=False, repr=False, compare=False)

    _ORDER = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder", "preprocess")

    def __enter__(self) -> "ModuleRunners":
        """Activate every runner; if one fails to open, close those already open and raise its error."""
        if self._stack is not None:
            raise RuntimeError("ModuleRunners entered twice")
        with contextlib.ExitStack() as stack:
            for name in self._ORDER:
                runner = getattr(self, name)
                if runner is not None:
                    setattr(self, name, stack.enter_context(runner))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        """Close the runners in reverse order (exceptions are not suppressed)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(*exc)
