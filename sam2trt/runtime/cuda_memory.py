"""CUDA memory for the TensorRT runners: one stream, a pool of device blocks, device tensors.

One :class:`CudaMemory` is shared by the four runners of a model
(:mod:`sam2trt.runtime.tensorrt_backend`): every copy and every engine runs
on its one CUDA stream, in order, so a block can be reused as soon as nothing
on the host refers to it any more. It hands out

- plain allocations for the runners' own I/O buffers: device memory
  (``cudaMalloc``) and pinned host memory (``cudaMallocHost``) seen as a NumPy
  array, freed by the runner at ``__exit__``;
- pool blocks (:class:`Block`) for outputs kept on the GPU, wrapped in
  :class:`CudaTensor`. Sizes are rounded up to :data:`ALIGNMENT` bytes; a
  released block goes to a free list of its size and is reused by the next
  allocation of that size (``cudaFree`` only when the pool closes, since it
  synchronizes the device).

Releasing blocks. ``CudaTensor.release()`` gives the tensor's block back at
once (every view of it becomes invalid). A block nobody released is given back
when its last tensor view is garbage-collected, through a
:class:`weakref.finalize` the pool owns (not ``__del__``); closing the pool
detaches every such finalizer and frees all blocks, so nothing runs at
interpreter exit.

cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``) is
imported when the first runner opens the memory; this module imports without it.
"""

from __future__ import annotations

import ctypes
import weakref

import numpy as np

from sam2trt import platform
from sam2trt.errors import EnvironmentMissing, RuntimeFailure
from sam2trt.platform import CUDA_PYTHON_HINT

#: TensorRT wants tensor addresses aligned to 256 bytes; pool blocks are.
ALIGNMENT = 256


def import_cudart():
    """The cuda-python runtime module.

    Raises:
        EnvironmentMissing: cuda-python is not installed (exit 5).
    """
    rt = platform.import_cudart()
    if rt is None:
        raise EnvironmentMissing(f"cuda-python is not installed (the TensorRT backend needs it): {CUDA_PYTHON_HINT}")
    return rt


def check(rt, result, what: str):
    """Unpack a cuda-python ``(err, *values)`` result.

    Returns:
        None, the one value, or the tuple of values after the error code.
    Raises:
        RuntimeFailure: ``err`` is not ``cudaSuccess``; the message has CUDA's error string.
    """
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, msg = rt.cudaGetErrorString(err)
        msg = msg.decode() if isinstance(msg, bytes) else str(msg)
        raise RuntimeFailure(f"CUDA {what} failed ({msg})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class Block:
    """One pool allocation of ``size`` bytes at device address ``ptr``.

    ``release()`` gives it back to its pool's free list (once; later calls do
    nothing). A block the pool has since closed is not given back.
    """

    __slots__ = ("ptr", "size", "_finalizer", "__weakref__")

    def __init__(self, memory: "CudaMemory", ptr: int, size: int):
        self.ptr, self.size = ptr, size
        # The callback must not refer to the block itself, or it would never be collected.
        self._finalizer = weakref.finalize(self, memory._give_back, ptr, size, memory.generation)
        self._finalizer.atexit = False
        memory._blocks.add(self)

    @property
    def released(self) -> bool:
        """True once the block went back to the pool (or the pool closed)."""
        return not self._finalizer.alive

    def release(self) -> None:
        """Give the block back to the pool now."""
        self._finalizer()


class CudaMemory:
    """The CUDA stream and device-memory pool shared by one model's runners.

    Opened by the first runner's ``__enter__`` (:meth:`acquire`) and closed by
    the last runner's ``__exit__`` (:meth:`release`: the stream is synchronized,
    then every pool block freed); :class:`CudaTensor` values must not be used
    after that.

    Attributes:
        rt: the cuda-python runtime module (None while closed).
        stream: the CUDA stream (None while closed).
        users: number of runners holding the memory.

    Raises (from its methods): RuntimeFailure when a CUDA call fails.
    """

    def __init__(self):
        self.rt = None
        self.stream = None
        self.users = 0
        self.generation = 0
        self._free: dict[int, list[int]] = {}
        self._owned: list[int] = []
        self._blocks: weakref.WeakSet = weakref.WeakSet()  # blocks handed out and still referenced

    # -- lifecycle ------------------------------------------------------------
    def acquire(self, rt) -> None:
        """Register one runner; the first creates the stream. ``rt``: the cuda-python runtime module."""
        if self.users == 0:
            self.rt = rt
            self.stream = check(rt, rt.cudaStreamCreate(), "cudaStreamCreate")
            self.generation += 1
        self.users += 1

    def release(self) -> None:
        """Unregister one runner; the last frees the pool and destroys the stream."""
        self.users -= 1
        if self.users > 0:
            return
        rt = self.rt
        if self.stream is not None:
            rt.cudaStreamSynchronize(self.stream)
        for block in list(self._blocks):
            block._finalizer.detach()  # blocks still referenced will not come back to the (gone) free lists
        self._blocks = weakref.WeakSet()
        for ptr in self._owned:
            rt.cudaFree(ptr)
        self._owned.clear()
        self._free.clear()
        if self.stream is not None:
            rt.cudaStreamDestroy(self.stream)
        self.stream = None
        self.generation += 1

    # -- runner buffers -------------------------------------------------------
    def malloc(self, nbytes: int, what: str) -> int:
        """``cudaMalloc(nbytes)``: a device address the caller frees with :meth:`free`."""
        return int(check(self.rt, self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes) for {what}"))

    def free(self, ptr: int) -> None:
        """``cudaFree`` of a :meth:`malloc` address."""
        self.rt.cudaFree(ptr)

    def malloc_host(self, nbytes: int, what: str) -> tuple[int, np.ndarray]:
        """``cudaMallocHost(nbytes)``: ``(address, uint8 array over it)``; free with :meth:`free_host`
        after dropping every view of the array."""
        ptr = int(check(self.rt, self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes} bytes) for {what}"))
        return ptr, np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr), dtype=np.uint8)

    def free_host(self, ptr: int) -> None:
        """``cudaFreeHost`` of a :meth:`malloc_host` address."""
        self.rt.cudaFreeHost(ptr)

    # -- pool -------------------------------------------------------------------
    def alloc(self, nbytes: int) -> Block:
        """A device block of at least ``nbytes`` bytes, from the free list when one fits exactly."""
        size = max(ALIGNMENT, -(-int(nbytes) // ALIGNMENT) * ALIGNMENT)
        free = self._free.get(size)
        if free:
            ptr = free.pop()
        else:
            ptr = self.malloc(size, "a kept tensor")
            self._owned.append(ptr)
        return Block(self, ptr, size)

    def _give_back(self, ptr: int, size: int, generation: int) -> None:
        if generation == self.generation and self.users > 0:
            self._free.setdefault(size, []).append(ptr)

    # -- copies -----------------------------------------------------------------
    def copy(self, dst: int, src: int, nbytes: int, kind, what: str) -> None:
        """``cudaMemcpyAsync`` on the shared stream (``kind``: a ``cudaMemcpyKind``)."""
        if nbytes:
            check(self.rt, self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream), what)

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        check(self.rt, self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def upload(self, array: np.ndarray, what: str) -> "CudaTensor":
        """Copy a host array into a new pool block: a :class:`CudaTensor` of the same shape and dtype.

        For data uploaded once and fed many times by address (the preprocessing
        resize weights). The stream is synchronized before returning, so
        ``array`` (pageable memory) may change or go at once.

        Raises:
            RuntimeFailure: the allocation or the copy failed (``what`` names it).
        """
        arr = np.ascontiguousarray(array)
        block = self.alloc(arr.nbytes)
        tensor = CudaTensor(self, block, block.ptr, arr.shape, arr.dtype)
        self.copy(block.ptr, arr.ctypes.data, arr.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                  f"copy of {what} to the GPU")
        self.synchronize()
        return tensor

    def download(self, tensor: "CudaTensor") -> np.ndarray:
        """Copy ``tensor`` into a new host array (synchronizes the stream)."""
        out = np.empty(tensor.shape, tensor.dtype)
        self.copy(out.ctypes.data, tensor.ptr, tensor.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                  "copy of a kept tensor to the host")
        self.synchronize()
        return out


class CudaTensor:
    """A tensor in GPU memory, kept by a TensorRT runner (``infer(..., keep=...)``).

    Attributes:
        ptr: device address (int); shape: tuple of ints; dtype: NumPy dtype.

    ``t[i]`` is a view of row ``i`` along axis 0 (no copy; it shares the
    block). ``np.asarray(t)`` downloads a copy (synchronizing the stream). Pass
    tensors, or (nested) lists of them, back into any runner of the same model.
    Valid until :meth:`release` (of this tensor or any view of its block) or
    until the runners close.
    """

    __slots__ = ("_block", "_memory", "ptr", "shape", "dtype")

    def __init__(self, memory: CudaMemory, block: Block, ptr: int, shape: tuple[int, ...], dtype):
        self._memory, self._block = memory, block
        self.ptr, self.shape, self.dtype = int(ptr), tuple(int(d) for d in shape), np.dtype(dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def released(self) -> bool:
        """True once the block under this tensor went back to the pool."""
        return self._block.released

    def release(self) -> None:
        """Give the block back to the pool now; this tensor and every view of its block become invalid."""
        self._block.release()

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
        return CudaTensor(self._memory, self._block, self.ptr + i * (self.nbytes // n), self.shape[1:], self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if self.released:
            raise RuntimeFailure(f"{self!r} was released: it is no longer on the GPU")
        out = self._memory.download(self)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"CudaTensor(shape={self.shape}, dtype={self.dtype}, ptr=0x{self.ptr:x})"
