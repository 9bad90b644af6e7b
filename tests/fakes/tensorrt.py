"""A ``tensorrt`` module look-alike (:func:`make_fake_trt`).

Class, method, parameter and enum member names (and enum values) are the real
ones, per version: ``tests/test_trt_api.py`` checks each against the real
bindings, so a stand-in cannot have what the real API lacks.

Builder side: parsing an ONNX file records its inputs (dynamic dimensions as
-1); ``build_serialized_network`` returns ``b"engine from <file name>"`` and
records ``(network, config)`` in ``trt.built``. Runtime side: every engine
computes ``y = 2 * x + 1`` on ``x`` of shape ``[-1, 3]`` float32, profile 1..4
rows, reading and writing the bound host addresses.
"""

from __future__ import annotations

import ctypes
import enum
import pathlib
import types

import numpy as np

#: Names the conformance test checks against the real module (classes and enums by name).
CHECKED = ("Logger", "ILogger", "Builder", "INetworkDefinition", "ITensor", "OnnxParser", "IBuilderConfig",
           "ITimingCache", "IOptimizationProfile", "Runtime", "ICudaEngine", "IExecutionContext",
           "DataType", "TensorIOMode", "MemoryPoolType", "NetworkDefinitionCreationFlag", "nptype")


def make_fake_trt(version: str) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module of ``version`` (``"10.x"`` or ``"11.x"``: enum values differ)."""
    import onnx

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.built = []  # test-only record, not part of the API

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1
        INT32 = 3

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    # TensorRT 11 dropped EXPLICIT_BATCH (0 in TensorRT 10) and renumbered.
    NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major < 11 else {"STRONGLY_TYPED": 0})

    def nptype(trt_type):
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT32: np.int32}[trt_type]

    class ILogger:
        Severity = enum.IntEnum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})

    class Logger(ILogger):
        WARNING = ILogger.Severity.WARNING

        def __init__(self, min_severity=ILogger.Severity.WARNING):
            self.min_severity = min_severity

    class ITensor:
        def __init__(self, name, shape, dtype=DataType.FLOAT):
            self._name, self._shape, self._dtype = name, shape, dtype

        name = property(lambda self: self._name)
        shape = property(lambda self: self._shape)
        dtype = property(lambda self: self._dtype)

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags, self.inputs, self.source = flags, [], None

        num_inputs = property(lambda self: len(self.inputs))

        def get_input(self, index):
            return self.inputs[index]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network

        num_errors = property(lambda self: 0)

        def get_error(self, index):
            raise IndexError(index)

        def parse_from_file(self, model):
            self.network.source = pathlib.Path(model).name
            for v in onnx.load(model, load_external_data=False).graph.input:
                dims = tuple(d.dim_value if not d.dim_param else -1 for d in v.type.tensor_type.shape.dim)
                self.network.inputs.append(ITensor(v.name, dims))
            return True

    class ITimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return b"cache:" + self.data

    class IOptimizationProfile(dict):
        def set_shape(self, input, min, opt, max):  # noqa: A002 (the real parameter names)
            self[input] = (tuple(min), tuple(opt), tuple(max))

    class IBuilderConfig:
        def __init__(self):
            self.profiles, self.pool, self.cache = [], None, None

        def set_memory_pool_limit(self, pool, pool_size):
            self.pool = (pool, pool_size)

        def create_timing_cache(self, serialized_timing_cache):
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            trt.built.append((network, config))
            return f"engine from {network.source}".encode()

    class IExecutionContext:
        def __init__(self):
            self.shapes, self.addr = {}, {}

        def set_input_shape(self, name, shape):
            ok = len(shape) == 2 and shape[1] == 3 and 1 <= shape[0] <= 4
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def get_tensor_shape(self, name):
            return self.shapes["x"]

        def set_tensor_address(self, name, memory):
            self.addr[name] = memory
            return True

        def execute_async_v3(self, stream_handle):
            n = int(np.prod(self.shapes["x"])) * 4
            x = np.frombuffer((ctypes.c_uint8 * n).from_address(self.addr["x"]), np.float32)
            y = np.frombuffer((ctypes.c_uint8 * n).from_address(self.addr["y"]), np.float32)
            y[:] = 2 * x + 1
            return True

    class ICudaEngine:
        num_io_tensors = property(lambda self: 2)

        def get_tensor_name(self, index):
            return "xy"[index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "x" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType.FLOAT

        def get_tensor_shape(self, name):
            return (-1, 3)

        def get_tensor_profile_shape(self, name, profile_index):
            return [(1, 3), (2, 3), (4, 3)]

        def create_execution_context(self):
            return IExecutionContext()

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            return ICudaEngine() if serialized_engine else None

    for name, value in list(locals().items()):
        if name in CHECKED:
            setattr(trt, name, value)
    trt.float32, trt.float16, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT32
    return trt
