"""The TensorRT runner and its CUDA memory on stand-ins (:mod:`tests.fakes`): buffers, the shared
pool, binding by address, gathers on the device, explicit and automatic release of blocks.

The stand-ins' names and signatures are checked against the real bindings by
``tests/test_trt_api.py``; what they compute (``y = 2 * x + 1``) is theirs.
"""

from __future__ import annotations

import gc
import pathlib
import sys

import numpy as np
import pytest

from sam2trt import platform
from sam2trt.errors import EnvironmentMissing, ModelError, RuntimeFailure
from sam2trt.runtime.cuda_memory import CudaMemory, CudaTensor
from sam2trt.runtime.tensorrt_backend import EngineFromPath, TensorRTRunner
from tests.fakes.cuda import FakeCudart
from tests.fakes.tensorrt import make_fake_trt

H2D, D2H, D2D = 1, 2, 3


@pytest.fixture(params=["10.13.3", "11.4.0"])
def fake_engine(request, tmp_path, monkeypatch) -> tuple[FakeCudart, pathlib.Path]:
    """``(cuda, engine path)``: the fake TensorRT (10 and 11) and cuda-python installed, and an engine file."""
    cuda = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(request.param))
    monkeypatch.setattr(platform, "import_cudart", lambda: cuda)
    path = tmp_path / "fake.engine"
    path.write_bytes(b"serialized")
    return cuda, path


def test_tensorrt_runner_buffers_with_fake_cuda(tmp_path, fake_engine):
    cuda, path = fake_engine
    with TensorRTRunner(EngineFromPath(path)) as r:
        assert r.name == "fake"
        assert r.max_shapes == {"x": (4, 3), "y": (4, 3)} and len(cuda.blocks) == 4  # device + pinned host each
        x = np.arange(6, dtype=np.float64).reshape(2, 3)  # converted to the engine's float32
        y1 = r.infer({"x": x})["y"]
        y2 = r.infer({"x": np.ones((1, 3), np.float32)})["y"]
        np.testing.assert_array_equal(y1, 2 * x + 1)  # the first result survives the second call
        assert y1.dtype == np.float32 and y2.shape == (1, 3) and (y2 == 3).all()
        with pytest.raises(RuntimeFailure, match="outside the engine profile") as e:
            r.infer({"x": np.zeros((5, 3), np.float32)})
        assert f"sam2trt build-engines {tmp_path} --max-objects N --force" in str(e.value)
        assert "\n" not in str(e.value)
        with pytest.raises(RuntimeFailure, match="missing"):
            r.infer({})
    assert cuda.blocks == {} and r.context is None  # everything freed
    with pytest.raises(RuntimeFailure, match="outside its `with` block"):
        r.infer({"x": x})
    with pytest.raises(ModelError, match="build-engines"):
        TensorRTRunner(EngineFromPath(tmp_path / "missing.engine")).__enter__()
    assert cuda.blocks == {}


def test_tensorrt_runner_takes_an_engine_or_a_loader(fake_engine):
    """As Polygraphy's TrtRunner: a deserialized engine, or a loader called at ``__enter__``."""
    cuda, path = fake_engine
    loader = EngineFromPath(path)
    engine = loader()
    with TensorRTRunner(engine, name="direct") as r:
        assert r.engine is engine and r.path is None
        np.testing.assert_array_equal(r.infer({"x": np.zeros((1, 3))})["y"], [[1, 1, 1]])
    calls = []
    with TensorRTRunner(lambda: calls.append(1) or engine) as r:
        assert calls == [1] and r.name == "engine"
    assert cuda.blocks == {}


def test_missing_cuda_python_is_an_environment_error(fake_engine, monkeypatch):
    _, path = fake_engine
    monkeypatch.setattr(platform, "import_cudart", lambda: None)
    with pytest.raises(EnvironmentMissing, match="cuda-python is not installed"):
        TensorRTRunner(EngineFromPath(path)).__enter__()


def test_tensorrt_runners_keep_tensors_on_the_device_with_fake_cuda(fake_engine):
    """Kept outputs live in the shared pool, feed other runners by address or by gather, and are recycled."""
    cuda, path = fake_engine
    memory = CudaMemory()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with TensorRTRunner(EngineFromPath(path), "a", memory) as a, TensorRTRunner(EngineFromPath(path), "b", memory) as b:
        assert memory.users == 2 and a.memory.stream == b.memory.stream
        cuda.kinds.clear()
        syncs = cuda.syncs
        t = a.infer({"x": x}, keep=("y",))["y"]
        assert isinstance(t, CudaTensor) and t.shape == (2, 3) and t.ptr % 256 == 0
        assert cuda.kinds == [H2D] and cuda.syncs == syncs  # the frame went up, nothing came down, no wait
        assert a.context.addr["y"] == t.ptr  # the engine wrote the kept output in place
        u = b.infer({"x": t})["y"]  # another runner, fed by address
        assert b.context.addr["x"] == t.ptr and cuda.kinds == [H2D, D2H]
        np.testing.assert_array_equal(u, 2 * (2 * x + 1) + 1)
        cuda.kinds.clear()
        v = b.infer({"x": [t[1], t[0], t[1]]})["y"]  # rows gathered on the device
        assert cuda.kinds == [D2D, D2D, D2D, D2H] and b.context.addr["x"] == b._device["x"]
        np.testing.assert_array_equal(v, 2 * (2 * x[[1, 0, 1]] + 1) + 1)
        np.testing.assert_array_equal(np.asarray(t[1]), 2 * x[1] + 1)  # download of a row view
        w = b.infer({"x": [t[0], np.full(3, 5, np.float32)]})["y"]  # mixed: through the host
        np.testing.assert_array_equal(w, [2 * (2 * x[0] + 1) + 1, [11, 11, 11]])
        with pytest.raises(RuntimeFailure, match="different shapes"):
            b.infer({"x": [t, t[0]]})
        with pytest.raises(RuntimeFailure, match="outside the engine profile"):
            b.infer({"x": [t[0]] * 5})
        with pytest.raises(TypeError, match="one row"):
            t[0:1]
        # Without an explicit release, the pool recycles a block once its last view is gone.
        row, ptr = t[1], t.ptr
        del t
        gc.collect()
        assert memory._free == {}
        del row
        gc.collect()
        assert memory._free == {256: [ptr]}
        assert a.infer({"x": x}, keep=("y",))["y"].ptr == ptr
        leftover = a.infer({"x": x}, keep=("y",))["y"]
    assert memory.users == 0 and memory.stream is None
    assert cuda.blocks == {}  # engines' buffers, pinned buffers and the pool: all freed
    assert leftover.released  # the pool closed under it
    with pytest.raises(RuntimeFailure, match="released"):
        np.asarray(leftover)
    del leftover
    gc.collect()
    assert memory._free == {}  # a block outliving its pool does not come back


def test_explicit_release_returns_the_block_at_once(fake_engine):
    cuda, path = fake_engine
    memory = CudaMemory()
    x = np.ones((2, 3), np.float32)
    with TensorRTRunner(EngineFromPath(path), "a", memory) as a:
        t = a.infer({"x": x}, keep=("y",))["y"]
        row = t[0]
        t.release()  # while views are still referenced
        assert t.released and row.released and memory._free == {256: [t.ptr]}
        t.release()  # once only
        assert memory._free == {256: [t.ptr]}
        with pytest.raises(RuntimeFailure, match="released tensor"):
            a.infer({"x": [row]})
        u = a.infer({"x": x}, keep=("y",))["y"]
        assert u.ptr == t.ptr and not u.released and memory._free == {256: []}
        del row, t
        gc.collect()
        assert memory._free == {256: []}  # a released block is not given back twice
    assert cuda.blocks == {}
