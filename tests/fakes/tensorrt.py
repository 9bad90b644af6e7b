"""A ``tensorrt`` module look-alike (:func:`make_fake_trt`).

Class, method, parameter and enum member names (and enum values) are the real
ones, per version: ``tests/test_trt_api.py`` checks each against the real
bindings, so a stand-in cannot have what the real API lacks.

Builder side: parsing an ONNX file records its inputs (dynamic dimensions as
-1); ``build_serialized_network`` records ``(network, config)`` in
``trt.built`` and returns ``b"engine from <file name>\n"`` followed by one JSON
line: the ONNX file's path, the optimization profile and whether TF32 was
allowed (:func:`read_fake_engine`). A builder config allows TF32 until
``clear_flag(BuilderFlag.TF32)``, as TensorRT's does.

Runtime side: an engine the fake builder wrote runs its ONNX file with ONNX
Runtime (CPU), within the recorded profile (only graphs whose output shapes
follow from their input shapes, such as the preprocessing graph; the exported
modules' outputs have dimensions of their own); any other non-empty bytes are an
engine computing ``y = 2 * x + 1`` on ``x`` of shape ``[-1, 3]`` float32,
profile 1..4 rows. Both read and write the bound host addresses.
"""

from __future__ import annotations

import ctypes
import enum
import json
import pathlib
import types

import numpy as np

#: Names the conformance test checks against the real module (classes and enums by name).
CHECKED = ("Logger", "ILogger", "Builder", "INetworkDefinition", "ITensor", "OnnxParser", "IBuilderConfig",
           "ITimingCache", "IOptimizationProfile", "Runtime", "ICudaEngine", "IExecutionContext",
           "DataType", "TensorIOMode", "MemoryPoolType", "NetworkDefinitionCreationFlag", "BuilderFlag", "nptype")


def fake_engine_bytes(onnx_path, profile: dict, tf32: bool = True) -> bytes:
    """A serialized fake engine, as the fake builder writes it: runs ``onnx_path`` (ONNX Runtime) within
    ``profile`` (``{input: (min, opt, max)}`` of its dynamic inputs)."""
    record = {"onnx": str(pathlib.Path(onnx_path).resolve()), "tf32": bool(tf32),
              "profile": {k: [list(s) for s in v] for k, v in profile.items()}}
    return f"engine from {pathlib.Path(onnx_path).name}\n{json.dumps(record)}".encode()


def read_fake_engine(data: bytes) -> dict | None:
    """What the fake builder recorded in a serialized engine: ``{"source", "onnx", "profile", "tf32"}``
    (profile: ``{input: [min, opt, max]}``), or None for other bytes."""
    head, _, rest = bytes(data).partition(b"\n")
    if not head.startswith(b"engine from ") or not rest.startswith(b"{"):
        return None
    return dict(json.loads(rest), source=head[len(b"engine from "):].decode())


def _view(address: int, shape, dtype) -> np.ndarray:
    """A NumPy view of ``shape`` / ``dtype`` over the host memory at ``address`` (the fake's 'device')."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return np.frombuffer((ctypes.c_uint8 * n).from_address(int(address)), dtype).reshape(shape)


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
        UINT8 = 5

    class BuilderFlag(enum.IntEnum):  # TF32 is 6 in TensorRT 10 and 11
        TF32 = 6

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
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT32: np.int32,
                DataType.UINT8: np.uint8}[trt_type]

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
            self.flags, self.inputs, self.source, self.onnx = flags, [], None, None

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
            self.network.onnx = str(pathlib.Path(model).resolve())
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
            self._flags = {BuilderFlag.TF32}  # TensorRT's default: TF32 allowed

        def set_flag(self, flag):
            self._flags.add(BuilderFlag(flag))

        def clear_flag(self, flag):
            self._flags.discard(BuilderFlag(flag))

        def get_flag(self, flag):
            return BuilderFlag(flag) in self._flags

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
            return fake_engine_bytes(network.onnx, config.profiles[0] if config.profiles else {},
                                     config.get_flag(BuilderFlag.TF32))

    class IExecutionContext:
        def __init__(self, engine):
            self._engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            ok = self._engine._accepts(name, tuple(shape))
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            return self._engine._output_shape(name, self.shapes)

        def set_tensor_address(self, name, memory):
            self.addr[name] = memory
            return True

        def execute_async_v3(self, stream_handle):
            e = self._engine
            feed = {n: _view(self.addr[n], self.shapes[n], nptype(e._dtype[n])).copy() for n in e._inputs}
            for n, value in e._compute(feed).items():
                out = _view(self.addr[n], self.get_tensor_shape(n), nptype(e._dtype[n]))
                out[...] = value
            return True

    class ICudaEngine:
        """An engine over ``io`` (``[(name, mode, dtype, shape with -1)]``): ``profile`` ``{input: (min, opt,
        max)}`` for dynamic inputs; ``out_dims`` ``{output: dims}``, each an int or ``(input, axis)``;
        ``compute(feed) -> {output: array}``."""

        def __init__(self, io, profile, out_dims, compute):
            self._io = list(io)
            self._inputs = [n for n, mode, _, _ in self._io if mode == TensorIOMode.INPUT]
            self._dtype = {n: d for n, _, d, _ in self._io}
            self._shape = {n: tuple(s) for n, _, _, s in self._io}
            self._profile = {k: tuple(tuple(s) for s in v) for k, v in profile.items()}
            self._out_dims, self._compute = out_dims, compute

        num_io_tensors = property(lambda self: len(self._io))

        def _accepts(self, name, shape):
            decl = self._shape[name]
            if len(shape) != len(decl) or any(d != -1 and d != s for d, s in zip(decl, shape)):
                return False
            lo, _, hi = self._profile.get(name, (decl, decl, decl))
            return all(a <= s <= b for a, s, b in zip(lo, shape, hi))

        def _output_shape(self, name, input_shapes):
            return tuple(d if isinstance(d, int) else input_shapes[d[0]][d[1]] for d in self._out_dims[name])

        def get_tensor_name(self, index):
            return self._io[index][0]

        def get_tensor_mode(self, name):
            return next(mode for n, mode, _, _ in self._io if n == name)

        def get_tensor_dtype(self, name):
            return self._dtype[name]

        def get_tensor_shape(self, name):
            return self._shape[name]

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(s) for s in self._profile[name]]

        def create_execution_context(self):
            return IExecutionContext(self)

    def xy_engine():
        """``y = 2 * x + 1`` on ``x`` ``[-1, 3]`` float32, 1..4 rows."""
        return ICudaEngine([("x", TensorIOMode.INPUT, DataType.FLOAT, (-1, 3)),
                            ("y", TensorIOMode.OUTPUT, DataType.FLOAT, (-1, 3))],
                           {"x": ((1, 3), (2, 3), (4, 3))}, {"y": (("x", 0), 3)}, lambda f: {"y": 2 * f["x"] + 1})

    def onnx_engine(record):
        """An engine running ``record["onnx"]`` with ONNX Runtime within ``record["profile"]``."""
        model = onnx.load(record["onnx"], load_external_data=False)
        types_ = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF,
                  onnx.TensorProto.INT32: DataType.INT32, onnx.TensorProto.UINT8: DataType.UINT8}
        io, params = [], {}

        def dims(v):
            return [d.dim_value if not d.dim_param else d.dim_param for d in v.type.tensor_type.shape.dim]

        for v in model.graph.input:
            ds = dims(v)
            for axis, d in enumerate(ds):
                if isinstance(d, str):
                    params.setdefault(d, (v.name, axis))
            io.append((v.name, TensorIOMode.INPUT, types_[v.type.tensor_type.elem_type],
                       tuple(-1 if isinstance(d, str) else d for d in ds)))
        out_dims = {}
        for v in model.graph.output:
            ds = dims(v)
            unknown = [d for d in ds if isinstance(d, str) and d not in params]
            if unknown:
                raise NotImplementedError(f"fake engine of {record['onnx']}: output {v.name} has dimensions "
                                          f"{unknown} that no input has; the fake runs graphs whose output "
                                          "shapes follow from the input shapes (the preprocessing graph)")
            out_dims[v.name] = tuple(params[d] if isinstance(d, str) else d for d in ds)
            io.append((v.name, TensorIOMode.OUTPUT, types_[v.type.tensor_type.elem_type],
                       tuple(-1 if isinstance(d, str) else d for d in ds)))
        session = []

        def compute(feed):
            if not session:
                import onnxruntime as ort

                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                session.append(ort.InferenceSession(record["onnx"], so, providers=["CPUExecutionProvider"]))
            names = [o.name for o in session[0].get_outputs()]
            return dict(zip(names, session[0].run(names, feed)))

        return ICudaEngine(io, record["profile"], out_dims, compute)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            if not serialized_engine:
                return None
            record = read_fake_engine(serialized_engine)
            return onnx_engine(record) if record is not None and record.get("onnx") else xy_engine()

    for name, value in list(locals().items()):
        if name in CHECKED:
            setattr(trt, name, value)
    trt.float32, trt.float16, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT32
    return trt
