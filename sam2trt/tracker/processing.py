"""Pre- and post-processing around the modules, in NumPy / PIL / OpenCV.

Each function mirrors a step of the official predictor, named in its docstring.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

NO_OBJ_SCORE = -1024.0  # sam2.modeling.sam2_base.NO_OBJ_SCORE


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

    Args:
        mask_logits: ``[K, h, w]`` float32 low-resolution mask logits.
        max_area: largest hole to fill, in low-res pixels; ``<= 0`` returns the input.
    Returns:
        A new ``[K, h, w]`` float32 array.
    """
    if max_area <= 0:
        return mask_logits
    out = mask_logits.copy()
    for k in range(out.shape[0]):
        background = (out[k] <= 0).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8)
        if n <= 1:
            continue
        areas = stats[:, cv2.CC_STAT_AREA].copy()
        areas[0] = max_area + 1  # label 0 = foreground pixels, never a hole
        hole = areas[labels] <= max_area
        out[k][hole] = 0.1
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


def _aa_weights(in_size: int, out_size: int) -> np.ndarray:
    """``[out_size, in_size]`` float64 weights of antialiased bilinear resampling (PIL / torch ``antialias=True``)."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    w = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        k = np.clip(1.0 - np.abs((j - center + 0.5) * inv), 0.0, None)
        w[i, lo:hi] = k / k.sum() if k.sum() > 0 else 0.0
    return w


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
