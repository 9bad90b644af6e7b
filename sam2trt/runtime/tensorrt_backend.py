"""TensorRT backend: one deserialized engine per module, on pinned CUDA buffers.

The four :class:`TensorRTRunner` of one model (Polygraphy-style context
managers) share one :class:`CudaMemory`: one CUDA stream, on which every copy
and every engine runs in order, and a pool of device blocks for the tensors
that stay on the GPU between modules and frames. Each runner owns, from
``__enter__`` to ``__exit__``, its engine and execution context and, for every
I/O tensor, one device buffer (``cudaMalloc``) and one pinned host buffer
(``cudaMallocHost``) sized for the *largest* shape of the engine's
optimization profile, so nothing is allocated per call.

What crosses PCIe (``infer(feed, keep=...)``):

- Host inputs (NumPy arrays) are copied into the pinned buffer and uploaded.
- Inputs that are :class:`CudaTensor` (outputs kept by an earlier call, of any
  of the four runners) are bound by address, without a copy when 256-byte
  aligned; a (nested) list of them is gathered into the input buffer with
  device-to-device copies (the memory bank's frames into ``maskmem_features``).
- Outputs named in ``keep`` are written by the engine straight into a block of
  the pool and returned as :class:`CudaTensor`; the others are downloaded into
  pinned memory and returned as new NumPy arrays. The stream is synchronized
  only when something comes back to the host.

With the tracker core (:class:`sam2trt.tracker.FrameStepper`) this keeps the
image encoder features, the memory attention output and the memory bank's
spatial features on the GPU: per frame and object, the frame goes up, the
four low-resolution masks, scores and object pointers come down (about 1 MB),
and the chosen mask (256 KB) and the selected object pointers (16 KB) go up.

Needs TensorRT (10 or 11) and cuda-python; both are imported when a runner is
activated, so importing this module works without them.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
from typing import Collection

import numpy as np

from sam2trt.errors import EnvironmentMissing, ModelError, RuntimeFailure
from sam2trt.model_spec import MODULES, ModelSpec
from sam2trt.runtime.base import to_host

#: TensorRT wants tensor addresses aligned to 256 bytes; pool blocks are.
ALIGNMENT = 256


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


def _check(rt, result, what: str):
    """Unpack a cuda-python ``(err, *values)`` tuple; raise RuntimeFailure on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, msg = rt.cudaGetErrorString(err)
        msg = msg.decode() if isinstance(msg, bytes) else str(msg)
        raise RuntimeFailure(f"CUDA {what} failed ({msg})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class CudaMemory:
    """The CUDA stream and device-memory pool shared by one model's runners.

    Opened by the first runner's ``__enter__`` and closed by the last runner's
    ``__exit__`` (the stream is synchronized, then every pool block freed):
    :class:`CudaTensor` values must not be used after that. Blocks are sizes
    rounded up to :data:`ALIGNMENT` bytes; a block whose last tensor view is
    garbage-collected goes back to a free list of its size (``cudaFree`` only
    at close, since it synchronizes the device). Reuse is safe because all work
    runs on the one stream, in order.

    Raises (from its methods): RuntimeFailure when a CUDA call fails.
    """

    def __init__(self):
        self.rt = None
        self.stream = None
        self.users = 0
        self.generation = 0
        self._free: dict[int, list[int]] = {}
        self._owned: list[int] = []

    def acquire(self, rt) -> None:
        """Register one runner; the first creates the stream."""
        if self.users == 0:
            self.rt = rt
            self.stream = _check(rt, rt.cudaStreamCreate(), "cudaStreamCreate")
            self.generation += 1
        self.users += 1

    def release(self) -> None:
        """Unregister one runner; the last frees the pool and the stream."""
        self.users -= 1
        if self.users > 0:
            return
        rt = self.rt
        if self.stream is not None:
            rt.cudaStreamSynchronize(self.stream)
        for ptr in self._owned:
            rt.cudaFree(ptr)
        self._owned.clear()
        self._free.clear()
        if self.stream is not None:
            rt.cudaStreamDestroy(self.stream)
        self.stream = None
        self.generation += 1  # blocks still referenced will not come back to the (gone) free lists

    def alloc(self, nbytes: int) -> "_Block":
        """A device block of at least ``nbytes`` bytes, from the free list when one fits exactly."""
        size = max(ALIGNMENT, -(-int(nbytes) // ALIGNMENT) * ALIGNMENT)
        free = self._free.get(size)
        if free:
            ptr = free.pop()
        else:
            ptr = int(_check(self.rt, self.rt.cudaMalloc(size), f"cudaMalloc({size} bytes) for a kept tensor"))
            self._owned.append(ptr)
        return _Block(self, ptr, size, self.generation)

    def _give_back(self, block: "_Block") -> None:
        if block.generation == self.generation and self.users > 0:
            self._free.setdefault(block.size, []).append(block.ptr)

    def copy(self, dst: int, src: int, nbytes: int, kind, what: str) -> None:
        """``cudaMemcpyAsync`` on the shared stream."""
        if nbytes:
            _check(self.rt, self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream), what)

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        _check(self.rt, self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def download(self, tensor: "CudaTensor") -> np.ndarray:
        """Copy ``tensor`` into a new host array (synchronizes the stream)."""
        out = np.empty(tensor.shape, tensor.dtype)
        self.copy(out.ctypes.data, tensor.ptr, tensor.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                  "copy of a kept tensor to the host")
        self.synchronize()
        return out


class _Block:
    """One pool allocation; returns itself to the pool when garbage-collected."""

    __slots__ = ("memory", "ptr", "size", "generation")

    def __init__(self, memory: CudaMemory, ptr: int, size: int, generation: int):
        self.memory, self.ptr, self.size, self.generation = memory, ptr, size, generation

    def __del__(self):
        try:
            self.memory._give_back(self)
        except Exception:  # interpreter shutdown
            pass


class CudaTensor:
    """A tensor in GPU memory, kept by a :class:`TensorRTRunner` (``infer(..., keep=...)``).

    Attributes:
        ptr: device address (int); shape: tuple of ints; dtype: NumPy dtype.

    ``t[i]`` is a view of row ``i`` along axis 0 (no copy; it keeps the block
    alive). ``np.asarray(t)`` downloads a copy (synchronizing the stream). Pass
    tensors, or (nested) lists of them, back into any runner of the same model.
    Valid until the runners close.
    """

    __slots__ = ("_block", "ptr", "shape", "dtype")

    def __init__(self, block: _Block, ptr: int, shape: tuple[int, ...], dtype):
        self._block, self.ptr, self.shape, self.dtype = block, int(ptr), tuple(int(d) for d in shape), np.dtype(dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i) -> "CudaTensor":
        if not isinstance(i, (int, np.integer)) or not self.shape:
            raise TypeError("CudaTensor supports t[i] (one row along axis 0) only; np.asarray(t) downloads it")
        n, i = self.shape[0], int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for shape {self.shape}")
        return CudaTensor(self._block, self.ptr + i * (self.nbytes // n), self.shape[1:], self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._block.memory.download(self)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"CudaTensor(shape={self.shape}, dtype={self.dtype}, ptr=0x{self.ptr:x})"


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
    """Runs one module's TensorRT engine.

    Args:
        path: the ``.engine`` file written by ``sam2trt build-engines``.
        name: module name (default: the file stem).
        memory: the :class:`CudaMemory` shared with the model's other runners
            (default: a private one).

    ``infer(feed, keep=())`` takes ``{input name: value}`` -- a NumPy array
    (converted to the engine's dtype, float32 or int32), a :class:`CudaTensor`
    or a nested list of them to stack -- with shapes as in
    :mod:`sam2trt.export.modules`, within the engine's profile. It returns
    ``{output name: value}``: a :class:`CudaTensor` for names in ``keep``, a new
    float32 NumPy array otherwise.

    Raises (from ``__enter__``):
        EnvironmentMissing: TensorRT or cuda-python is not installed.
        ModelError: the engine file is missing or cannot be deserialized here
            (built for another GPU or TensorRT version).
        RuntimeFailure: a CUDA call failed (out of memory, no device).
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None, memory: CudaMemory | None = None):
        self.path = pathlib.Path(path)
        self.name = name or self.path.stem
        self.memory = memory or CudaMemory()
        self._acquired = False
        self._reset()

    def _reset(self) -> None:
        self.engine = self.context = self._runtime = self._logger = None
        self._pending = False
        self._device: dict[str, int] = {}
        self._host_ptr: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        self.max_shapes: dict[str, tuple[int, ...]] = {}
        self._static: dict[str, bool] = {}

    def _cuda(self, result, what: str):
        try:
            return _check(self._rt, result, what)
        except RuntimeFailure as e:
            raise RuntimeFailure(f"{self.name}: {e}") from None

    # -- lifecycle ------------------------------------------------------------
    def __enter__(self) -> "TensorRTRunner":
        trt = _import_trt()
        self._rt = _import_cudart()
        if not self.path.is_file():
            raise ModelError(f"{self.path} not found: run `sam2trt build-engines {self.path.parent}` on this GPU")
        try:
            self.memory.acquire(self._rt)
            self._acquired = True
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

    def _release(self) -> None:
        rt = getattr(self, "_rt", None)
        if rt is not None and self._acquired:
            if self.memory.stream is not None:
                rt.cudaStreamSynchronize(self.memory.stream)
            for ptr in self._device.values():
                rt.cudaFree(ptr)
            self._host.clear()  # numpy views must go before their pinned memory
            for ptr in self._host_ptr.values():
                rt.cudaFreeHost(ptr)
        # Context before engine before runtime (TensorRT's destruction order).
        self.context = None
        self.engine = None
        self._runtime = None
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
                                     f"{self.max_shapes[n]}: rerun `sam2trt build-engines {self.path.parent} --force`")
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
                             f"rebuild with `sam2trt build-engines {self.path.parent} --max-objects N --force`")

    def _bind_input(self, n: str, value) -> None:
        """Set input ``n``'s shape and address: bind a kept tensor, gather a list of them, or upload host data."""
        rt, mem = self._rt, self.memory
        d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        parts, shape = _leaves(value)
        on_device = [isinstance(p, CudaTensor) for p in parts]
        if all(on_device):
            for p in parts:
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
                kept[n] = CudaTensor(block, block.ptr, shapes[n], self.dtypes[n])
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

    The four share one :class:`CudaMemory` (stream and pool), so tensors kept
    by one runner feed the others. ``threads`` is accepted for interface parity
    with ONNX Runtime and ignored.
    """
    from sam2trt.engine.build import engine_paths

    paths = engine_paths(spec)
    memory = CudaMemory()
    return {name: TensorRTRunner(paths[name], name=name, memory=memory) for name in MODULES}
