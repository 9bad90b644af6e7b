"""Real TensorRT engines on a GPU (``@pytest.mark.gpu``; skipped without TensorRT + cuda-python + a GPU):
build fp16 engines of the tiny model, track 30 frames with the TensorRT backend (memory bank on
the GPU), IoU against ONNX Runtime fp32, frames per second; the preprocessing engines against PIL,
and tracking with them against host preprocessing.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np
import pytest

from sam2trt.engine.build import build_engines
from sam2trt.engine.compat import ENGINES_JSON, engines_status
from PIL import Image

from sam2trt.errors import ModelError, RuntimeFailure
from sam2trt.model_spec import MODULES, load_model_spec
from sam2trt.runtime.base import ModuleRunners
from sam2trt.tracker import FrameStepper, track_frames
from sam2trt.tracker.processing import pil_resizes_vertically_first, preprocess_frame, upsample_logits
from sam2trt.video import open_frames
from sam2trt.runtime import onnxruntime_backend, tensorrt_backend
from sam2trt.runtime.cuda_memory import CudaTensor
from sam2trt.runtime.select import open_runners
from tests.helpers import (DATA, MIN_MEAN_IOU, PROMPT, VIDEO_HW, link_model, mean_iou, needs_tensorrt_gpu, track_masks,
                           trt_skip_reason)

GPU_FRAMES = 30  # the 16-frame excerpt forward and back


# ---------------------------------------------------------------------- GPU (TensorRT)
@pytest.fixture(scope="module")
def trt_model_dir(request, tmp_path_factory) -> pathlib.Path:
    """A symlinked copy of the tiny model with fp16 engines (max 2 objects) built for this GPU."""
    if trt_skip_reason():  # before exporting the model: skip fast
        pytest.skip(trt_skip_reason())
    d = link_model(request.getfixturevalue("tiny_model_dir"), tmp_path_factory.mktemp("trt") / "model")
    t0 = time.perf_counter()
    build_engines(d, precision="fp16", max_objects=2, log=print)
    print(f"build-engines (fp16, 4 engines): {time.perf_counter() - t0:.1f} s")
    return d


@pytest.fixture(scope="module")
def pingpong_frames(vtest_frames, tmp_path_factory) -> pathlib.Path:
    """GPU_FRAMES real frames: the 16-frame excerpt forward, then back (frames 14..1), as symlinks."""
    d = tmp_path_factory.mktemp("pingpong")
    files = sorted(vtest_frames.glob("*.jpg"))
    for i, f in enumerate((files + files[-2:0:-1])[:GPU_FRAMES]):
        (d / f"{i:05d}.jpg").symlink_to(f)
    return d


@needs_tensorrt_gpu
@pytest.mark.slow
def test_tensorrt_fp16_engines_track_like_onnxruntime(trt_model_dir, pingpong_frames):
    spec = load_model_spec(trt_model_dir)
    meta = json.loads((trt_model_dir / ENGINES_JSON).read_text())
    assert meta["precision"] == "fp16" and meta["max_objects"] == 2
    assert engines_status(spec).usable, engines_status(spec).reason
    lines = []
    build_engines(trt_model_dir, precision="fp16", max_objects=2, log=lines.append)
    assert lines and "up to date" in lines[0]

    n, banks = GPU_FRAMES, {}
    trt_runners = tensorrt_backend.make_runners
    masks, secs = track_masks(spec, trt_runners(spec), "tensorrt", pingpong_frames, n, num_frames=n, banks=banks)
    masks2, secs2 = track_masks(spec, trt_runners(spec), "tensorrt", pingpong_frames, n, num_frames=n)  # warm
    print(f"TensorRT fp16: {n} frames in {secs:.2f} s cold, {secs2:.2f} s warm "
          f"({n / secs2:.1f} frames per second, 1 object, tracker + host copies included)")
    # The memory bank's spatial features stayed on the GPU.
    kept = [m.maskmem_features for m in list(banks[PROMPT.obj_id].cond.values())
            + list(banks[PROMPT.obj_id].non_cond.values()) if m.maskmem_features is not None]
    assert kept and all(isinstance(f, CudaTensor) for f in kept)
    ref, _ = track_masks(spec, onnxruntime_backend.make_runners(spec), "onnxruntime", pingpong_frames, n, num_frames=n)
    assert mean_iou(masks, ref, "TensorRT fp16 vs ONNX Runtime fp32") >= MIN_MEAN_IOU
    assert mean_iou(masks2, masks, "TensorRT fp16, second run vs first") >= 0.999
    with open_runners(spec, "auto") as runners:
        assert runners.backend == "tensorrt"
        # Outside the profile (3 objects > max_objects=2): one-line error naming the fix.
        with pytest.raises(RuntimeFailure, match="--max-objects"):
            runners.memory_encoder.infer({
                "vision_feat": np.zeros((1, 256, 64, 64), np.float32),
                "mask_logits": np.zeros((3, 1, 256, 256), np.float32),
                "object_score_logits": np.zeros((3, 1), np.float32),
                "binarize_mask": np.zeros((3,), np.float32)})


@needs_tensorrt_gpu
@pytest.mark.slow
def test_tensorrt_runner_matches_onnxruntime_per_module(trt_model_dir):
    spec = load_model_spec(trt_model_dir)
    rng = np.random.default_rng(0)
    feed = {"vision_feat": rng.standard_normal((1, 256, 64, 64), np.float32),
            "mask_logits": 8 * rng.standard_normal((2, 1, 256, 256), np.float32),
            "object_score_logits": np.array([[1.0], [-1.0]], np.float32),
            "binarize_mask": np.array([1.0, 0.0], np.float32)}
    with tensorrt_backend.make_runners(spec)["memory_encoder"] as t, \
            onnxruntime_backend.make_runners(spec)["memory_encoder"] as o:
        got, want = t.infer(feed)["maskmem_features"], o.infer(feed)["maskmem_features"]
        again = t.infer(feed)["maskmem_features"]
        kept = t.infer(feed, keep=("maskmem_features",))["maskmem_features"]  # stays on the GPU
        np.testing.assert_array_equal(np.asarray(kept), got)
        np.testing.assert_array_equal(np.asarray(kept[1]), got[1])
        t.infer(dict(feed, mask_logits=feed["mask_logits"][:1], object_score_logits=feed["object_score_logits"][:1],
                     binarize_mask=feed["binarize_mask"][:1]))
    assert got.shape == want.shape == (2, 64, 64, 64)
    np.testing.assert_array_equal(got, again)  # outputs are copies, not views of the pinned buffers
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    print(f"memory encoder, TensorRT fp16 vs ONNX Runtime fp32: relative L2 error {rel:.2e}")
    assert rel < 2e-2



@needs_tensorrt_gpu
@pytest.mark.slow
def test_tensorrt_preprocess_engines_match_pil(trt_model_dir):
    """The preprocessing engines (fp32, TF32 off) against PIL, within the bound measured on ONNX Runtime
    (tests/test_preprocess_graph.py: at most 1 unit of 0..255, mean <= 1e-4 units), both variants."""
    spec = load_model_spec(trt_model_dir)
    meta = json.loads((trt_model_dir / ENGINES_JSON).read_text())
    assert meta["preprocess"]["tf32"] is False
    f0 = np.asarray(Image.open(DATA / "vtest16" / "00000.jpg").convert("RGB"))
    frames = {
        "vtest 768x576": f0,
        "1920x1080": np.asarray(Image.fromarray(f0).resize((1920, 1080), Image.BICUBIC)),
        "3840x2160": np.asarray(Image.fromarray(f0).resize((3840, 2160), Image.BICUBIC)),
        "odd crop 511x383": np.ascontiguousarray(f0[7:390, 13:524]),
        "portrait 720x1280": np.asarray(Image.fromarray(f0[:, 100:460]).resize((720, 1280), Image.BILINEAR)),
    }
    std = np.asarray(spec.image_std, np.float32)[:, None, None] * 255
    with open_runners(spec, "tensorrt") as runners:
        pre = runners.preprocess
        for label, rgb in frames.items():
            h, w = rgb.shape[:2]
            pre.check_frame_size(h, w)
            got = np.asarray(pre.infer({"frame": rgb}, keep=("image",))["image"])
            err = np.abs(got - preprocess_frame(rgb, spec.image_size, spec.image_mean, spec.image_std))[0] * std
            print(f"{label} ({'vertical' if pil_resizes_vertically_first(h, w, 1024, 1024) else 'horizontal'} "
                  f"first): max {err.max():.3f} units, mean {err.mean():.2e}, {(err > 0.5).sum()} pixels off")
            assert err.max() <= 1.0 + 1e-3 and err.mean() <= 1e-4, label
        t0 = time.perf_counter()
        for _ in range(20):
            pre.infer({"frame": frames["1920x1080"]}, keep=("image",))
        pre.synchronize()
        print(f"preprocessing 1920x1080 on the GPU: {(time.perf_counter() - t0) / 20 * 1e3:.2f} ms per frame "
              "(upload included)")
        with pytest.raises(ModelError, match="frame-size profile"):
            pre.check_frame_size(4320, 7680)


@needs_tensorrt_gpu
@pytest.mark.slow
def test_tracking_with_gpu_preprocessing_matches_host_preprocessing(trt_model_dir, vtest_frames):
    spec = load_model_spec(trt_model_dir)

    def track(use_gpu_preprocessing: bool) -> list[np.ndarray]:
        with open_runners(spec, "tensorrt") as runners:
            assert runners.preprocess is not None
            active = {m: getattr(runners, m) for m in MODULES}
            pre = runners.preprocess if use_gpu_preprocessing else None
            stepper = FrameStepper(spec, ModuleRunners(**active, backend="tensorrt", preprocess=pre))
            with open_frames(vtest_frames) as frames:
                return [upsample_logits(out.mask_logits, *VIDEO_HW) > 0
                        for out in track_frames(stepper, frames, [PROMPT], num_frames=16, max_frames=16)]

    assert mean_iou(track(True), track(False), "TensorRT, GPU vs host preprocessing") >= 0.999
