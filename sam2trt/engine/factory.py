"""Making TensorRT objects, for the builder (:mod:`sam2trt.engine.build`) and the runner
(:mod:`sam2trt.runtime.tensorrt_backend`) alike: importing ``tensorrt`` with the
install hint, and calling its factories with TensorRT's "created nothing" turned
into a one-line error.

``tensorrt`` is imported only when :func:`import_tensorrt` is called.
"""

from __future__ import annotations

from sam2trt.errors import EnvironmentMissing, RuntimeFailure
from sam2trt.platform import TRT_INSTALL_HINT


def import_tensorrt():
    """The ``tensorrt`` module.

    Raises:
        EnvironmentMissing: TensorRT is not installed (exit 5).
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise EnvironmentMissing(f"TensorRT is not installed: {TRT_INSTALL_HINT}; "
                                 "or track with --backend onnxruntime") from None
    return trt


def create_trt_object(factory, *args, what: str):
    """``factory(*args)`` for a TensorRT object (``trt.Builder``, ``trt.Runtime``, ``trt.OnnxParser``).

    Returns:
        The new object.
    Raises:
        RuntimeFailure: one line (exit 4) when TensorRT creates nothing: the
            bindings then raise ``TypeError("pybind11::init(): factory function
            returned nullptr")`` (no usable CUDA driver or GPU, out of memory).
    """
    try:
        return factory(*args)
    except TypeError as e:
        if "nullptr" not in str(e):
            raise
        raise RuntimeFailure(f"TensorRT could not create its {what} (see the TensorRT log above): "
                             "check the GPU and driver with `sam2trt doctor`") from None
