"""``build_engines`` on the fake TensorRT (:mod:`tests.fakes.tensorrt`), versions 10 and 11.

Both build strongly typed networks (``tests/test_trt_api.py`` shows the real
10.13 and 11.4 bindings have ``STRONGLY_TYPED``): fp16 engines come from the
mixed-precision ``.fp16.onnx``, fp32 engines from the fp32 export, and no
builder precision flag is set. The fake records what it was given.
"""

from __future__ import annotations

import json
import sys

import pytest

from sam2trt.engine import environment
from sam2trt.engine.build import build_engines, profile_shapes
from sam2trt.engine.compat import ENGINES_JSON, engine_paths, engines_status
from sam2trt.errors import RuntimeFailure
from sam2trt.model_spec import MODULES, load_model_spec
from tests.fakes.tensorrt import make_fake_trt
from tests.helpers import fake_env


@pytest.mark.slow
@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_build_engines_flow_with_fake_tensorrt(model_copy, monkeypatch, version):
    trt = make_fake_trt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(environment, "detect", lambda: fake_env(trt=version))
    lines = []
    build_engines(model_copy, max_objects=3, workspace_gib=2.0, log=lines.append)
    print("\n".join(lines))
    spec = load_model_spec(model_copy)
    meta = json.loads((model_copy / ENGINES_JSON).read_text())
    assert meta["typing"] == "strong" and meta["precision"] == "fp16"
    assert meta["tensorrt_version"] == version and meta["gpu"] == "NVIDIA H100 80GB HBM3" and meta["max_objects"] == 3
    assert meta["built_from"] == {m: f"{m}.fp16.onnx" for m in MODULES}
    assert (model_copy / "timing.cache").read_bytes() == b"cache:"
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # 1 << 1 on 10, 1 << 0 on 11
    assert strongly_typed == (2 if version.startswith("10.") else 1)
    prof = profile_shapes(spec, 3)
    for (network, config), module in zip(trt.built, MODULES, strict=True):
        assert network.source == meta["built_from"][module]
        assert network.flags == strongly_typed
        assert config.pool == (trt.MemoryPoolType.WORKSPACE, 2 << 30)
        dynamic = {k: v for k, v in prof[module].items() if v[0] != v[2]}
        assert (config.profiles[0] if config.profiles else {}) == dynamic, module
    for module, path in engine_paths(spec).items():
        assert path.read_bytes() == f"engine from {meta['built_from'][module]}".encode()
    assert engines_status(spec).usable
    trt.built.clear()
    build_engines(model_copy, max_objects=3, log=lines.append)  # up to date: nothing rebuilt
    assert trt.built == [] and "up to date" in lines[-1]
    build_engines(model_copy, max_objects=4, log=lines.append)  # another profile: rebuilt
    assert len(trt.built) == 4
    trt.built.clear()
    build_engines(model_copy, precision="fp32", max_objects=4, log=lines.append)  # fp32: the fp32 export
    assert [n.source for n, _ in trt.built] == [f"{m}.onnx" for m in MODULES]
    assert all(n.flags == strongly_typed for n, _ in trt.built)


@pytest.mark.slow
def test_build_engines_without_a_usable_builder(model_copy, monkeypatch):
    """The real bindings raise TypeError when the library returns no builder: one line, exit 4."""
    trt = make_fake_trt("11.4.0")

    class Builder(trt.Builder):
        def __init__(self, logger):
            raise TypeError("pybind11::init(): factory function returned nullptr")

    trt.Builder = Builder
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(environment, "detect", lambda: fake_env(trt="11.4.0"))
    with pytest.raises(RuntimeFailure, match="TensorRT could not create its builder") as e:
        build_engines(model_copy, precision="fp32", log=lambda s: None)
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    assert not (model_copy / ENGINES_JSON).exists()
