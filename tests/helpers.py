"""Helpers shared by test modules (fixtures live in ``conftest.py``; TensorRT and CUDA stand-ins in ``tests/fakes/``).

Nothing here imports torch at import time: the parity helpers that run the
official predictor import it when called (their tests are marked ``slow``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib
import json
import pathlib
import subprocess
import sys
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from sam2trt import platform
from sam2trt.engine.compat import ENGINES_JSON, META_FORMAT
from sam2trt.errors import Sam2TrtError
from sam2trt.model_spec import MODULES, load_model_spec
from sam2trt.platform import Environment, GpuInfo
from sam2trt.runtime import open_runners
from sam2trt.runtime.base import ModuleRunners, to_host
from sam2trt.tracker import FrameStepper, ObjectPrompt, track_frames
from sam2trt.tracker.processing import upsample_logits
from sam2trt.video import open_frames, probe

DATA = pathlib.Path(__file__).parent / "data"
CONFIG = "sam2.1_hiera_t"
CONFIG_20 = "sam2_hiera_t"  # SAM 2.0: no no_obj_embed_spatial, no object-pointer temporal encoding
SEED = 0
# sam2_hiera_t with seed 0 scores both test objects absent on every frame (object
# score logits about -0.1), so every mask is empty and parity would prove nothing;
# seed 3 gives present objects (logits about +0.1) with masks neither empty nor full.
SEED_20 = 3
HYPERNET_SCALE = 40.0


def run_cli(*args, check=False, timeout=900):
    """Run ``python -m sam2trt.cli ARGS`` in a subprocess; returns CompletedProcess (text)."""
    proc = subprocess.run([sys.executable, "-m", "sam2trt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"sam2trt {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


PROMPT = ObjectPrompt(obj_id=1, frame_idx=0, box=(250, 215, 286, 312))  # --box 250,215,36,97
VIDEO_HW = (576, 768)
NUM_FRAMES = 16
MIN_MEAN_IOU = 0.98


@functools.lru_cache(maxsize=None)
def trt_skip_reason() -> str | None:
    """Why the TensorRT GPU tests cannot run here, or None when TensorRT, cuda-python and a GPU exist."""
    try:
        importlib.import_module("tensorrt")
    except Exception:
        return "TensorRT is not installed (pip install 'sam2trt[trt]')"
    if platform.import_cudart() is None:
        return "cuda-python is not installed"
    if not platform.detect().gpus:
        return "no CUDA GPU is visible"
    return None


def needs_tensorrt_gpu(test):
    """Mark ``test`` as a GPU test, skipped (before any fixture runs) without TensorRT + cuda-python + a GPU."""
    reason = trt_skip_reason()
    return pytest.mark.gpu(pytest.mark.skipif(reason is not None, reason=reason or "")(test))


def link_model(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """A model folder of symlinks to ``src``'s ONNX and JSON files (new files written there stay there)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix in (".onnx", ".json") and not f.name.endswith(".fp16.onnx") and f.name != ENGINES_JSON:
            (dst / f.name).symlink_to(f)
    return dst


def fake_env(gpu="NVIDIA H100 80GB HBM3", cc="9.0", trt="10.3.0", cuda="12.4") -> Environment:
    """An :class:`Environment` as :func:`sam2trt.platform.detect` would report it (None: absent)."""
    return Environment(gpus=[GpuInfo(gpu, cc, 79.6)] if gpu else [], driver_version="550.54.15",
                       cuda_runtime_version=cuda, tensorrt_version=trt,
                       tensorrt_major=int(trt.split(".")[0]) if trt else None,
                       onnxruntime_version="1.31.1", onnxruntime_providers=["CPUExecutionProvider"])


def engines_meta(onnx_sha: dict, **over) -> dict:
    """An ``engines.json`` record for the fake environment's GPU, with fields replaced by ``over``."""
    meta = {"format_version": META_FORMAT, "tensorrt_version": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0", "precision": "fp16", "max_objects": 8, "onnx_sha256": dict(onnx_sha)}
    meta.update(over)
    return meta


class ShapeRecorder:
    """Wraps a runner and records the shape of every input it is fed."""

    def __init__(self, runner, shapes: dict):
        self.runner, self.shapes, self.name = runner, shapes, runner.name

    def infer(self, feed, keep=()):
        for k, v in feed.items():
            self.shapes.setdefault((self.name, k), set()).add(to_host(v).shape)
        return self.runner.infer(feed, keep=keep)


def track_masks(spec, runners: dict, backend: str, frames_dir: pathlib.Path, max_frames: int,
                shapes: dict | None = None, num_frames: int = NUM_FRAMES,
                banks: dict | None = None) -> tuple[list[np.ndarray], float]:
    """Track :data:`PROMPT`; returns (per-frame ``[1, H, W]`` bool masks at video resolution, seconds).

    ``shapes``: a dict to receive the input shapes fed to each runner; ``banks``:
    a dict to receive the memory banks (by object id).
    """
    with contextlib.ExitStack() as stack:
        active = {name: stack.enter_context(runners[name]) for name in MODULES}
        if shapes is not None:
            active = {k: ShapeRecorder(v, shapes) for k, v in active.items()}
        stepper = FrameStepper(spec, ModuleRunners(**active, backend=backend))
        masks = []
        t0 = time.perf_counter()
        with open_frames(frames_dir) as frames:
            for out in track_frames(stepper, frames, [PROMPT], num_frames=num_frames, max_frames=max_frames,
                                    banks=banks):
                masks.append(upsample_logits(out.mask_logits, *VIDEO_HW) > 0)
        return masks, time.perf_counter() - t0


def mean_iou(a: list[np.ndarray], b: list[np.ndarray], label: str) -> float:
    """Mean per-frame IoU of two mask lists (printed per frame)."""
    ious = []
    for x, y in zip(a, b, strict=True):
        union = np.logical_or(x, y).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
    print(f"{label}: per-frame IoU " + " ".join(f"{v:.4f}" for v in ious) + f"; mean {np.mean(ious):.4f}")
    return float(np.mean(ious))
# ------------------------------------------------------------ end TensorRT / engines


# ------------------------------------------------ parity with the official predictor
BOXES = [(250, 215, 36, 97), (636, 238, 50, 85)]  # x, y, w, h on frame 0 of vtest.avi
PARITY_FRAMES = 12  # frames tracked by the parity cases: > num_maskmem (7), the memory bank fills and slides


def scipy_connected_components(mask):
    """CPU stand-in for ``sam2._C.get_connected_components`` (8-connectivity).

    ``mask``: ``[N, 1, H, W]`` bool tensor. Returns (labels, areas), both
    ``[N, 1, H, W]`` int32, 0 on background, like the CUDA kernel.
    """
    import torch
    from scipy import ndimage

    m = mask.cpu().numpy().astype(bool)
    labels = np.zeros(m.shape, np.int32)
    areas = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        lab, _ = ndimage.label(m[i, 0], structure=np.ones((3, 3), int))
        counts = np.bincount(lab.ravel())
        labels[i, 0] = lab
        areas[i, 0] = np.where(lab > 0, counts[lab], 0)
    return torch.from_numpy(labels), torch.from_numpy(areas)


# The parity runs are memoised for the test session: the OpenVINO, preprocessing and
# direction tests compare against the same references, computed once. Results are
# shared: callers only read them.
_OFFICIAL_RUNS: dict = {}
_OUR_RUNS: dict = {}
_OPEN_RUNNERS: dict = {}


def memoize_forward_image(predictor):
    """``predictor`` with its image encoder (``SAM2Base.forward_image``) run once per distinct frame.

    The official predictor encodes a frame again in every ``propagate_in_video``,
    and the parity tests track the same frames many times. ``forward_image`` is a
    deterministic function of the ``[1, 3, S, S]`` float32 image tensor, so the
    memoised outputs (dict and lists copied, tensors shared: the official code
    only reads them) are what a fresh call returns.
    """
    import torch

    cache, first_pos = {}, []
    forward_image = predictor.forward_image

    def memoized(img_batch):
        key = hashlib.sha1(img_batch.detach().contiguous().numpy().tobytes()).digest() + repr(tuple(img_batch.shape)).encode()
        if key not in cache:
            out = forward_image(img_batch)
            pos = out["vision_pos_enc"]  # depends on the feature sizes only: keep one copy (84 MB for tiny)
            if first_pos and all(torch.equal(a, b) for a, b in zip(first_pos, pos)):
                out["vision_pos_enc"] = list(first_pos)
            elif not first_pos:
                first_pos.extend(pos)
            cache[key] = out
        return {k: list(v) if isinstance(v, list) else v for k, v in cache[key].items()}

    predictor.forward_image = memoized
    return predictor


class MemoImageEncoder:
    """A runner wrapper that encodes each distinct ``image`` feed once (``[1, 3, S, S]`` float32; deterministic)."""

    def __init__(self, runner):
        self.runner, self.name, self.cache = runner, runner.name, {}

    def infer(self, feed, keep=()):
        image = np.ascontiguousarray(np.asarray(feed["image"]))
        key = hashlib.sha1(image.tobytes()).digest() + repr(image.shape).encode()
        if key not in self.cache:
            self.cache[key] = self.runner.infer(feed, keep)
        return dict(self.cache[key])


def session_runners(model_dir, backend="onnxruntime", **opts):
    """``(spec, runners)`` for ``model_dir`` on ``backend``, opened once per test session (closed at exit),
    the image encoder memoised (:class:`MemoImageEncoder`)."""
    key = (str(model_dir), backend, tuple(sorted(opts.items())))
    if key not in _OPEN_RUNNERS:
        stack = contextlib.ExitStack()
        atexit.register(stack.close)
        spec = load_model_spec(model_dir)
        runners = stack.enter_context(open_runners(spec, backend, **opts))
        runners.image_encoder = MemoImageEncoder(runners.image_encoder)
        _OPEN_RUNNERS[key] = spec, runners
    return _OPEN_RUNNERS[key]


def run_official(predictor, frames_dir, boxes, prompt_frame, num_tracked, fill_holes: bool, monkeypatch):
    """{frame_idx: [K, H, W] float32 logits} from the official predictor (memoised per session: read only)."""
    key = (id(predictor), str(frames_dir), tuple(map(tuple, boxes)), prompt_frame, num_tracked, bool(fill_holes))
    if key not in _OFFICIAL_RUNS:
        _OFFICIAL_RUNS[key] = _run_official(predictor, frames_dir, boxes, prompt_frame, num_tracked, fill_holes,
                                            monkeypatch)
    return _OFFICIAL_RUNS[key]


def _run_official(predictor, frames_dir, boxes, prompt_frame, num_tracked, fill_holes: bool, monkeypatch):
    import torch
    import sam2.utils.misc as misc

    if fill_holes:
        monkeypatch.setattr(misc, "get_connected_components", scipy_connected_components)
    with torch.inference_mode():
        state = predictor.init_state(str(frames_dir))
        predictor.fill_hole_area = 8 if fill_holes else 0
        for obj_id, (x, y, w, h) in enumerate(boxes, start=1):
            predictor.add_new_points_or_box(state, frame_idx=prompt_frame, obj_id=obj_id, box=[x, y, x + w, y + h])
        out = {}
        for idx, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=num_tracked - 1):
            out[idx] = masks[:, 0].numpy()
    predictor.fill_hole_area = 8
    return out


def run_official_prompt(predictor, frames_dir, prompt, num_tracked):
    """{frame_idx: [H, W] logits}: the official predictor tracking one object alone (no hole filling)."""
    import torch

    with torch.inference_mode():
        state = predictor.init_state(str(frames_dir))
        predictor.fill_hole_area = 0
        if prompt.mask is not None:
            predictor.add_new_mask(state, frame_idx=prompt.frame_idx, obj_id=prompt.obj_id, mask=prompt.mask)
        else:
            pts = [(x, y) for x, y, _ in prompt.points] or None
            labels = [lab for _, _, lab in prompt.points] or None
            predictor.add_new_points_or_box(state, frame_idx=prompt.frame_idx, obj_id=prompt.obj_id, points=pts,
                                            labels=labels, box=list(prompt.box) if prompt.box else None)
        out = {idx: masks[0, 0].numpy()
               for idx, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=num_tracked - 1)}
    predictor.fill_hole_area = 8
    return out


def run_ours_prompts(model_dir, frames_dir, prompts, num_tracked, fill_hole_area=0, backend="onnxruntime", **opts):
    """{frame_idx: {obj_id: [H, W] logits}} from sam2trt on ``backend`` (``opts``: e.g. ``precision``).

    Memoised per session (read only); the runners are opened once per model and backend (:func:`session_runners`).
    """
    masks = [None if p.mask is None else hashlib.sha1(np.ascontiguousarray(p.mask)).hexdigest() for p in prompts]
    key = (str(model_dir), str(frames_dir), repr(prompts), repr(masks), num_tracked, fill_hole_area, backend,
           tuple(sorted(opts.items())))
    if key not in _OUR_RUNS:
        _OUR_RUNS[key] = _run_ours_prompts(model_dir, frames_dir, prompts, num_tracked, fill_hole_area, backend,
                                           **opts)
    return _OUR_RUNS[key]


def _run_ours_prompts(model_dir, frames_dir, prompts, num_tracked, fill_hole_area, backend, **opts):
    spec, runners = session_runners(model_dir, backend, **opts)
    out = {}
    with open_frames(frames_dir) as source:
        h, w = source.info.height, source.info.width
        stepper = FrameStepper(spec, runners, fill_hole_area=fill_hole_area)
        for fo in track_frames(stepper, source, prompts, num_frames=source.info.num_frames, max_frames=num_tracked):
            logits = upsample_logits(fo.mask_logits, h, w)
            out[fo.frame_idx] = {oid: logits[k] for k, oid in enumerate(fo.obj_ids)}
    return out


def run_ours(model_dir, frames_dir, boxes, prompt_frame, num_tracked, fill_hole_area, backend="onnxruntime", **opts):
    """{frame_idx: [K, H, W] float32 logits} from sam2trt on ``backend`` (default ONNX Runtime)."""
    prompts = [ObjectPrompt(i + 1, prompt_frame, box=(x, y, x + w, y + h)) for i, (x, y, w, h) in enumerate(boxes)]
    res = run_ours_prompts(model_dir, frames_dir, prompts, num_tracked, fill_hole_area, backend, **opts)
    return {f: np.stack([objs[i + 1] for i in range(len(boxes))]) for f, objs in res.items()}


def iou(a, b) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def iou_table(ours, ref, label=""):
    """Print per-frame IoU of one object's masks and assert the parity bar."""
    assert sorted(ours) == sorted(ref), "different frames processed"
    ious = []
    for idx in sorted(ref):
        v = iou(ours[idx] > 0, ref[idx] > 0)
        area = int((ref[idx] > 0).sum())
        print(f"{label} frame {idx:3d}: IoU {v:.5f}  area {area}")
        assert 0 < area < ref[idx].size, "degenerate reference mask: the test would prove nothing"
        ious.append(v)
    ious = np.asarray(ious)
    print(f"{label}: mean IoU {ious.mean():.6f}, min {ious.min():.6f} over {len(ious)} frames")
    assert ious.mean() >= 0.999
    assert ious.min() >= 0.99


def compare(ours, ref, n_obj):
    """:func:`iou_table` for each of ``n_obj`` objects of ``{frame: [K, H, W]}`` logits."""
    for k in range(n_obj):
        iou_table({f: v[k] for f, v in ours.items()}, {f: v[k] for f, v in ref.items()}, f"object {k + 1}")


# ------------------------------------------------ outputs of an interrupted or failed run
def decodable(path) -> int:
    """Frames that decode before the end or the first error."""
    n = 0
    try:
        with open_frames(path) as src:
            for _ in src:
                n += 1
    except Sam2TrtError:
        pass
    return n


def check_partial(d: pathlib.Path, first: int, frames: int, pre_frames: int, full_disk: bool = False):
    """Outputs at final names are valid and hold exactly the processed frames; no temporaries are left.

    With ``full_disk`` an output may be missing or hold only the first frames (writing stopped there).
    """
    assert not [p for p in d.rglob("*") if ".partial-" in p.name], sorted(d.rglob("*"))
    done = list(range(first, first + frames))

    def same(got, want):
        assert got == want[:len(got)] if full_disk else got == want, (got, want)

    if (d / "o.mp4").exists() or not full_disk:
        n = probe(d / "o.mp4").num_frames
        same(list(range(n)), list(range(pre_frames + frames)))
        assert decodable(d / "o.mp4") == n
    pngs = sorted((d / "m").glob("*.png")) if (d / "m").exists() else []
    same([int(p.stem) for p in pngs], done)
    for p in pngs:
        with Image.open(p) as im:
            im.load()
            assert im.mode == "P" and im.size == (768, 576)
    if (d / "t.jsonl").exists() or not full_disk:
        same([json.loads(line)["frame"] for line in (d / "t.jsonl").read_text().splitlines()], done)
    if (d / "c.json").exists() or (not full_disk and frames):
        got = check_coco(d / "c.json", None if full_disk else d / "m")
        same(got, done)


def check_coco(path, masks_dir) -> list[int]:
    """pycocotools loads the file, and each RLE decodes to the object's pixels in the PNG; returns its frames."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    coco = COCO(str(path))
    for ann in coco.dataset["annotations"]:
        m = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert int(m.sum()) == ann["area"] == int(mask_utils.area(ann["segmentation"]))
        if masks_dir is not None:
            frame = coco.imgs[ann["image_id"]]["frame_index"]
            png = np.asarray(Image.open(pathlib.Path(masks_dir) / f"{frame:05d}.png"))
            assert np.array_equal(m, png == ann["track_id"])
    return sorted(img["frame_index"] for img in coco.dataset["images"])


# ------------------------------------------------ synthetic videos
def gradient_frame(i: int, w: int, h: int) -> np.ndarray:
    """Smooth gradient whose brightness encodes ``i`` (survives lossy coding)."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 20 * i)], axis=-1)
    return rgb.astype(np.uint8)


def make_video(path: pathlib.Path, w: int = 64, h: int = 48, n: int = 10, codec: str = "mpeg4") -> pathlib.Path:
    """Write ``n`` :func:`gradient_frame` frames (25 fps, ``codec``) to ``path``; returns it."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(25))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        c.start_encoding()  # writes the header even when n == 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(gradient_frame(i, w, h), format="rgb24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


# ------------------------------------------------ tracker units
class SelectionSpec:
    """The memory-selection switches of sam2.1_hiera_t."""

    num_maskmem = 7
    memory_temporal_stride_for_eval = 1
    max_cond_frames_in_attn = -1
    max_obj_ptrs_in_encoder = 16
    only_obj_ptrs_in_the_past_for_eval = True
    use_signed_tpos_enc_to_obj_ptrs = True
