"""Post-processing: one frame's low-resolution tracker output -> what every sink writes.

Runs once per frame, between the tracker core and the sinks, so that mask
upsampling and the label map are computed once and shared by the overlay
video, the PNGs, the JSON lines and COCO.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sam2trt.tracker.core import FrameOutput
from sam2trt.tracker.processing import upsample_logits


@dataclass
class FrameResult:
    """All objects of one frame at video resolution.

    Attributes:
        frame_idx: 0-based frame index.
        obj_ids: object ids, in prompt order (``K`` of them).
        label_map: ``[H, W]`` uint8, pixel = object id (0 background); where masks
            overlap the object with the higher logit wins.
        boxes: per object, the tight ``[x, y, w, h]`` box (pixels) of its own mask
            (upsampled logits > 0, overlaps included), or ``None`` when empty.
        areas: per object, its own mask's area in pixels.
        object_score_logits: ``[K]`` float32; > 0 means present.
    """

    frame_idx: int
    obj_ids: list[int]
    label_map: np.ndarray
    boxes: list[list[int] | None]
    areas: list[int]
    object_score_logits: np.ndarray


def _box_and_area(mask: np.ndarray) -> tuple[list[int] | None, int]:
    """Tight box ``[x, y, w, h]`` and area of a ``[H, W]`` uint8 0/1 mask (OpenCV, no temporaries)."""
    area = int(cv2.countNonZero(mask))
    if area == 0:
        return None, 0
    x, y, w, h = cv2.boundingRect(mask)
    return [int(x), int(y), int(w), int(h)], area


def postprocess(out: FrameOutput, height: int, width: int) -> FrameResult:
    """Upsample one frame's mask logits to ``height`` x ``width`` and build the label map.

    Mirrors ``SAM2VideoPredictor._get_orig_video_res_output`` (bilinear,
    half-pixel centres; a pixel belongs to an object where its logit > 0).

    Args:
        out: the tracker's :class:`~sam2trt.tracker.core.FrameOutput`
            (``mask_logits`` ``[K, h, w]`` float32).
        height, width: video frame size in pixels.
    """
    k = len(out.obj_ids)
    if k == 0:
        return FrameResult(out.frame_idx, [], np.zeros((height, width), np.uint8), [], [],
                           np.zeros(0, np.float32))
    logits = upsample_logits(out.mask_logits, height, width)
    masks = [(logits[i] > 0).view(np.uint8) for i in range(k)]
    if k == 1:
        label_map = masks[0] * np.uint8(out.obj_ids[0])
    else:
        best = np.argmax(logits, axis=0)
        fg = np.take_along_axis(logits, best[None], 0)[0] > 0
        ids = np.asarray(out.obj_ids, dtype=np.uint8)
        label_map = np.where(fg, ids[best], np.uint8(0)).astype(np.uint8)
    boxes, areas = zip(*(_box_and_area(m) for m in masks))
    return FrameResult(out.frame_idx, list(out.obj_ids), label_map, list(boxes), list(areas),
                       np.asarray(out.object_score_logits, np.float32))
