"""TensorRT backend: one runner per module engine, on the model's shared CUDA memory.

As in Polygraphy, loading and running are apart: :class:`EngineFromPath` is a
loader (a callable returning a deserialized ``ICudaEngine``), and
:class:`TensorRTRunner` takes an engine or a loader. The four runners of one
model share one :class:`~sam2trt.runtime.cuda_memory.CudaMemory` (stream and
pool of device blocks, :mod:`sam2trt.runtime.cuda_memory`). Each runner owns,
from ``__enter__`` to ``__exit__``, its execution context and, for every I/O
tensor, one device buffer and one pinned host buffer sized for the *largest*
shape of the engine's optimization profile, so nothing is allocated per call.

What crosses PCIe (``infer(feed, keep=...)``):

- Host inputs (NumPy arrays) are copied into the pinned buffer and uploaded.
- Inputs that are :class:`~sam2trt.runtime.cuda_memory.CudaTensor` (outputs
  kept by an earlier call, of any of the four runners) are bound by address,
  without a copy when 256-byte aligned; a (nested) list of them is gathered
  into the input buffer with device-to-device copies (the memory bank's
  frames into ``maskmem_features``).
- Outputs named in ``keep`` are written by the engine straight into a block of
  the pool and returned as ``CudaTensor``; the others are downloaded into
  pinned memory and returned as new NumPy arrays. The stream is synchronized
  only when something comes back to the host.

With the tracker core (:class:`sam2trt.tracker.FrameStepper`) this keeps the
image encoder features, the memory attention output and the memory bank's
spatial features on the GPU: per frame and object, the frame goes up, the
four low-resolution masks, scores and object pointers come down (about 1 MB),
and the chosen mask (256 KB) and the selected object pointers (16 KB) go up.

Needs TensorRT (10 or 11) and cuda-python; both are imported when an engine is
loaded or a runner is activated, so importing this module works without them.
"""

from __future__ import annotations

import os
import pathlib
from typing import Collection

import numpy as np

from sam2trt.engine.build import create_trt_object
from sam2trt.engine.compat import engine_paths
from sam2trt.engine.environment import TRT_INSTALL_HINT
from sam2trt.errors import EnvironmentMissing, ModelError, RuntimeFailure
from sam2trt.model_spec import MODULES, ModelSpec
from sam2trt.runtime.base import to_host
from sam2trt.runtime.cuda_memory import ALIGNMENT, CudaMemory, CudaTensor, import_cudart


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


class EngineFromPath:
    """Loader: deserializes an engine file written by ``sam2trt build-engines``.

    Mirrors Polygraphy's ``EngineFromPath``: calling the loader returns a new
    ``tensorrt.ICudaEngine``. The loader keeps the ``tensorrt.Runtime`` that
    deserialized it and its logger, which must outlive the engine.

    Args:
        path: the ``.engine`` file.

    Raises (when called):
        EnvironmentMissing: TensorRT is not installed.
        ModelError: the file is missing or cannot be deserialized here (built
            for another GPU or TensorRT version).
        RuntimeFailure: TensorRT could not create its runtime (no usable GPU or driver).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.runtime = self.logger = None

    def __call__(self):
        trt = import_tensorrt()
        if not self.path.is_file():
            raise ModelError(f"{self.path} not found: run `sam2trt build-engines {self.path.parent}` on this GPU")
        if self.runtime is None:
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = create_trt_object(trt.Runtime, self.logger, what="runtime")
        engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ModelError(f"TensorRT cannot load {self.path} (built for another GPU or TensorRT?): "
                             f"rerun `sam2trt build-engines {self.path.parent} --force`")
        return engine


def _leaves(value) -> tuple[list, tuple[int, ...]]:
    """Flatten a nested list of tensors/arrays: ``(leaves in C order, stacked shape)``."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise RuntimeFailure("an empty list was fed as a tensor")
        parts, shapes = [], set()
        for v in value:
            p, s = _leaves(v)
            parts += p
            shapes.add(s)
        if len(shapes) != 1:
            raise RuntimeFailure(f"tensors of different shapes {sorted(shapes)} cannot be stacked")
        return parts, (len(value),) + shapes.pop()
    shape = value.shape if isinstance(value, CudaTensor) else tuple(np.shape(value))
    return [value], shape


class TensorRTRunner:
    """Runs one module's TensorRT engine (Polygraphy's ``TrtRunner`` shape).

    Args:
        engine: a ``tensorrt.ICudaEngine``, or a loader returning one when
            called (:class:`EngineFromPath`), called at ``__enter__``.
        name: module name (default: the loader's file stem, else ``"engine"``).
        memory: the :class:`~sam2trt.runtime.cuda_memory.CudaMemory` shared with
            the model's other runners (default: a private one).

    ``infer(feed, keep=())`` takes ``{input name: value}`` -- a NumPy array
    (converted to the engine's dtype, float32 or int32), a :class:`CudaTensor`
    or a nested list of them to stack -- with shapes as in
    :mod:`sam2trt.export.modules`, within the engine's profile. It returns
    ``{output name: value}``: a :class:`CudaTensor` for names in ``keep``, a new
    float32 NumPy array otherwise.

    Raises (from ``__enter__``):
        EnvironmentMissing: TensorRT or cuda-python is not installed.
        ModelError: the loader's engine file is missing or cannot be
            deserialized here (built for another GPU or TensorRT version).
        RuntimeFailure: a CUDA call failed (out of memory, no device).
    """

    def __init__(self, engine, name: str | None = None, memory: CudaMemory | None = None):
        self._source = engine
        path = getattr(engine, "path", None)
        self.path = pathlib.Path(path) if path is not None else None
        self.name = name or (self.path.stem if self.path is not None else "engine")
        self.memory = memory or CudaMemory()
        self._acquired = False
        self._reset()

    def _fix(self, what: str) -> str:
        """``sam2trt build-engines <model folder> <what>`` (the folder when known)."""
        return f"sam2trt build-engines {self.path.parent if self.path is not None else 'MODEL_DIR'} {what}".rstrip()

    def _reset(self) -> None:
        self.engine = self.context = None
        self._pending = False
        self._device: dict[str, int] = {}
        self._host_ptr: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        self.max_shapes: dict[str, tuple[int, ...]] = {}
        self._static: dict[str, bool] = {}

    # -- lifecycle ------------------------------------------------------------
    def __enter__(self) -> "TensorRTRunner":
        trt = import_tensorrt()
        self._rt = import_cudart()
        engine = self._source() if callable(self._source) else self._source
        try:
            self.memory.acquire(self._rt)
            self._acquired = True
            self._setup(trt, engine)
        except BaseException:
            self._release()
            raise
        return self

    def _setup(self, trt, engine) -> None:
        mem = self.memory
        self.engine = engine
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeFailure(f"{self.name}: TensorRT could not create an execution context (GPU out of memory?)")
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
        try:
            for n in names:
                nbytes = max(1, int(np.prod(self.max_shapes[n], dtype=np.int64)) * self.dtypes[n].itemsize)
                self._device[n] = mem.malloc(nbytes, n)
                self._host_ptr[n], raw = mem.malloc_host(nbytes, n)
                self._host[n] = raw.view(self.dtypes[n])
        except RuntimeFailure as e:
            raise RuntimeFailure(f"{self.name}: {e}") from None

    def _release(self) -> None:
        mem = self.memory
        if self._acquired:
            if mem.stream is not None:
                mem.rt.cudaStreamSynchronize(mem.stream)
            for ptr in self._device.values():
                mem.free(ptr)
            self._host.clear()  # numpy views must go before their pinned memory
            for ptr in self._host_ptr.values():
                mem.free_host(ptr)
        # Context before engine (TensorRT's destruction order); a loader keeps its runtime.
        self.context = None
        self.engine = None
        self._reset()
        if self._acquired:
            self._acquired = False
            self.memory.release()

    def __exit__(self, *exc) -> None:
        self._release()

    # -- inference --------------------------------------------------------------
    def synchronize(self) -> None:
        """Wait until everything queued by the model's runners has run (for timing)."""
        if self.context is not None:
            self.memory.synchronize()
            self._pending = False

    def _set_shape(self, n: str, shape: tuple[int, ...]) -> None:
        """Set input ``n``'s shape; one-line errors naming the fix when it is outside the profile."""
        if self._static[n]:
            if shape != self.max_shapes[n]:
                raise RuntimeFailure(f"{self.name}: input {n} has shape {shape}, the engine takes "
                                     f"{self.max_shapes[n]}: rerun `{self._fix('--force')}`")
            return
        size = int(np.prod(shape, dtype=np.int64))
        if len(shape) == len(self.max_shapes[n]) and size <= self._host[n].size \
                and self.context.set_input_shape(n, shape):
            return
        hi = self.max_shapes[n]
        if n.startswith("point_") and len(shape) == len(hi) and shape[1] > hi[1]:
            raise RuntimeFailure(f"{self.name}: {shape[1]} prompt points for one object, the engines take "
                                 f"at most {hi[1]} (a box counts as 2): give fewer points or --backend onnxruntime")
        raise RuntimeFailure(f"{self.name}: input {n} of shape {shape} is outside the engine profile (max {hi}): "
                             f"rebuild with `{self._fix('--max-objects N --force')}`")

    def _bind_input(self, n: str, value) -> None:
        """Set input ``n``'s shape and address: bind a kept tensor, gather a list of them, or upload host data."""
        rt, mem = self._rt, self.memory
        d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        parts, shape = _leaves(value)
        on_device = [isinstance(p, CudaTensor) for p in parts]
        if all(on_device):
            for p in parts:
                if p.released:
                    raise RuntimeFailure(f"{self.name}: input {n} is a released tensor (no longer on the GPU)")
                if p.dtype != self.dtypes[n]:
                    raise RuntimeFailure(f"{self.name}: input {n} is a {p.dtype} tensor, the engine takes "
                                         f"{self.dtypes[n]}")
            self._set_shape(n, shape)
            if len(parts) == 1 and parts[0].ptr % ALIGNMENT == 0:
                addr = parts[0].ptr  # zero copy
            else:
                addr, offset = self._device[n], 0
                for p in parts:
                    mem.copy(addr + offset, p.ptr, p.nbytes, d2d, f"{self.name}: gather of {n} on the GPU")
                    offset += p.nbytes
        else:
            arr = np.ascontiguousarray(to_host(value), dtype=self.dtypes[n])
            self._set_shape(n, arr.shape)
            self._host[n][:arr.size] = arr.reshape(-1)
            addr = self._device[n]
            mem.copy(addr, self._host_ptr[n], arr.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                     f"{self.name}: copy of {n} to the GPU")
        if not self.context.set_tensor_address(n, addr):
            raise RuntimeFailure(f"{self.name}: TensorRT rejected the buffer address of {n}")

    def infer(self, feed: dict, keep: Collection[str] = ()) -> dict:
        """Run the engine on ``feed``; returns every output by name.

        Args:
            feed: every input by name (NumPy array, :class:`CudaTensor`, or a
                nested list of either, stacked along new leading axes).
            keep: output names to leave on the GPU, returned as :class:`CudaTensor`.
        Returns:
            Outputs in ``keep`` as :class:`CudaTensor` (new pool blocks, written
            by the engine directly); the others as new NumPy arrays (the
            stream is synchronized before returning them).
        Raises:
            RuntimeFailure: an input is missing, its shape is outside the engine's
                profile (e.g. more objects than ``--max-objects`` at build time),
                or TensorRT/CUDA fails.
        """
        if self.context is None:
            raise RuntimeFailure(f"{self.name}: runner used outside its `with` block")
        rt, mem = self._rt, self.memory
        if self._pending:  # the last call's uploads from our pinned buffers may still be queued
            mem.synchronize()
            self._pending = False
        for n in self.input_names:
            if n not in feed:
                raise RuntimeFailure(f"{self.name}: input {n} missing from the feed")
            self._bind_input(n, feed[n])
        shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.output_names}
        sizes = {n: int(np.prod(shapes[n], dtype=np.int64)) for n in self.output_names}
        kept = {}
        for n in self.output_names:
            addr = self._device[n]
            if n in keep:
                block = mem.alloc(sizes[n] * self.dtypes[n].itemsize)
                kept[n] = CudaTensor(mem, block, block.ptr, shapes[n], self.dtypes[n])
                addr = block.ptr
            if not self.context.set_tensor_address(n, addr):
                raise RuntimeFailure(f"{self.name}: TensorRT rejected the buffer address of {n}")
        if not self.context.execute_async_v3(int(mem.stream)):
            raise RuntimeFailure(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
        host = [n for n in self.output_names if n not in kept]
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for n in host:
            mem.copy(self._host_ptr[n], self._device[n], sizes[n] * self.dtypes[n].itemsize, d2h,
                     f"{self.name}: copy of {n} from the GPU")
        if host:
            mem.synchronize()
        else:
            self._pending = True
        out = {}
        for n in self.output_names:
            out[n] = kept[n] if n in kept else self._host[n][:sizes[n]].reshape(shapes[n]).copy()
        return out


def make_runners(spec: ModelSpec, threads: int | None = None) -> dict[str, TensorRTRunner]:
    """One (not yet activated) runner per module, on ``<model folder>/<module>.engine``.

    Each runner loads its engine with :class:`EngineFromPath` at ``__enter__``.
    The four share one :class:`~sam2trt.runtime.cuda_memory.CudaMemory` (stream
    and pool), so tensors kept by one runner feed the others. ``threads`` is
    accepted for interface parity with ONNX Runtime and ignored.
    """
    paths = engine_paths(spec)
    memory = CudaMemory()
    return {name: TensorRTRunner(EngineFromPath(paths[name]), name=name, memory=memory) for name in MODULES}
