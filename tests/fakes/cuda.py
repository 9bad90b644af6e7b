"""A cuda-python runtime (``cuda.bindings.runtime``) look-alike: 'device' memory is host memory.

Function and parameter names are the real ones (checked against cuda-bindings
by ``tests/test_trt_api.py``). Every call returns ``(err, *values)`` as the real
module does; copies are ``memmove``, allocations are 256-byte aligned host
buffers, so the TensorRT runner's buffer handling runs on any machine.
"""

from __future__ import annotations

import ctypes
import enum

#: Names the conformance test checks against the real module.
CHECKED = ("cudaError_t", "cudaMemcpyKind", "cudaMalloc", "cudaMallocHost", "cudaFree", "cudaFreeHost",
           "cudaStreamCreate", "cudaStreamDestroy", "cudaStreamSynchronize", "cudaGetErrorString",
           "cudaMemcpyAsync")


class FakeCudart:
    """The runtime module as an object; counts copies and synchronizations for the tests."""

    class cudaError_t(enum.IntEnum):  # noqa: N801
        cudaSuccess = 0

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3

    def __init__(self):
        self.blocks: dict[int, ctypes.Array] = {}
        self.copies = self.syncs = 0
        self.kinds: list[int] = []

    def _alloc(self, size):
        buf = ctypes.create_string_buffer(size + 256)  # cudaMalloc aligns to 256 bytes
        ptr = -(-ctypes.addressof(buf) // 256) * 256
        self.blocks[ptr] = buf
        return self.cudaError_t.cudaSuccess, ptr

    def cudaMalloc(self, size):
        return self._alloc(size)

    def cudaMallocHost(self, size):
        return self._alloc(size)

    def cudaFree(self, devPtr):  # noqa: N803
        self.blocks.pop(int(devPtr))
        return (self.cudaError_t.cudaSuccess,)

    def cudaFreeHost(self, ptr):
        self.blocks.pop(int(ptr))
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):
        return self.cudaError_t.cudaSuccess, 7

    def cudaStreamDestroy(self, stream):
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        self.syncs += 1
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetErrorString(self, error):
        return self.cudaError_t.cudaSuccess, b"fake"

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        ctypes.memmove(int(dst), int(src), count)
        self.copies += 1
        self.kinds.append(int(kind))
        return (self.cudaError_t.cudaSuccess,)
