"""DAVIS 2017 region (J) and boundary (F) measures, and their per-object statistics.

Written from the definitions in davisvideochallenge/davis2017-evaluation
(``davis2017/metrics.py``: ``db_eval_iou``, ``f_measure``, ``_seg2bmap``;
``davis2017/utils.py``: ``db_statistics``) and checked against it on fixtures
(tests/test_eval.py). Every function takes ``[H, W]`` masks (any dtype,
non-zero = inside) and returns plain floats.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BOUNDARY_FRACTION = 0.008
"""The boundary tolerance of F as a fraction of the image diagonal (official ``bound_th``)."""


def _check_shapes(*masks: np.ndarray | None) -> None:
    shapes = {m.shape for m in masks if m is not None}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"masks must be [H, W] and of one size, got {sorted(shapes)}")


def region_similarity(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """J: intersection over union of ``gt`` and ``pred`` outside ``void`` (official ``db_eval_iou``).

    Args:
        gt, pred: ``[H, W]`` masks (non-zero = the object).
        void: ``[H, W]`` mask of pixels left out of both counts, or ``None``.

    Returns:
        J in [0, 1]; 1.0 when the union outside ``void`` is empty (both masks empty).

    Raises:
        ValueError: the masks are not ``[H, W]`` of one size.
    """
    _check_shapes(gt, pred, void)
    gt, pred = gt.astype(bool), pred.astype(bool)
    keep = np.ones_like(gt) if void is None else ~void.astype(bool)
    union = int(np.count_nonzero((gt | pred) & keep))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(gt & pred & keep)) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel boundary of ``mask`` (official ``_seg2bmap`` at the mask's own size).

    A pixel is on the boundary when it differs from its east, south or
    south-east neighbour (the boundary sits half a pixel towards the origin);
    the last row compares with the east neighbour only, the last column with
    the south neighbour only, and the bottom-right pixel is never a boundary
    (so a mask filling the whole image has no boundary).

    Args:
        mask: ``[H, W]`` mask (non-zero = inside).

    Returns:
        ``[H, W]`` bool boundary map.
    """
    seg = np.asarray(mask).astype(bool)
    east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def disk(radius: int) -> np.ndarray:
    """``[2r+1, 2r+1]`` uint8 disk: 1 where ``x**2 + y**2 <= r**2`` (``skimage.morphology.disk``)."""
    offsets = np.arange(-radius, radius + 1)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius ** 2).astype(np.uint8)


def boundary_tolerance(height: int, width: int, fraction: float = BOUNDARY_FRACTION) -> int:
    """F's tolerance in pixels: ``ceil(fraction * sqrt(H**2 + W**2))`` (a ``fraction`` >= 1 is pixels already)."""
    if fraction >= 1:
        return int(fraction)
    return int(math.ceil(fraction * math.hypot(height, width)))


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
                       fraction: float = BOUNDARY_FRACTION) -> float:
    """F: the boundary F-measure of ``pred`` against ``gt`` (official ``f_measure``).

    Both masks lose their ``void`` pixels, then their :func:`boundary_map` s are
    compared: a boundary pixel of one matches when the other's boundary, dilated
    with a :func:`disk` of :func:`boundary_tolerance` pixels, covers it.
    Precision = matched ``pred`` boundary / ``pred`` boundary, recall = matched
    ``gt`` boundary / ``gt`` boundary; an empty ``pred`` boundary gives precision 1
    (recall 0 unless ``gt``'s is empty too), an empty ``gt`` boundary recall 1.

    Args:
        gt, pred: ``[H, W]`` masks (non-zero = the object).
        void: ``[H, W]`` mask of pixels removed from both masks first, or ``None``.
        fraction: the tolerance as a fraction of the diagonal (default 0.008).

    Returns:
        ``2 P R / (P + R)`` in [0, 1]; 0.0 when ``P + R`` is 0.

    Raises:
        ValueError: the masks are not ``[H, W]`` of one size.
    """
    _check_shapes(gt, pred, void)
    gt, pred = gt.astype(bool), pred.astype(bool)
    if void is not None:
        keep = ~void.astype(bool)
        gt, pred = gt & keep, pred & keep
    kernel = disk(boundary_tolerance(*gt.shape, fraction=fraction))
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    n_gt, n_pred = int(np.count_nonzero(gt_b)), int(np.count_nonzero(pred_b))
    if n_gt == 0 or n_pred == 0:
        precision = 1.0 if n_pred == 0 else 0.0
        recall = 1.0 if n_gt == 0 else 0.0
    else:
        gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
        pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
        precision = int(np.count_nonzero(pred_b & gt_dil)) / n_pred
        recall = int(np.count_nonzero(gt_b & pred_dil)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def decay_bins(n_frames: int) -> list[tuple[int, int]]:
    """The four ``[start, stop)`` frame ranges of Decay (official ``db_statistics``).

    Edges are ``round(linspace(1, n, 5) + 1e-10) - 1``; bin ``i`` runs from edge
    ``i`` to edge ``i + 1`` inclusive, so neighbouring bins share their edge frame.
    (The official code stores the edges as uint8, which wraps past 256 frames;
    here they are plain integers.)
    """
    edges = (np.round(np.linspace(1, n_frames, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(edges[i]), int(edges[i + 1]) + 1) for i in range(4)]


def statistics(per_frame: np.ndarray | list[float]) -> tuple[float, float, float]:
    """Mean, Recall and Decay of one object's per-frame J (or F) values (official ``db_statistics``).

    Args:
        per_frame: ``[N]`` floats, N >= 1, in frame order (NaN values are skipped by Mean and Decay).

    Returns:
        ``(mean, recall, decay)``: the mean; the share of frames above 0.5; the
        mean of the first of :func:`decay_bins` minus the mean of the last.

    Raises:
        ValueError: ``per_frame`` is empty.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("statistics need at least one frame's value")
    bins = decay_bins(values.size)
    first, last = values[slice(*bins[0])], values[slice(*bins[3])]
    return float(np.nanmean(values)), float(np.mean(values > 0.5)), float(np.nanmean(first) - np.nanmean(last))
