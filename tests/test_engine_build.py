"""``build_engines`` on the fake TensorRT (:mod:`tests.fakes.tensorrt`), versions 10 and 11.

Both build strongly typed networks (``tests/test_trt_api.py`` shows the real
10.13 and 11.4 bindings have ``STRONGLY_TYPED``): fp16 engines come from the
mixed-precision ``.fp16.onnx``, fp32 engines from the fp32 export, and no
builder precision flag is set. The two preprocessing engines are built after
the four modules, fp32 with ``BuilderFlag.TF32`` cleared, over the frame-size
profile. The fake records what it was given.
"""

from __future__ import annotations

import json
import sys

import pytest

import numpy as np
from PIL import Image

from sam2trt import platform
from sam2trt.engine.build import FRAME_SIZE_PROFILE, build_engines, frame_profile, profile_shapes
from sam2trt.engine.compat import (ENGINES_JSON, PREPROCESS_VARIANTS, engine_paths, engines_status,
                                   preprocess_paths)
from sam2trt.errors import RuntimeFailure
from sam2trt.model_spec import MODULES, load_model_spec
from sam2trt.runtime.cuda_memory import CudaTensor
from sam2trt.runtime.select import open_runners
from sam2trt.runtime.tensorrt_backend import TensorRTPreprocess
from sam2trt.tracker.processing import preprocess_frame
from tests.fakes.cuda import FakeCudart
from tests.fakes.tensorrt import make_fake_trt, read_fake_engine
from tests.helpers import DATA, fake_env


@pytest.mark.slow
@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_build_engines_flow_with_fake_tensorrt(model_copy, monkeypatch, version):
    trt = make_fake_trt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(platform, "detect", lambda: fake_env(trt=version))
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
    assert len(trt.built) == len(MODULES) + len(PREPROCESS_VARIANTS)
    for (network, config), module in zip(trt.built[:4], MODULES, strict=True):
        assert network.source == meta["built_from"][module]
        assert network.flags == strongly_typed
        assert config.pool == (trt.MemoryPoolType.WORKSPACE, 2 << 30)
        assert config.get_flag(trt.BuilderFlag.TF32)  # TensorRT's default, left alone
        dynamic = {k: v for k, v in prof[module].items() if v[0] != v[2]}
        assert (config.profiles[0] if config.profiles else {}) == dynamic, module
    for module, path in engine_paths(spec).items():
        assert read_fake_engine(path.read_bytes())["source"] == meta["built_from"][module]
    # The preprocessing engines: both variants, fp32 (the graph is fp32 whatever --precision says), TF32
    # cleared, one profile over the frame size, recorded in engines.json.
    frames = FRAME_SIZE_PROFILE.input_shapes(spec.image_size)
    for (network, config), (variant, (onnx_path, engine)) in zip(trt.built[4:], preprocess_paths(spec).items(),
                                                                strict=True):
        assert network.source == onnx_path.name and onnx_path.is_file()
        assert network.flags == strongly_typed and not config.get_flag(trt.BuilderFlag.TF32)
        assert config.profiles == [frames]
        assert read_fake_engine(engine.read_bytes())["source"] == onnx_path.name
        rec = meta["preprocess"]["variants"][variant]
        assert rec["vertical_first"] is PREPROCESS_VARIANTS[variant] and rec["engine"] == engine.name
    assert meta["frame_size_profile"] == {"frame_height": [32, 1080, 4096], "frame_width": [32, 1920, 4096]}
    assert meta["preprocess"]["precision"] == "fp32" and meta["preprocess"]["tf32"] is False
    assert meta["preprocess"]["profile"]["frame"] == [[32, 32, 3], [1080, 1920, 3], [4096, 4096, 3]]
    assert any("preprocess_vertical_first.engine" in line and "fp32 without TF32" in line for line in lines)
    assert engines_status(spec).usable
    trt.built.clear()
    build_engines(model_copy, max_objects=3, log=lines.append)  # up to date: nothing rebuilt
    assert trt.built == [] and "up to date" in lines[-1]
    build_engines(model_copy, max_objects=4, log=lines.append)  # another profile: rebuilt
    assert len(trt.built) == 6
    trt.built.clear()
    build_engines(model_copy, precision="fp32", max_objects=4, log=lines.append)  # fp32: the fp32 export
    assert [n.source for n, _ in trt.built] == [f"{m}.onnx" for m in MODULES] + [f"{v}.onnx" for v in PREPROCESS_VARIANTS]
    assert all(n.flags == strongly_typed for n, _ in trt.built)
    trt.built.clear()
    build_engines(model_copy, precision="fp32", max_objects=4, max_frame_side=1024, log=lines.append)
    assert len(trt.built) == 6  # another frame-size profile: rebuilt
    assert json.loads((model_copy / ENGINES_JSON).read_text())["frame_size_profile"] == frame_profile(1024).to_json()

    # The built folder tracks with preprocessing on the (fake) GPU: the real graph, run by the fake
    # engine with ONNX Runtime, against PIL on a real frame. The module engines become the fake's
    # y = 2x + 1 engines (the fake cannot run the exported modules; engines.json checks only that they exist).
    for path in engine_paths(spec).values():
        path.write_bytes(b"x")
    cuda = FakeCudart()
    monkeypatch.setattr(platform, "import_cudart", lambda: cuda)
    frame = np.asarray(Image.open(DATA / "vtest16" / "00000.jpg").convert("RGB"))  # 768x576
    with open_runners(spec, "tensorrt") as runners:
        assert isinstance(runners.preprocess, TensorRTPreprocess)
        runners.preprocess.check_frame_size(576, 768)
        image = runners.preprocess.infer({"frame": frame}, keep=("image",))["image"]
        assert isinstance(image, CudaTensor)
        ref = preprocess_frame(frame, spec.image_size, spec.image_mean, spec.image_std)
        err = np.abs(np.asarray(image) - ref)[0] * (np.asarray(spec.image_std, np.float32)[:, None, None] * 255)
        print(f"fake TensorRT preprocessing vs PIL: max {err.max():.3f} units, {(err > 0.5).sum()} pixels off")
        assert err.max() <= 1.0 + 1e-3
    assert cuda.blocks == {}


@pytest.mark.slow
def test_build_engines_without_a_usable_builder(model_copy, monkeypatch):
    """The real bindings raise TypeError when the library returns no builder: one line, exit 4."""
    trt = make_fake_trt("11.4.0")

    class Builder(trt.Builder):
        def __init__(self, logger):
            raise TypeError("pybind11::init(): factory function returned nullptr")

    trt.Builder = Builder
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(platform, "detect", lambda: fake_env(trt="11.4.0"))
    with pytest.raises(RuntimeFailure, match="TensorRT could not create its builder") as e:
        build_engines(model_copy, precision="fp32", log=lambda s: None)
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    assert not (model_copy / ENGINES_JSON).exists()
