"""A "null" backend for host-only benchmarks: module runners that do no inference.

Each runner checks its feed like a real session would (input names, ranks,
dtypes, and the fixed and shared dimensions of :mod:`sam2trt.export.modules`)
and returns correctly shaped float32 outputs at once, so that a track measures
only the host side: decoding, preprocessing, the NumPy tracker core
(memory selection, mask choice, hole filling, bfloat16 rounding) and the
writers.

The outputs carry a plausible object so that the writers do real work
(overlay, contours, PNG, RLE): the mask decoder draws an elliptic blob of mask
logits (+10 inside, -10 outside, a linear ramp across the edge) for every
object and scores it present (object score logit +10). Where the blob is
travels through the same tensors as in the real model, so the tracker's data
flow is exercised:

- on a prompted frame the blob fills the prompt box (or the bounding box of
  the positive points, or of the mask prompt);
- the mask decoder writes the blob's state ``(cx, cy, rx, ry, vx, 1)``
  (low-resolution pixels; ``vx`` in pixels per frame) into the first
  :data:`CODE_SIZE` channels of every object pointer it returns; the tracker
  stores the chosen pointer in the memory bank;
- memory attention reads the state from the most recent object pointer it is
  given (smallest ``|obj_ptr_tpos|``), moves the blob ``vx`` low-res pixels
  sideways (bouncing off the borders) and writes the new state into
  ``pix_feat_with_mem[b, 0, 0, :CODE_SIZE]``, where the mask decoder reads it
  on a tracking frame.

Constant outputs (image features, spatial memory) are preallocated, read-only
zero arrays reused across calls; outputs with content (memory attention,
mask decoder) are fresh arrays, because the tracker may keep rows of them
across calls within a frame.

The module also provides a model spec without an export
(:func:`host_only_model_description`, :func:`write_host_only_model`,
:func:`host_only_spec`): the shapes and switches of ``sam2.1_hiera_t`` with
small seeded constants, for tests and benchmarks without torch or ONNX files.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Collection

import numpy as np

from sam2trt import __version__
from sam2trt.errors import ModelError
from sam2trt.model_spec import FORMAT_VERSION, MODEL_JSON, MODULES, ModelSpec
from sam2trt.runtime.base import ModuleRunners

BACKEND = "null"
CODE_SIZE = 6
"""Channels of an object pointer / of ``pix_feat_with_mem[b, 0, 0]`` holding the blob state
``(cx, cy, rx, ry, vx, valid)``."""
LOGIT = 10.0
"""Mask logit magnitude inside / outside the blob; also the object score logit."""
MIN_RADIUS = 2.0
"""Smallest blob radius in low-resolution pixels."""
POINT_RADIUS = 8.0
"""Blob radius (low-res pixels) around a single positive point."""
SPEED = 1.0
"""Initial sideways speed of a blob, low-resolution pixels per frame."""
IOU_PREDICTIONS = (0.5, 0.9, 0.8, 0.7)
"""Constant IoU estimates of the four mask tokens (multimask choice: token 1)."""

# ``model.json`` switches of sam2.1_hiera_t, as ``sam2trt.export.exporter.model_description`` writes
# them (PyPI sam2 1.1.0 config configs/sam2.1/sam2.1_hiera_t.yaml); tests/test_null_backend.py
# compares them with the real description when torch is installed.
_HIERA_T = {
    "config": "sam2.1_hiera_t", "image_size": 1024, "backbone_stride": 16, "feat_size": 64,
    "high_res_feat_shapes": [[32, 256, 256], [64, 128, 128]], "hidden_dim": 256, "mem_dim": 64,
    "num_maskmem": 7, "max_obj_ptrs_in_encoder": 16, "max_cond_frames_in_attn": -1,
    "memory_temporal_stride_for_eval": 1, "add_tpos_enc_to_obj_ptrs": True,
    "use_signed_tpos_enc_to_obj_ptrs": True, "only_obj_ptrs_in_the_past_for_eval": True,
    "pred_obj_scores": True, "soft_no_obj_ptr": False, "fixed_no_obj_ptr": True,
    "multimask_output_in_sam": True, "multimask_output_for_tracking": True, "multimask_min_pt_num": 0,
    "multimask_max_pt_num": 1, "use_multimask_token_for_obj_ptr": True,
    "binarize_mask_from_pts_for_mem_enc": True, "use_mask_input_as_output_without_sam": True,
    "dynamic_multimask_via_stability": True, "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98, "fill_hole_area": 8, "non_overlap_masks": False,
    "sigmoid_scale_for_mem_enc": 20.0, "sigmoid_bias_for_mem_enc": -10.0,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "opset": 17,
    "proj_tpos_enc_in_obj_ptrs": True, "pred_obj_scores_mlp": True, "no_obj_embed_spatial": True,
    "use_mlp_for_obj_ptr_proj": True, "iou_prediction_use_sigmoid": True,
}
HOST_ONLY_CONFIGS = ("sam2.1_hiera_t",)


def host_only_model_description(config: str = "sam2.1_hiera_t", seed: int = 0) -> dict:
    """A ``model.json`` content for ``config`` without an export (no torch, no ONNX files).

    Same keys, switches and constant shapes as
    :func:`sam2trt.export.exporter.model_description`; the constants are small
    seeded random values (``maskmem_tpos_enc`` ``[num_maskmem, mem_dim]``,
    ``no_mem_embed`` / ``no_obj_ptr`` ``[hidden_dim]``, std 0.02), except the
    ``mask_downsample`` conv, set to a 4x4 mean minus 0.5 so that a 0/1 mask
    prompt stays positive where it covers more than half of a block. ``source``
    says ``{"host_only": true, "seed": seed}``; ``files`` is empty.

    Raises:
        ValueError: ``config`` not in :data:`HOST_ONLY_CONFIGS`.
    """
    if config not in HOST_ONLY_CONFIGS:
        raise ValueError(f"no host-only description for {config!r}: use one of {', '.join(HOST_ONLY_CONFIGS)}")
    d = {"format_version": FORMAT_VERSION, "sam2trt_version": __version__, **_HIERA_T}
    rng = np.random.default_rng(seed)
    d["constants"] = {
        "maskmem_tpos_enc": (0.02 * rng.standard_normal((d["num_maskmem"], d["mem_dim"]))).tolist(),
        "no_mem_embed": (0.02 * rng.standard_normal(d["hidden_dim"])).tolist(),
        "no_obj_ptr": (0.02 * rng.standard_normal(d["hidden_dim"])).tolist(),
        "mask_downsample_weight": np.full((4, 4), 1.0 / 16).tolist(),
        "mask_downsample_bias": -0.5,
    }
    d["source"] = {"host_only": True, "seed": seed}
    d["files"] = {}
    return d


def write_host_only_model(out_dir: str | pathlib.Path, config: str = "sam2.1_hiera_t", seed: int = 0) -> pathlib.Path:
    """Write ``out_dir/model.json`` from :func:`host_only_model_description`; returns ``out_dir``.

    Only ``model.json`` is written: :func:`sam2trt.model_spec.load_model_spec`
    refuses the folder (it requires the four ONNX files); read it with
    :func:`host_only_spec`. Raises ``OSError`` when the folder is not writable.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_JSON).write_text(json.dumps(host_only_model_description(config, seed)))
    return out


def host_only_spec(root: str | pathlib.Path | None = None, config: str = "sam2.1_hiera_t", seed: int = 0) -> ModelSpec:
    """A :class:`ModelSpec` without module files: from ``root/model.json``, or built in memory.

    ``root``: a folder holding a ``model.json`` (e.g. from
    :func:`write_host_only_model`, or a real export); ``None`` builds
    :func:`host_only_model_description` (``config``, ``seed``) in memory, with
    ``root`` = the current folder. Unlike ``load_model_spec``, the ONNX files are
    not required (the null backend never opens them).

    Raises:
        sam2trt.errors.ModelError: ``root/model.json`` is missing, unreadable or
            from another format version.
    """
    if root is None:
        raw, root = host_only_model_description(config, seed), pathlib.Path(".")
    else:
        root = pathlib.Path(root)
        try:
            raw = json.loads((root / MODEL_JSON).read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {root / MODEL_JSON} ({type(e).__name__}): "
                             "write one with sam2trt.runtime.null_backend.write_host_only_model") from None
        if raw.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{root / MODEL_JSON} has format version {raw.get('format_version')}, "
                             f"this sam2trt reads {FORMAT_VERSION}: re-export the model")
    const = raw["constants"]
    f32 = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    return ModelSpec(root=root, raw=raw, maskmem_tpos_enc=f32(const["maskmem_tpos_enc"]),
                     no_mem_embed=f32(const["no_mem_embed"]),
                     no_obj_ptr=None if const.get("no_obj_ptr") is None else f32(const["no_obj_ptr"]),
                     mask_downsample_weight=f32(const["mask_downsample_weight"]),
                     mask_downsample_bias=float(const["mask_downsample_bias"]))


# -- runners ----------------------------------------------------------------------------------------

def _shape_dtype(value) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a feed value: an array, a kept output, or a nested list stacked by the runner."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("empty list in feed")
        inner, dtype = _shape_dtype(value[0])
        return (len(value),) + inner, dtype
    arr = value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)
    return tuple(arr.shape), np.dtype(arr.dtype)


class NullRunner:
    """Base of the null runners: the :class:`~sam2trt.runtime.base.Runner` interface, no inference.

    Subclasses set ``name``, ``input_names``, ``output_names``, ``_pattern(spec)``
    (expected shape per input: ints, or symbols like ``"B"`` that must agree
    across inputs) and ``_run(feed, dims)``.

    Args:
        spec: the model spec (dimensions: ``image_size``, ``feat_size``,
            ``hidden_dim``, ``mem_dim``, ``high_res_feat_shapes``).
    """

    name = ""
    input_names: list[str] = []
    output_names: list[str] = []
    _int_inputs = ()

    def __init__(self, spec):
        self.spec = spec
        self.h = spec.feat_size
        self.s = spec.low_res_size
        self.patterns = self._pattern(spec)

    def __enter__(self) -> "NullRunner":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _pattern(self, spec) -> dict[str, tuple]:
        raise NotImplementedError

    def _run(self, feed: dict, dims: dict) -> dict:
        raise NotImplementedError

    def _check(self, feed: dict) -> dict[str, int]:
        """Check names, ranks, dtypes and dimensions like a session; returns the symbolic dims' values."""
        if set(feed) != set(self.input_names):
            raise ValueError(f"{self.name}: feed has inputs {sorted(feed)}, the module takes {self.input_names}")
        dims: dict[str, int] = {}
        for name, pattern in self.patterns.items():
            shape, dtype = _shape_dtype(feed[name])
            want = np.int32 if name in self._int_inputs else np.float32
            if dtype != want:
                raise ValueError(f"{self.name}: input {name} is {dtype}, the module takes {np.dtype(want)}")
            if len(shape) != len(pattern):
                raise ValueError(f"{self.name}: input {name} has shape {shape}, the module takes {pattern}")
            for got, exp in zip(shape, pattern):
                if isinstance(exp, str):
                    exp = dims.setdefault(exp, got)
                if got != exp:
                    raise ValueError(f"{self.name}: input {name} has shape {shape}, the module takes {pattern} "
                                     f"(with {dims})")
        return dims

    def infer(self, feed: dict, keep: Collection[str] = ()) -> dict:
        """Check ``feed`` and return every output by name: NumPy arrays, or, for the
        outputs named in ``keep``, :class:`NullDeviceTensor` (as a device backend keeps them).

        Raises:
            ValueError: missing or extra inputs, or a wrong rank, dtype or dimension.
        """
        out = self._run(feed, self._check(feed))
        return {k: NullDeviceTensor(v) if k in keep else v for k, v in out.items()}


class NullDeviceTensor:
    """An output "kept on the device" by the null backend: what a TensorRT ``CudaTensor`` is to the tracker.

    Wraps a NumPy array the tracker core treats as opaque device memory (it is
    not rounded to bfloat16 or stacked on the host; feeding it back costs
    nothing), so a host-only run does the host work of a device backend. Has
    ``shape``, ``dtype``, ``ndim``, ``len()``, indexing (a view, again a
    ``NullDeviceTensor``) and ``np.asarray`` (the "download").
    """

    __slots__ = ("_a",)

    def __init__(self, array: np.ndarray):
        self._a = array

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)

    def __len__(self) -> int:
        return len(self._a)

    def __getitem__(self, index) -> "NullDeviceTensor":
        return NullDeviceTensor(self._a[index])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self._a if dtype is None else self._a.astype(dtype)


def _valid(code: np.ndarray) -> bool:
    """Whether ``code`` is a blob state (the ``valid`` flag set, positive radii)."""
    return bool(code[5] == 1.0 and code[2] > 0 and code[3] > 0)


def _centred(s: int) -> np.ndarray:
    """The state of a blob in the middle of an ``s x s`` low-res mask (for a missing or invalid state)."""
    return np.asarray([s / 2, s / 2, s / 8, s / 8, SPEED, 1.0], np.float32)


def _zeros_read_only(shape) -> np.ndarray:
    a = np.zeros(shape, np.float32)
    a.setflags(write=False)
    return a


class NullImageEncoder(NullRunner):
    """Image encoder stand-in: ``image [1, 3, S, S]`` -> read-only zero features.

    Outputs ``high_res_feat0 [1, C/8, 4H, 4W]``, ``high_res_feat1 [1, C/4, 2H, 2W]``,
    ``vision_feat [1, C, H, W]`` float32 (shapes from ``spec``), the same arrays every call.
    """

    name = "image_encoder"
    input_names = ["image"]
    output_names = ["high_res_feat0", "high_res_feat1", "vision_feat"]

    def _pattern(self, spec):
        return {"image": (1, 3, spec.image_size, spec.image_size)}

    def __init__(self, spec):
        super().__init__(spec)
        (c0, h0, w0), (c1, h1, w1) = spec.high_res_feat_shapes
        self._out = {"high_res_feat0": _zeros_read_only((1, c0, h0, w0)),
                     "high_res_feat1": _zeros_read_only((1, c1, h1, w1)),
                     "vision_feat": _zeros_read_only((1, spec.hidden_dim, self.h, self.h))}

    def _run(self, feed, dims):
        return dict(self._out)


class NullMemoryAttention(NullRunner):
    """Memory attention stand-in: moves each object's blob one step (see the module docstring).

    Inputs as :class:`sam2trt.export.modules.MemoryAttention`. Output
    ``pix_feat_with_mem [B, C, H, W]`` float32: zeros except the blob state in
    ``[b, 0, 0, :CODE_SIZE]``, in one of :attr:`RING` buffers reused in turn.
    """

    name = "memory_attention"
    input_names = ["vision_feat", "maskmem_features", "memory_tpos_enc", "obj_ptrs", "obj_ptr_tpos"]
    output_names = ["pix_feat_with_mem"]

    def _pattern(self, spec):
        c, cm, h = spec.hidden_dim, spec.mem_dim, self.h
        return {"vision_feat": (1, c, h, h), "maskmem_features": ("B", "T", cm, h, h), "memory_tpos_enc": ("T", cm),
                "obj_ptrs": ("B", "P", c), "obj_ptr_tpos": ("P",)}

    RING = 4
    """Output buffers reused in turn (a frame calls memory attention at most once per memory layout)."""

    def _run(self, feed, dims):
        b = dims["B"]
        ring = self.__dict__.setdefault("_ring", {}).setdefault(b, [])
        if len(ring) < self.RING:
            ring.append(np.zeros((b, self.spec.hidden_dim, self.h, self.h), np.float32))
        out = ring.pop(0)
        ring.append(out)
        ptrs = np.asarray(feed["obj_ptrs"], np.float32)
        latest = int(np.argmin(np.abs(np.asarray(feed["obj_ptr_tpos"], np.float32))))
        for i in range(b):
            out[i, 0, 0, :CODE_SIZE] = self._move(ptrs[i, latest, :CODE_SIZE])
        return {"pix_feat_with_mem": out}

    def _move(self, code: np.ndarray) -> np.ndarray:
        """One frame of motion: ``cx += vx``, reversing ``vx`` at the borders; an invalid state -> centred blob."""
        s = float(self.s)
        if not _valid(code):
            return _centred(self.s)
        cx, cy, rx, ry, vx, _ = (float(v) for v in code)
        lo, hi = min(rx, s / 2), max(s - rx, s / 2)
        cx += vx
        if cx < lo or cx > hi:
            vx, cx = -vx, min(max(cx, lo), hi)
        return np.asarray([cx, cy, rx, ry, vx, 1.0], np.float32)


class NullMaskDecoder(NullRunner):
    """Mask decoder stand-in: one elliptic blob per object, scored present.

    Inputs as :class:`sam2trt.export.modules.MaskDecoder`. The blob comes from
    the prompt points (box corners, labels 2/3, or positive points, label 1;
    ``point_coords`` in model pixels), else from a mask prompt
    (``has_mask_input``: bounding box of ``mask_input > 0``), else from the state
    in ``pix_feat[b, 0, 0, :CODE_SIZE]`` (tracking frames).

    Outputs (fresh arrays): ``low_res_masks [B, 4, 4H, 4W]`` (the same blob in
    all four tokens, logits in ``[-LOGIT, LOGIT]``), ``iou_predictions [B, 4]``
    (:data:`IOU_PREDICTIONS`), ``obj_ptrs [B, 4, C]`` (zeros except the blob
    state in the first :data:`CODE_SIZE` channels), ``object_score_logits [B, 1]``
    (+``LOGIT``), all float32.
    """

    name = "mask_decoder"
    input_names = ["pix_feat", "high_res_feat0", "high_res_feat1", "point_coords", "point_labels",
                   "mask_input", "has_mask_input"]
    output_names = ["low_res_masks", "iou_predictions", "obj_ptrs", "object_score_logits"]
    _int_inputs = ("point_labels",)

    def __init__(self, spec):
        super().__init__(spec)
        self._grid = np.arange(self.s, dtype=np.float32) + np.float32(0.5)  # low-res pixel centres
        self._scale = self.s / spec.image_size  # model pixels -> low-res pixels

    def _pattern(self, spec):
        c, h = spec.hidden_dim, self.h
        (c0, h0, w0), (c1, h1, w1) = spec.high_res_feat_shapes
        return {"pix_feat": ("B", c, h, h), "high_res_feat0": (1, c0, h0, w0), "high_res_feat1": (1, c1, h1, w1),
                "point_coords": ("B", "N", 2), "point_labels": ("B", "N"), "mask_input": ("B", 1, 4 * h, 4 * h),
                "has_mask_input": ("B",)}

    def _state(self, feed, i: int) -> np.ndarray:
        """Blob state ``(cx, cy, rx, ry, vx, 1)`` of row ``i`` from its prompt, or from ``pix_feat``."""
        labels = np.asarray(feed["point_labels"][i])
        coords = np.asarray(feed["point_coords"][i], np.float32) * np.float32(self._scale)
        pts = coords[(labels == 1) | (labels == 2) | (labels == 3)]
        box = None
        if len(pts):
            box = pts.min(0), pts.max(0)
        elif float(np.asarray(feed["has_mask_input"])[i]) > 0:
            ys, xs = np.nonzero(np.asarray(feed["mask_input"][i])[0] > 0)
            if len(xs):
                box = np.asarray([xs.min(), ys.min()], np.float32), np.asarray([xs.max() + 1, ys.max() + 1], np.float32)
        if box is None:
            return np.asarray(feed["pix_feat"][i][0, 0, :CODE_SIZE], np.float32)
        (x0, y0), (x1, y1) = box
        r = POINT_RADIUS if len(pts) == 1 else MIN_RADIUS
        return np.asarray([(x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, r), max((y1 - y0) / 2, r), SPEED, 1.0],
                          np.float32)

    def _run(self, feed, dims):
        b, c = dims["B"], self.spec.hidden_dim
        masks = np.empty((b, 4, self.s, self.s), np.float32)
        ptrs = np.zeros((b, 4, c), np.float32)
        g = self._grid
        for i in range(b):
            code = self._state(feed, i)
            if not _valid(code):
                code = _centred(self.s)
            cx, cy, rx, ry = (float(v) for v in code[:4])
            m = masks[i, 0]
            np.add.outer(((g - cy) / ry) ** 2, ((g - cx) / rx) ** 2, out=m)  # r^2, 1 on the ellipse
            np.multiply(m, -LOGIT, out=m)
            np.add(m, LOGIT, out=m)
            np.clip(m, -LOGIT, LOGIT, out=m)
            masks[i, 1:] = m
            ptrs[i, :, :CODE_SIZE] = code
        return {"low_res_masks": masks,
                "iou_predictions": np.tile(np.asarray(IOU_PREDICTIONS, np.float32), (b, 1)),
                "obj_ptrs": ptrs,
                "object_score_logits": np.full((b, 1), LOGIT, np.float32)}


class NullMemoryEncoder(NullRunner):
    """Memory encoder stand-in: ``maskmem_features [B, Cm, H, W]`` float32 zeros (read-only, reused).

    Inputs as :class:`sam2trt.export.modules.MemoryEncoder`. The tracker rounds
    host memory to bfloat16 into a new array, so reusing the buffer is safe.
    """

    name = "memory_encoder"
    input_names = ["vision_feat", "mask_logits", "object_score_logits", "binarize_mask"]
    output_names = ["maskmem_features"]

    def __init__(self, spec):
        super().__init__(spec)
        self._buf = _zeros_read_only((0, spec.mem_dim, self.h, self.h))

    def _pattern(self, spec):
        h = self.h
        return {"vision_feat": (1, spec.hidden_dim, h, h), "mask_logits": ("B", 1, 4 * h, 4 * h),
                "object_score_logits": ("B", 1), "binarize_mask": ("B",)}

    def _run(self, feed, dims):
        b = dims["B"]
        if len(self._buf) < b:
            self._buf = _zeros_read_only((b, self.spec.mem_dim, self.h, self.h))
        return {"maskmem_features": self._buf[:b]}


class NullPreprocess:
    """The preprocessing module (:mod:`sam2trt.preprocess_graph`) without the work.

    ``infer({"frame": uint8 [H, W, 3]}) -> {"image": [1, 3, S, S] float32}``: checks
    the frame and returns a preallocated read-only zero image, as a device
    backend that resizes on the GPU would cost the host nothing but the upload.
    """

    name = "preprocess"

    def __init__(self, spec):
        self._image = _zeros_read_only((1, 3, spec.image_size, spec.image_size))

    def __enter__(self) -> "NullPreprocess":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def infer(self, feed: dict, keep: Collection[str] = ()) -> dict[str, np.ndarray]:
        """Raises ``ValueError`` unless ``feed`` is ``{"frame": uint8 [H, W, 3]}``."""
        frame = feed.get("frame") if set(feed) == {"frame"} else None
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
            raise ValueError(f"preprocess: feed must be {{'frame': uint8 [H, W, 3]}}, got {sorted(feed)}")
        return {"image": NullDeviceTensor(self._image) if "image" in keep else self._image}


_RUNNERS = {"image_encoder": NullImageEncoder, "memory_attention": NullMemoryAttention,
            "mask_decoder": NullMaskDecoder, "memory_encoder": NullMemoryEncoder}


def make_runners(spec, threads: int | None = None) -> dict[str, NullRunner]:
    """One null runner per module of ``spec`` (like the other backends' ``make_runners``).

    Args:
        spec: a :class:`ModelSpec` (a real export or :func:`host_only_spec`);
            no module file is opened.
        threads: accepted for the interface; the null runners use no threads.
    """
    return {name: _RUNNERS[name](spec) for name in MODULES}


@contextlib.contextmanager
def open_null_runners(spec, threads: int | None = None):
    """The four null runners as activated :class:`~sam2trt.runtime.base.ModuleRunners` (a context manager).

    ``backend`` is ``"null"``; ``reason`` says the outputs are placeholders.
    """
    with ModuleRunners(**make_runners(spec, threads), preprocess=NullPreprocess(spec), backend=BACKEND,
                       reason="host-only run: the modules return placeholder outputs (no inference)") as active:
        yield active
