"""Pre- and post-processing around the modules, in NumPy / PIL / OpenCV.

Each function mirrors a step of the official predictor, named in its docstring.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image

NO_OBJ_SCORE = -1024.0  # sam2.modeling.sam2_base.NO_OBJ_SCORE
PIL_PRECISION_BITS = 22  # fractional bits of PIL's 8-bit resampling coefficients (Resample.c PRECISION_BITS)


def preprocess_frame(rgb: np.ndarray, image_size: int, mean, std, out: np.ndarray | None = None) -> np.ndarray:
    """RGB frame -> image encoder input.

    Mirrors ``sam2.utils.misc._load_img_as_tensor`` + ``load_video_frames``:
    PIL resize to ``image_size`` square with PIL's default filter, ``/ 255``
    (in float64, then float32), minus ImageNet mean, divided by std.

    Args:
        rgb: ``[H, W, 3]`` uint8 frame.
        image_size: model input side in pixels (1024).
        mean, std: 3 floats each.
        out: optional ``[1, 3, S, S]`` float32 buffer to write into (e.g. pinned memory).
    Returns:
        ``[1, 3, S, S]`` float32 array (``out`` if given).
    """
    resized = np.asarray(Image.fromarray(rgb).resize((image_size, image_size)))
    img = (resized / 255.0).astype(np.float32).transpose(2, 0, 1)
    if out is None:
        out = np.empty((1, 3, image_size, image_size), dtype=np.float32)
    np.subtract(img, np.asarray(mean, dtype=np.float32)[:, None, None], out=out[0])
    np.divide(out[0], np.asarray(std, dtype=np.float32)[:, None, None], out=out[0])
    return out


def fill_holes(mask_logits: np.ndarray, max_area: int) -> np.ndarray:
    """Fill background holes of area <= ``max_area`` pixels with logit 0.1.

    Mirrors ``sam2.utils.misc.fill_holes_in_mask_scores`` (8-connected
    components of ``logits <= 0``), which needs a CUDA extension in the official
    code; here OpenCV's ``connectedComponentsWithStats`` does the labelling.

    Only the object's bounding box grown by one pixel is labelled: every
    background pixel outside it belongs to the one component around the
    object, and so does any component touching a side of the crop that is not
    an image border. When each connected piece of the outside has more than
    ``max_area`` pixels, such components are never filled, so the crop gives
    the same result as the whole mask; otherwise the whole mask is labelled.

    Args:
        mask_logits: ``[K, h, w]`` float32 low-resolution mask logits.
        max_area: largest hole to fill, in low-res pixels; ``<= 0`` returns the input.
    Returns:
        A new ``[K, h, w]`` float32 array.
    """
    if max_area <= 0:
        return mask_logits
    out = mask_logits.copy()
    h, w = out.shape[1:]
    for k in range(out.shape[0]):
        fg = out[k] > 0
        rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
        if rows.size == 0:  # all background: one component of h * w pixels
            if h * w <= max_area:
                out[k][:] = 0.1
            continue
        y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
        x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
        full_w, full_h = x0 == 0 and x1 == w, y0 == 0 and y1 == h
        if full_w and full_h:
            pieces = []
        elif full_w:  # the outside is two bands, above and below
            pieces = [a for a in (y0 * w, (h - y1) * w) if a]
        elif full_h:  # ... or left and right
            pieces = [a for a in (x0 * h, (w - x1) * h) if a]
        else:
            pieces = [h * w - (y1 - y0) * (x1 - x0)]
        if pieces and min(pieces) <= max_area:
            y0, y1, x0, x1 = 0, h, 0, w
        background = (~fg[y0:y1, x0:x1]).view(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8)
        if n <= 1:
            continue
        areas = stats[:, cv2.CC_STAT_AREA].copy()
        areas[0] = max_area + 1  # label 0 = foreground pixels, never a hole
        outer = [labels[0] if y0 > 0 else None, labels[-1] if y1 < h else None,
                 labels[:, 0] if x0 > 0 else None, labels[:, -1] if x1 < w else None]
        for side in outer:
            if side is not None:
                areas[np.unique(side)] = max_area + 1  # part of the surrounding background
        hole = areas[labels] <= max_area
        if hole.any():
            out[k][y0:y1, x0:x1][hole] = 0.1
    return out


def upsample_logits(mask_logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Low-res mask logits -> video resolution, bilinear, half-pixel centres.

    Mirrors ``SAM2VideoPredictor._get_orig_video_res_output``
    (``F.interpolate(..., mode="bilinear", align_corners=False)``).

    Args:
        mask_logits: ``[K, h, w]`` float32.
        height, width: video frame size in pixels.
    Returns:
        ``[K, height, width]`` float32 logits (threshold at 0 for masks).
    """
    return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in mask_logits]) \
        if len(mask_logits) else np.zeros((0, height, width), np.float32)


def stability_scores(mask_logits: np.ndarray, delta: float) -> np.ndarray:
    """IoU of the masks thresholded at ``+delta`` and ``-delta``.

    Mirrors ``MaskDecoder._get_stability_scores``. ``mask_logits``: ``[B, h, w]``;
    returns ``[B]`` float32 (1.0 where the union is empty).
    """
    flat = mask_logits.reshape(mask_logits.shape[0], -1)
    area_i = (flat > delta).sum(-1).astype(np.float32)
    area_u = (flat > -delta).sum(-1).astype(np.float32)
    safe = np.where(area_u > 0, area_u, np.float32(1))
    return np.where(area_u > 0, area_i / safe, np.float32(1.0)).astype(np.float32)


def masks_to_label_map(video_logits: np.ndarray, obj_ids: list[int]) -> np.ndarray:
    """Per-object logits -> one label map (pixel value = object id, 0 = background).

    Where masks overlap, the object with the highest logit wins (a DAVIS PNG
    holds one id per pixel). ``video_logits``: ``[K, H, W]`` float32;
    returns ``[H, W]`` uint8. Object ids must be in 1..255.
    """
    if len(obj_ids) == 0:
        return np.zeros(video_logits.shape[1:], np.uint8)
    best = np.argmax(video_logits, axis=0)
    fg = np.take_along_axis(video_logits, best[None], 0)[0] > 0
    ids = np.asarray(obj_ids, dtype=np.uint8)
    return np.where(fg, ids[best], 0).astype(np.uint8)


def mask_box(mask: np.ndarray) -> list[int] | None:
    """Tight box ``[x, y, w, h]`` in pixels of a boolean ``[H, W]`` mask, or ``None`` if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def _bicubic_kernel(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with ``a = -0.5`` (PIL's ``bicubic_filter``), support 2."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bilinear_kernel(x: np.ndarray) -> np.ndarray:
    """Triangle kernel (PIL's ``bilinear_filter``, torch's antialiased bilinear), support 1."""
    return np.clip(1.0 - np.abs(x), 0.0, None)


_KERNELS = {"bicubic": (_bicubic_kernel, 2.0), "bilinear": (_bilinear_kernel, 1.0)}


def _resample_weights(in_size: int, out_size: int, kernel: str) -> np.ndarray:
    """``[out_size, in_size]`` float64 weights of PIL's separable resampling along one axis.

    Mirrors ``precompute_coeffs`` in Pillow's ``src/libImaging/Resample.c``
    (whole-image box): output sample ``i`` is centred at input coordinate
    ``scale * (i + 0.5)`` with ``scale = in_size / out_size``; when downscaling
    (``scale > 1``) the kernel is stretched by ``scale`` (antialiasing); taps
    ``[int(centre - support + 0.5), int(centre + support + 0.5))`` clipped to the
    image; each row is normalised to sum 1. These are PIL's double-precision
    coefficients, before its 22-bit fixed-point rounding.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    fn, base_support = _KERNELS[kernel]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    centre = scale * (np.arange(out_size) + 0.5)
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's (int) truncates; the arguments are > -1
    hi = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    taps = int(np.ceil(support)) * 2 + 1
    j = lo[:, None] + np.arange(taps)[None, :]
    valid = j < hi[:, None]
    k = np.where(valid, fn((j - centre[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = k.sum(axis=1, keepdims=True)
    k = np.divide(k, total, out=np.zeros_like(k), where=total != 0)
    w = np.zeros((out_size, in_size))
    rows = np.broadcast_to(np.arange(out_size)[:, None], j.shape)
    w[rows[valid], j[valid]] = k[valid]
    return w


def pil_resize_weights(in_size: int, out_size: int, dtype=np.float32, fixed_point: bool = False) -> np.ndarray:
    """``[out_size, in_size]`` weight matrix of PIL's default RGB resize along one axis.

    ``Image.resize(size)`` without ``resample`` uses BICUBIC for RGB images
    (Pillow >= 7; checked on 13.0): the Keys cubic kernel with ``a = -0.5``,
    support 2 input pixels, stretched by the scale factor when downscaling
    (antialiasing). Mirrors ``precompute_coeffs`` in Pillow's ``Resample.c``.
    With ``resize_h = pil_resize_weights(H, S)`` and ``resize_w =
    pil_resize_weights(W, S)``, PIL's result for each channel ``X_c``
    (``[H, W]``, 0..255) is ``Y = P(resize_h @ P(X_c @ resize_w.T))``
    (horizontal pass first; ``P(P(resize_h @ X_c) @ resize_w.T)`` when
    :func:`pil_resizes_vertically_first`), where PIL's per-pass rounding is
    ``P(v) = clip(floor(v + 1/2), 0, 255)``. The clipping matters: the bicubic
    kernel overshoots at sharp edges, and without ``P`` the plain product
    ``resize_h @ X_c @ resize_w.T`` deviates from PIL by up to ~27 units of
    0..255 on real frames (mean ~0.3); with ``P`` and ``fixed_point=True`` it
    matches PIL bit for bit in exact arithmetic, and up to 1 unit on a few
    pixels per million in float32 (measured in ``tests/test_preprocess_graph.py``).

    Args:
        in_size: input length in pixels (``H`` or ``W``), >= 1.
        out_size: output length in pixels (the model's ``image_size``, 1024), >= 1.
        dtype: float dtype of the result (float32 for ONNX/TensorRT, float64 for analysis).
        fixed_point: round the coefficients to PIL's 22-bit fixed point
            (``normalize_coeffs_8bpc``: ``k * 2**22`` rounded half away from
            zero, divided back by ``2**22``; exact in float32).
    Returns:
        ``[out_size, in_size]`` array; each row sums to 1 and has at most
        ``2 * ceil(2 * max(in_size / out_size, 1)) + 1`` non-zero taps.
    Raises:
        ValueError: a size below 1.
    """
    w = _resample_weights(in_size, out_size, "bicubic")
    if fixed_point:
        one = float(1 << PIL_PRECISION_BITS)
        w = np.trunc(w * one + np.copysign(0.5, w)) / one
    return w.astype(dtype)


def _pillow_version() -> tuple[int, int]:
    import PIL

    major, minor = (PIL.__version__.split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def pil_resizes_vertically_first(in_h: int, in_w: int, out_h: int, out_w: int) -> bool:
    """Whether the installed Pillow runs the vertical pass of ``resize`` before the horizontal one.

    The order matters because PIL rounds to uint8 between the passes. Mirrors
    ``ImagingResampleInner`` (Resample.c) and ``Image.resize``:

    - Pillow >= 13: vertically first when the height shrinks and the width
      does not (``out_w >= in_w and out_h < in_h``; e.g. a 720x1280 portrait
      frame resized to 1024x1024);
    - Pillow 12.2 / 12.3: vertically first only for images more than 100
      times taller than wide whose height shrinks (two separate resizes);
    - older: always horizontally first.

    Sizes in pixels (whole image, no box).
    """
    version = _pillow_version()
    if version >= (13, 0):
        return out_w >= in_w and out_h < in_h
    if version >= (12, 2):
        return in_h > in_w * 100 and out_h < in_h
    return False


@functools.lru_cache(maxsize=8)
def _frame_resize_weights_cached(height: int, width: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    out = (pil_resize_weights(height, image_size, fixed_point=True),
           pil_resize_weights(width, image_size, fixed_point=True))
    for a in out:
        a.setflags(write=False)
    return out


def frame_resize_weights(height: int, width: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(resize_h [S, height], resize_w [S, width])`` float32 PIL-bicubic weights for one frame size.

    PIL's fixed-point coefficients (:func:`pil_resize_weights` with
    ``fixed_point=True``): the inputs ``resize_h`` / ``resize_w`` of the preprocessing graph
    (:mod:`sam2trt.preprocess_graph`). Cached per size (a video has one size);
    the arrays are read-only. ``S`` = ``image_size``.
    """
    return _frame_resize_weights_cached(int(height), int(width), int(image_size))


def preprocess_frame_matmul(rgb: np.ndarray, resize_h: np.ndarray, resize_w: np.ndarray, mean, std,
                            out: np.ndarray | None = None) -> np.ndarray:
    """RGB frame -> image encoder input by two matrix products (no PIL).

    The NumPy reference of the preprocessing graph: per channel,
    ``(P(resize_h @ P(X_c @ resize_w.T)) / 255 - mean_c) / std_c`` in float32,
    with PIL's per-pass rounding ``P`` (see :func:`pil_resize_weights`), the
    passes in PIL's order (:func:`pil_resizes_vertically_first`).
    Reproduces :func:`preprocess_frame` (``sam2.utils.misc._load_img_as_tensor``)
    up to 1 unit of 0..255 on a few pixels per million (float32 sums landing
    on the other side of a rounding tie). Dense products: slow on a CPU (a GPU's job).

    Args:
        rgb: ``[H, W, 3]`` uint8 frame.
        resize_h: ``[S, H]``, resize_w: ``[S, W]`` float32 (:func:`frame_resize_weights`).
        mean, std: 3 floats each.
        out: optional ``[1, 3, S, S]`` float32 buffer to write into.
    Returns:
        ``[1, 3, S, S]`` float32 array (``out`` if given).
    Raises:
        ValueError: shapes that do not fit together.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or resize_h.shape[1] != rgb.shape[0] or resize_w.shape[1] != rgb.shape[1]:
        raise ValueError(f"frame {rgb.shape} does not fit weights {resize_h.shape} / {resize_w.shape}")
    s = resize_h.shape[0]
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)  # [3, H, W]
    if pil_resizes_vertically_first(rgb.shape[0], rgb.shape[1], s, resize_w.shape[0]):
        y = _pil_round(_pil_round(resize_h @ x) @ resize_w.T)  # [3, S, W] in between
    else:
        y = _pil_round(resize_h @ _pil_round(x @ resize_w.T))  # [3, H, S] in between
    if out is None:
        out = np.empty((1, 3, s, s), dtype=np.float32)
    scale = (1.0 / (255.0 * np.asarray(std, np.float64))).astype(np.float32)[:, None, None]
    offset = (np.asarray(mean, np.float64) / np.asarray(std, np.float64)).astype(np.float32)[:, None, None]
    np.multiply(y, scale, out=out[0])
    np.subtract(out[0], offset, out=out[0])
    return out


def _pil_round(v: np.ndarray) -> np.ndarray:
    """PIL's end of a resampling pass, in place: ``clip(floor(v + 1/2), 0, 255)`` (``clip8`` in Resample.c)."""
    v += np.float32(0.5)
    np.floor(v, out=v)
    return np.clip(v, 0.0, 255.0, out=v)


def _aa_weights(in_size: int, out_size: int) -> np.ndarray:
    """``[out_size, in_size]`` float64 weights of antialiased bilinear resampling (PIL / torch ``antialias=True``)."""
    return _resample_weights(in_size, out_size, "bilinear")


def resize_antialiased(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize ``[h, w]`` float32 with antialiased bilinear filtering.

    Mirrors ``F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)``
    as used by ``add_new_mask`` and ``_use_mask_as_output``. Returns ``[out_h, out_w]`` float32.
    """
    wy = _aa_weights(x.shape[0], out_h).astype(np.float32)
    wx = _aa_weights(x.shape[1], out_w).astype(np.float32)
    return (wy @ x.astype(np.float32) @ wx.T).astype(np.float32)


def mask_downsample(mask: np.ndarray, weight: np.ndarray, bias: float) -> np.ndarray:
    """Apply SAM 2's ``mask_downsample`` (``Conv2d(1, 1, kernel_size=4, stride=4)``).

    ``mask``: ``[S, S]`` float32; ``weight``: ``[4, 4]``. Returns ``[S/4, S/4]`` float32.
    """
    s = mask.shape[0] // 4
    blocks = mask.reshape(s, 4, s, 4)
    return (np.einsum("iajb,ab->ij", blocks, weight.astype(np.float32)) + np.float32(bias)).astype(np.float32)
