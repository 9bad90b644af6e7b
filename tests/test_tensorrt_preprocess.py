"""Preprocessing on TensorRT, on stand-ins (:mod:`tests.fakes`): the preprocessing engines' build
(both variants, TF32 cleared, the frame-size optimization profile), the runner (variant per frame
size, weights uploaded once per size and bound by address, the image kept on the device), the
frame-size check, and ``open_runners`` attaching it.

The model folder is a host-only ``model.json`` (:mod:`sam2trt.runtime.null_backend`, the real
``sam2.1_hiera_t`` shapes, S = 1024) with placeholder module files: no export, no torch. The fake
engines of the preprocessing graph run the real ONNX graph with ONNX Runtime, so the results are
compared with PIL (:func:`sam2trt.tracker.processing.preprocess_frame`, the official loader's path).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from sam2trt import platform
from sam2trt.engine.build import FRAME_SIZE_PROFILE, _build_one, frame_profile, write_preprocess_onnx
from sam2trt.engine.compat import (ENGINES_JSON, PREPROCESS_VARIANTS, FrameSizeProfile, engine_paths,
                                   frame_size_profile, preprocess_paths)
from sam2trt.errors import ModelError, RuntimeFailure, UsageError
from sam2trt.fileio import sha256_file
from sam2trt.model_spec import MODULES
from sam2trt.runtime.cuda_memory import CudaMemory, CudaTensor
from sam2trt.runtime.null_backend import host_only_spec, write_host_only_model
from sam2trt.runtime.onnxruntime_backend import make_runners as onnxruntime_runners
from sam2trt.runtime.select import open_runners
from sam2trt.runtime.tensorrt_backend import TensorRTPreprocess, make_preprocess, make_runners
from sam2trt.tracker.processing import pil_resizes_vertically_first, preprocess_frame
from tests.fakes.cuda import FakeCudart
from tests.fakes.tensorrt import fake_engine_bytes, make_fake_trt, read_fake_engine
from tests.helpers import DATA, engines_meta, fake_env

H2D = 1
S = 1024
#: A small profile for the runner tests (the fake allocates host memory for the profile maximum):
#: up to 1200 a side, so that a 1100x8 portrait frame (vertical pass first on Pillow 13) fits.
SMALL = FrameSizeProfile(height=(8, 48, 1200), width=(8, 64, 1200))


@pytest.fixture(params=["10.13.3", "11.4.0"])
def trt(request, monkeypatch):
    """The fake TensorRT (10 and 11) and cuda-python installed; yields the fake tensorrt module."""
    trt = make_fake_trt(request.param)
    cuda = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(platform, "import_cudart", lambda: cuda)
    trt.cuda = cuda  # test-only handle
    return trt


@pytest.fixture()
def spec(tmp_path):
    """A host-only model folder: ``model.json`` and placeholder module files (bytes, for their sha256)."""
    root = write_host_only_model(tmp_path / "model")
    for m in MODULES:
        (root / f"{m}.onnx").write_bytes(f"placeholder {m}".encode())
    return host_only_spec(root)


def write_engines(spec, frames: FrameSizeProfile = SMALL, version: str = "10.3.0", preprocess: bool = True) -> dict:
    """Module engines (the fake's ``y = 2x + 1``), the preprocessing ONNX and fake engines over ``frames``,
    and ``engines.json`` as ``build-engines`` records them; returns the record."""
    for p in engine_paths(spec).values():
        p.write_bytes(b"x")
    meta = engines_meta({m: sha256_file(spec.path(m)) for m in MODULES}, tensorrt_version=version)
    if preprocess:
        onnx = write_preprocess_onnx(spec, log=lambda s: None)
        for v, (_, engine) in preprocess_paths(spec).items():
            engine.write_bytes(fake_engine_bytes(onnx[v], frames.input_shapes(spec.image_size), tf32=False))
        meta["frame_size_profile"] = frames.to_json()
        meta["preprocess"] = {"variants": {v: {"onnx_sha256": sha256_file(p)} for v, p in onnx.items()}}
    (spec.root / ENGINES_JSON).write_text(json.dumps(meta))
    return meta


def vtest(size: tuple[int, int] | None = None) -> np.ndarray:
    """Frame 0 of the vtest excerpt (768x576), resized to ``size`` = ``(width, height)`` when given."""
    im = Image.open(DATA / "vtest16" / "00000.jpg").convert("RGB")
    return np.asarray(im.resize(size, Image.BILINEAR) if size else im)


def units(image, ref, std) -> np.ndarray:
    """``|image - ref|`` of two ``[1, 3, S, S]`` normalised images, in 0..255 pixel units."""
    return np.abs(np.asarray(image) - ref)[0] * (np.asarray(std, np.float32)[:, None, None] * 255)


# ---------------------------------------------------------------------- the profile
def test_frame_size_profile_covers_4k_both_ways_and_refuses_with_one_line():
    p = FRAME_SIZE_PROFILE
    for w, h in ((3840, 2160), (2160, 3840), (4096, 2160), (2160, 4096), (1920, 1080), (768, 576), (32, 32)):
        assert p.contains(h, w), (w, h)
        p.check(h, w)
    for w, h in ((4097, 2160), (2160, 4097), (31, 100), (8192, 4320)):
        assert not p.contains(h, w)
        with pytest.raises(ModelError) as e:
            p.check(h, w)
        msg = str(e.value)
        print(msg)
        assert e.value.exit_code == 3 and "\n" not in msg
        assert msg.startswith(f"frame {w}x{h} (width x height) is outside the TensorRT engines' frame-size profile "
                              "(32x32 to 4096x4096)")
        assert msg.endswith("resize the video to fit, or track with --backend onnxruntime")
    assert p.height[1] == 1080 and p.width[1] == 1920  # opt: 1080p landscape
    assert FrameSizeProfile.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert p.to_json() == {"frame_height": [32, 1080, 4096], "frame_width": [32, 1920, 4096]}
    assert p.input_shapes(S) == {"frame": ((32, 32, 3), (1080, 1920, 3), (4096, 4096, 3)),
                                 "resize_h": ((S, 32), (S, 1080), (S, 4096)),
                                 "resize_w": ((S, 32), (S, 1920), (S, 4096))}
    assert frame_profile(1024) == FrameSizeProfile((32, 1024, 1024), (32, 1024, 1024))
    assert frame_profile(None) is FRAME_SIZE_PROFILE
    with pytest.raises(UsageError):
        frame_profile(16)
    with pytest.raises(ValueError):
        FrameSizeProfile((64, 32, 128), (1, 1, 1))
    assert frame_size_profile({"precision": "fp16"}) is None  # engines from before the preprocessing engines
    with pytest.raises(ValueError, match="malformed"):
        frame_size_profile({"frame_size_profile": {"frame_height": [1, 2, 3]}})


# ---------------------------------------------------------------------- the build
def test_preprocess_onnx_written_once_and_engines_built_fp32_without_tf32(spec, trt):
    lines = []
    onnx = write_preprocess_onnx(spec, log=lines.append)
    assert set(onnx) == set(PREPROCESS_VARIANTS) and lines == [f"wrote {p.name}" for p in onnx.values()]
    assert [p.name for p in onnx.values()] == ["preprocess_horizontal_first.onnx", "preprocess_vertical_first.onnx"]
    before = {v: (p.read_bytes(), p.stat().st_mtime_ns) for v, p in onnx.items()}
    lines.clear()
    assert write_preprocess_onnx(spec, log=lines.append) == onnx and lines == []  # unchanged: not rewritten
    assert {v: (p.read_bytes(), p.stat().st_mtime_ns) for v, p in onnx.items()} == before
    assert before["preprocess_horizontal_first"][0] != before["preprocess_vertical_first"][0]

    builder, logger = trt.Builder(trt.Logger()), trt.Logger()
    cache = builder.create_builder_config().create_timing_cache(b"")
    shapes = FRAME_SIZE_PROFILE.input_shapes(spec.image_size)
    for variant, path in onnx.items():
        data = _build_one(trt, builder, logger, path, shapes, workspace_gib=1.0, cache=cache, tf32=False)
        network, config = trt.built[-1]
        assert network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        assert not config.get_flag(trt.BuilderFlag.TF32)  # cleared: PIL's rounding survives
        assert config.profiles == [shapes]  # frame, resize_h and resize_w over the frame size
        assert [(t.name, t.shape) for t in network.inputs] == [("frame", (-1, -1, 3)), ("resize_h", (S, -1)),
                                                               ("resize_w", (S, -1))]
        record = read_fake_engine(data)
        assert record["source"] == path.name and record["tf32"] is False
    _build_one(trt, builder, logger, onnx["preprocess_horizontal_first"], shapes, workspace_gib=1.0, cache=cache)
    assert trt.built[-1][1].get_flag(trt.BuilderFlag.TF32)  # the module engines keep TensorRT's default


# ---------------------------------------------------------------------- the runner
def test_preprocess_runner_picks_the_variant_and_caches_the_weights(spec, trt):
    cuda = trt.cuda
    write_engines(spec)
    memory = CudaMemory()
    pre = make_preprocess(spec, memory)
    assert isinstance(pre, TensorRTPreprocess) and pre.frame_sizes == SMALL and pre.image_size == S
    landscape, portrait = vtest((60, 40)), vtest((8, 1100))  # width x height
    assert not pil_resizes_vertically_first(40, 60, S, S)
    vertical = pil_resizes_vertically_first(1100, 8, S, S)  # True on Pillow >= 13
    with pre:
        runner = pre.variants[False]
        assert runner.max_shapes["frame"] == (1200, 1200, 3) and runner.max_shapes["image"] == (1, 3, S, S)
        cuda.kinds.clear()
        out = pre.infer({"frame": landscape})["image"]
        assert isinstance(out, np.ndarray) and out.shape == (1, 3, S, S) and out.dtype == np.float32
        ctx = runner.context
        assert {n: ctx.shapes[n] for n in ("frame", "resize_h", "resize_w")} == \
            {"frame": (40, 60, 3), "resize_h": (S, 40), "resize_w": (S, 60)}
        rh, rw = pre.weights(40, 60)
        assert isinstance(rh, CudaTensor) and rh.shape == (S, 40) and rw.shape == (S, 60)
        assert ctx.addr["resize_h"] == rh.ptr and ctx.addr["resize_w"] == rw.ptr  # bound where they were uploaded
        # Up: the two weight matrices once, then the frame; down: the image.
        assert cuda.kinds == [H2D, H2D, H2D, 2]
        ref = preprocess_frame(landscape, S, spec.image_mean, spec.image_std)  # PIL
        assert units(out, ref, spec.image_std).max() <= 1.0 + 1e-3
        cuda.kinds.clear()
        kept = pre.infer({"frame": landscape}, keep=("image",))["image"]  # same size: weights reused
        assert cuda.kinds == [H2D] and ctx.addr["resize_h"] == rh.ptr and len(pre._weights) == 1
        assert isinstance(kept, CudaTensor) and kept.shape == (1, 3, S, S) and ctx.addr["image"] == kept.ptr
        np.testing.assert_array_equal(np.asarray(kept), out)

        out = pre.infer({"frame": portrait})["image"]
        used = pre.variants[vertical]
        assert used.context.shapes["frame"] == (1100, 8, 3) and used.context.shapes["resize_h"] == (S, 1100)
        ref = preprocess_frame(portrait, S, spec.image_mean, spec.image_std)
        assert units(out, ref, spec.image_std).max() <= 1.0 + 1e-3
        assert list(pre._weights) == [(40, 60), (1100, 8)]

        # Older sizes leave the GPU once more than MAX_CACHED_SIZES were seen.
        first = pre.weights(40, 60)
        for i in range(pre.MAX_CACHED_SIZES):
            pre.weights(16 + i, 16)
        assert len(pre._weights) == pre.MAX_CACHED_SIZES and (40, 60) not in pre._weights
        assert first[0].released and first[1].released
    assert cuda.blocks == {} and memory.users == 0  # buffers, pinned memory, weights and pool: all freed


def test_frame_size_check_and_bad_feeds(spec, trt):
    cuda = trt.cuda
    write_engines(spec)
    with make_preprocess(spec, CudaMemory()) as pre:
        pre.check_frame_size(1200, 8)
        copies = cuda.copies
        for h, w in ((1201, 100), (100, 7)):
            with pytest.raises(ModelError) as e:
                pre.check_frame_size(h, w)
            assert str(e.value).startswith(f"frame {w}x{h} (width x height) is outside") and "8x8 to 1200x1200" in str(e.value)
            with pytest.raises(ModelError, match="outside the TensorRT engines' frame-size profile"):
                pre.infer({"frame": np.zeros((h, w, 3), np.uint8)})
        assert cuda.copies == copies  # refused before anything went to the GPU
        for feed in ({"frame": np.zeros((20, 20, 3), np.float32)}, {"frame": np.zeros((20, 20), np.uint8)},
                     {"frame": np.zeros((20, 20, 3), np.uint8), "extra": 1}, {}):
            with pytest.raises(RuntimeFailure, match="the feed must be") as e:
                pre.infer(feed)
            assert "\n" not in str(e.value)
    with pytest.raises(RuntimeFailure, match="outside its `with` block"):
        pre.weights(20, 20)
    assert cuda.blocks == {}


def test_an_engine_profile_other_than_engines_json_is_refused(spec, trt):
    cuda = trt.cuda
    meta = write_engines(spec)
    meta["frame_size_profile"] = FrameSizeProfile((8, 48, 2000), (8, 64, 1200)).to_json()
    (spec.root / ENGINES_JSON).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"frame profile maximum \(1200, 1200, 3\), engines.json says \(2000, 1200, 3\)"):
        make_preprocess(spec, CudaMemory()).__enter__()
    assert cuda.blocks == {}  # the variant opened first was closed again
    meta["frame_size_profile"] = {"frame_height": "tall"}
    with pytest.raises(ModelError, match="malformed frame_size_profile"):
        make_preprocess(spec, CudaMemory(), meta)


def test_open_runners_attaches_preprocess_on_tensorrt_only(spec, trt, monkeypatch):
    monkeypatch.setattr(platform, "detect", lambda: fake_env(trt=trt.__version__))
    write_engines(spec, version=trt.__version__)
    runners = make_runners(spec)
    assert set(runners) == set(MODULES) | {"preprocess"}
    assert runners["preprocess"].memory is runners["image_encoder"].memory  # one stream for the frame and the encoder
    assert "preprocess" not in onnxruntime_runners(spec)  # ONNX Runtime preprocesses on the host (PIL)
    frame = vtest((64, 48))
    with open_runners(spec, "tensorrt") as active:
        assert active.backend == "tensorrt" and isinstance(active.preprocess, TensorRTPreprocess)
        active.preprocess.check_frame_size(48, 64)
        image = active.preprocess.infer({"frame": frame}, keep=("image",))["image"]
        assert isinstance(image, CudaTensor) and image.shape == (1, 3, S, S)
    assert trt.cuda.blocks == {}
    # Engines built before the preprocessing engines existed: no preprocess runner, host preprocessing.
    write_engines(spec, version=trt.__version__, preprocess=False)
    assert make_preprocess(spec, CudaMemory()) is None and "preprocess" not in make_runners(spec)
    with open_runners(spec, "tensorrt") as active:
        assert active.preprocess is None


# ---------------------------------------------------------------------- the engines check
def test_engines_check_covers_the_preprocessing_engines(spec, monkeypatch):
    from sam2trt.engine.compat import EnginesState, check_engines_meta, describe_engines, engines_status

    env = fake_env()
    monkeypatch.setattr(platform, "detect", lambda: env)
    meta = write_engines(spec)
    assert check_engines_meta(spec, meta, env) is None
    assert engines_status(spec).usable
    assert describe_engines(spec).endswith("preprocessing on the GPU for frames 8x8 to 1200x1200, built None")
    fix = f"rerun `sam2trt build-engines {spec.root} --force`"

    onnx, engine = preprocess_paths(spec)["preprocess_vertical_first"]
    engine.unlink()
    msg = check_engines_meta(spec, meta, env)
    assert msg == f"preprocess_vertical_first.engine missing in {spec.root}: {fix}"
    assert engines_status(spec).state is EnginesState.STALE
    write_engines(spec)
    onnx.write_bytes(onnx.read_bytes() + b" ")  # the graph changed since the build
    assert check_engines_meta(spec, meta, env) == \
        f"preprocess_vertical_first.onnx is missing or changed since the engines were built: {fix}"
    for bad in ({"variants": {}}, {"variants": {v: {} for v in PREPROCESS_VARIANTS}}):
        assert check_engines_meta(spec, dict(meta, preprocess=bad), env) == \
            f"{spec.root / ENGINES_JSON} has a malformed preprocess record: {fix}"
    assert "malformed" in check_engines_meta(spec, dict(meta, frame_size_profile=[1, 2]), env)
    # Without a preprocess record (engines from an older sam2trt): usable, host preprocessing.
    meta = write_engines(spec, preprocess=False)
    for _, e in preprocess_paths(spec).values():
        e.unlink(missing_ok=True)
    assert check_engines_meta(spec, meta, env) is None
    assert "preprocessing on the host" in describe_engines(spec)
