"""TensorRT backend: one deserialized engine per module, on pinned CUDA buffers.

Each :class:`TensorRTRunner` (a Polygraphy-style context manager) owns, from
``__enter__`` to ``__exit__``: the engine and one execution context, one CUDA
stream, and for every I/O tensor one device buffer (``cudaMalloc``) and one
pinned host buffer (``cudaMallocHost``) sized for the *largest* shape of the
engine's optimization profile, so nothing is allocated per call. ``infer``
copies the inputs into pinned memory, sets the input shapes, copies host to
device, runs ``execute_async_v3``, copies the outputs back and synchronizes
the stream once; the outputs are copied out of pinned memory before they are
returned, so callers may keep them.

Needs TensorRT (10 or 11) and cuda-python; both are imported when a runner is
activated, so importing this module works without them.

Not done yet (an honest limitation): tensors go back to the host after every
module. The image encoder features, memory-attention output and memory-bank
features could stay on the GPU between modules and frames, but the tracker
core (:mod:`sam2trt.tracker`) is NumPy and the runner interface returns host
arrays, so each frame pays the host round trips (about 40 MB per frame for
one object at 1024 px, most of it the image and the high-resolution features).
"""

from __future__ import annotations

import ctypes
import os
import pathlib

import numpy as np

from sam2trt.errors import EnvironmentMissing, ModelError, RuntimeFailure
from sam2trt.model_spec import MODULES, ModelSpec


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        from sam2trt.engine.environment import TRT_INSTALL_HINT

        raise EnvironmentMissing(f"TensorRT is not installed: {TRT_INSTALL_HINT}; "
                                 "or track with --backend onnxruntime") from None
    return trt


def _import_cudart():
    from sam2trt.engine.environment import import_cudart

    rt = import_cudart()
    if rt is None:
        raise EnvironmentMissing("cuda-python is not installed (the TensorRT backend needs it): "
                                 "pip install 'sam2trt[trt]' or pip install cuda-python")
    return rt


class TensorRTRunner:
    """Runs one module's TensorRT engine.

    Args:
        path: the ``.engine`` file written by ``sam2trt build-engines``.
        name: module name (default: the file stem).

    ``infer(feed)`` takes ``{input name: array}`` (shapes as in
    :mod:`sam2trt.export.modules`, within the engine's profile; arrays are
    converted to the engine's dtype, float32 or int32) and returns
    ``{output name: new float32 array}``.

    Raises (from ``__enter__``):
        EnvironmentMissing: TensorRT or cuda-python is not installed.
        ModelError: the engine file is missing or cannot be deserialized here
            (built for another GPU or TensorRT version).
        RuntimeFailure: a CUDA call failed (out of memory, no device).
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self.path = pathlib.Path(path)
        self.name = name or self.path.stem
        self._reset()

    def _reset(self) -> None:
        self.engine = self.context = self._runtime = self._logger = None
        self._stream = None
        self._device: dict[str, int] = {}
        self._host_ptr: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        self.max_shapes: dict[str, tuple[int, ...]] = {}
        self._static: dict[str, bool] = {}

    # -- CUDA helpers -------------------------------------------------------
    def _cuda(self, result, what: str):
        """Unpack a cuda-python ``(err, *values)`` tuple; raise RuntimeFailure on error."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            _, msg = self._rt.cudaGetErrorString(err)
            msg = msg.decode() if isinstance(msg, bytes) else str(msg)
            raise RuntimeFailure(f"{self.name}: CUDA {what} failed ({msg})")
        return values[0] if len(values) == 1 else values

    # -- lifecycle ------------------------------------------------------------
    def __enter__(self) -> "TensorRTRunner":
        trt = _import_trt()
        self._rt = _import_cudart()
        if not self.path.is_file():
            raise ModelError(f"{self.path} not found: run `sam2trt build-engines {self.path.parent}` on this GPU")
        try:
            self._setup(trt)
        except BaseException:
            self._release()
            raise
        return self

    def _setup(self, trt) -> None:
        rt = self._rt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelError(f"TensorRT cannot load {self.path} (built for another GPU or TensorRT?): "
                             f"rerun `sam2trt build-engines {self.path.parent} --force`")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeFailure(f"{self.name}: TensorRT could not create an execution context (GPU out of memory?)")
        self._stream = self._cuda(rt.cudaStreamCreate(), "cudaStreamCreate")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for n in names:
            is_input = self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
            (self.input_names if is_input else self.output_names).append(n)
            self.dtypes[n] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
        # Largest shapes: inputs from the profile, outputs from the context at those inputs.
        for n in self.input_names:
            shape = tuple(self.engine.get_tensor_shape(n))
            self._static[n] = -1 not in shape
            if not self._static[n]:
                shape = tuple(self.engine.get_tensor_profile_shape(n, 0)[2])
                if not self.context.set_input_shape(n, shape):
                    raise RuntimeFailure(f"{self.name}: TensorRT rejected the profile maximum {shape} of {n}")
            self.max_shapes[n] = shape
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise RuntimeFailure(f"{self.name}: output {n} has a data-dependent shape {shape}; not supported")
            self.max_shapes[n] = shape
        for n in names:
            nbytes = max(1, int(np.prod(self.max_shapes[n], dtype=np.int64)) * self.dtypes[n].itemsize)
            self._device[n] = int(self._cuda(rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes) for {n}"))
            self._host_ptr[n] = int(self._cuda(rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes} bytes) for {n}"))
            raw = (ctypes.c_uint8 * nbytes).from_address(self._host_ptr[n])
            self._host[n] = np.frombuffer(raw, dtype=np.uint8).view(self.dtypes[n])
            if not self.context.set_tensor_address(n, self._device[n]):
                raise RuntimeFailure(f"{self.name}: TensorRT rejected the buffer address of {n}")

    def _release(self) -> None:
        rt = getattr(self, "_rt", None)
        if rt is not None:
            if self._stream is not None:
                rt.cudaStreamSynchronize(self._stream)
            for ptr in self._device.values():
                rt.cudaFree(ptr)
            self._host.clear()  # numpy views must go before their pinned memory
            for ptr in self._host_ptr.values():
                rt.cudaFreeHost(ptr)
            if self._stream is not None:
                rt.cudaStreamDestroy(self._stream)
        # Context before engine before runtime (TensorRT's destruction order).
        self.context = None
        self.engine = None
        self._runtime = None
        self._reset()

    def __exit__(self, *exc) -> None:
        self._release()

    # -- inference --------------------------------------------------------------
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on ``feed``; returns every output by name (new arrays).

        Raises:
            RuntimeFailure: an input is missing, its shape is outside the engine's
                profile (e.g. more objects than ``--max-objects`` at build time),
                or TensorRT/CUDA fails.
        """
        if self.context is None:
            raise RuntimeFailure(f"{self.name}: runner used outside its `with` block")
        rt = self._rt
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for n in self.input_names:
            if n not in feed:
                raise RuntimeFailure(f"{self.name}: input {n} missing from the feed")
            arr = np.ascontiguousarray(feed[n], dtype=self.dtypes[n])
            if self._static[n]:
                if arr.shape != self.max_shapes[n]:
                    raise RuntimeFailure(f"{self.name}: input {n} has shape {arr.shape}, the engine takes "
                                         f"{self.max_shapes[n]}: rerun `sam2trt build-engines {self.path.parent} --force`")
            elif not self.context.set_input_shape(n, arr.shape) or arr.size > self._host[n].size:
                hi = self.max_shapes[n]
                if n.startswith("point_") and arr.ndim == len(hi) and arr.shape[1] > hi[1]:
                    raise RuntimeFailure(f"{self.name}: {arr.shape[1]} prompt points for one object, the engines take "
                                         f"at most {hi[1]} (a box counts as 2): give fewer points or --backend onnxruntime")
                raise RuntimeFailure(
                    f"{self.name}: input {n} of shape {arr.shape} is outside the engine profile (max {hi}): "
                    f"rebuild with `sam2trt build-engines {self.path.parent} --max-objects N --force`")
            self._host[n][:arr.size] = arr.reshape(-1)
            self._cuda(rt.cudaMemcpyAsync(self._device[n], self._host_ptr[n], arr.nbytes, h2d, self._stream),
                       f"copy of {n} to the GPU")
        shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.output_names}
        if not self.context.execute_async_v3(int(self._stream)):
            raise RuntimeFailure(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
        for n in self.output_names:
            nbytes = int(np.prod(shapes[n], dtype=np.int64)) * self.dtypes[n].itemsize
            self._cuda(rt.cudaMemcpyAsync(self._host_ptr[n], self._device[n], nbytes, d2h, self._stream),
                       f"copy of {n} from the GPU")
        self._cuda(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {n: self._host[n][:int(np.prod(shapes[n], dtype=np.int64))].reshape(shapes[n]).copy()
                for n in self.output_names}


def make_runners(spec: ModelSpec, threads: int | None = None) -> dict[str, TensorRTRunner]:
    """One (not yet activated) runner per module, on ``<model folder>/<module>.engine``.

    ``threads`` is accepted for interface parity with ONNX Runtime and ignored.
    """
    from sam2trt.engine.build import engine_paths

    paths = engine_paths(spec)
    return {name: TensorRTRunner(paths[name], name=name) for name in MODULES}
