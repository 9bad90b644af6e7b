"""DAVIS 2017 semi-supervised evaluation of one video or a folder of videos (``sam2trt eval``).

Follows davisvideochallenge/davis2017-evaluation (``davis2017/evaluation.py``):
per object and evaluated frame J and F (:mod:`sam2trt.metrics.davis`); per
object Mean / Recall / Decay of each; per video and over all videos the mean of
those over objects; ``J&F-Mean`` = (``J-Mean`` + ``F-Mean``) / 2. The ground
truth's objects are every id in any of its frames (first and last included);
an object missing from a frame on both sides scores J = F = 1 there. The first
and last ground-truth frames are left out unless ``all_frames``. Everything is
recomputed on every call; no results file is read or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .davis import boundary_f_measure, region_similarity, statistics
from .masks import FrameKey, FrameMasks, MaskSequence, open_masks

MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
"""The columns of every summary, in the official script's order."""


@dataclass
class ObjectScores:
    """One object's per-frame values: ``j``, ``f`` are ``[N]`` float64 over ``frames`` (N frame keys)."""

    obj_id: int
    frames: list[FrameKey]
    j: np.ndarray
    f: np.ndarray

    def summary(self) -> dict[str, float]:
        """``{measure: value}`` for :data:`MEASURES` (official ``db_statistics`` of J and of F)."""
        jm, jr, jd = statistics(self.j)
        fm, fr, fd = statistics(self.f)
        return dict(zip(MEASURES, ((jm + fm) / 2, jm, jr, jd, fm, fr, fd)))


@dataclass
class VideoScores:
    """One video: its ``objects`` (ascending ids) over the same evaluated frames."""

    name: str
    objects: list[ObjectScores]

    @property
    def frames(self) -> list[FrameKey]:
        """The evaluated frame keys."""
        return self.objects[0].frames if self.objects else []

    def summary(self) -> dict[str, float]:
        """Each of :data:`MEASURES` averaged over the objects (``J&F-Mean`` from the two means)."""
        return mean_over_objects(self.objects)


@dataclass
class EvalReport:
    """The result of :func:`evaluate`: ``videos`` in name order, and whether every frame counted."""

    videos: list[VideoScores]
    all_frames: bool

    def summary(self) -> dict[str, float]:
        """Each of :data:`MEASURES` averaged over every object of every video (the official global row)."""
        return mean_over_objects([o for v in self.videos for o in v.objects])

    def worst(self) -> dict:
        """The lowest frame-object J: ``{"video", "object", "frame", "J", "F"}`` (first in video/id/frame order)."""
        best = None
        for v in self.videos:
            for o in v.objects:
                i = int(np.argmin(o.j))
                if best is None or o.j[i] < best["J"]:
                    best = {"video": v.name, "object": o.obj_id, "frame": o.frames[i], "J": float(o.j[i]),
                            "F": float(o.f[i])}
        return best or {}


def mean_over_objects(objects: list[ObjectScores]) -> dict[str, float]:
    """Each of :data:`MEASURES` averaged over ``objects``; ``J&F-Mean`` = (``J-Mean`` + ``F-Mean``) / 2."""
    rows = [o.summary() for o in objects]
    out = {m: float(np.mean([r[m] for r in rows])) for m in MEASURES[1:]}
    return {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2, **out}


def evaluated_frames(gt: MaskSequence, all_frames: bool) -> list[FrameKey]:
    """The ground truth's frames that count: all, or all but the first and the last (semi-supervised).

    Raises:
        InputError: fewer than 3 frames without ``all_frames``.
    """
    if all_frames:
        return list(gt.frames)
    if len(gt.frames) < 3:
        raise InputError(f"{gt.path} has {len(gt.frames)} frame(s): the semi-supervised convention leaves out the "
                         "first and the last, so nothing is left; add --all-frames")
    return list(gt.frames[1:-1])


def _check_frames(pred: MaskSequence, gt: MaskSequence, frames: list[FrameKey]) -> None:
    have = set(pred.frames)
    missing = [k for k in frames if k not in have]
    if not missing:
        return
    names = ", ".join(str(k) for k in missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise InputError(f"{pred.path} lacks {len(missing)} of the {len(frames)} evaluated frames of {gt.path} "
                     f"({names}): give results for every ground-truth frame (track the whole video), or use "
                     "the same frame names")


def _frame_pair(pred: MaskSequence, gt: MaskSequence, key: FrameKey) -> tuple[FrameMasks, FrameMasks]:
    g, p = gt.read(key), pred.read(key)
    if g.size != p.size:
        raise InputError(f"{pred.where(key)} is {p.size[1]}x{p.size[0]} but {gt.where(key)} is "
                         f"{g.size[1]}x{g.size[0]} pixels: compare results of the same resolution")
    return g, p


def evaluate_video(pred: MaskSequence, gt: MaskSequence, *, all_frames: bool = False,
                   void_as_background: bool = False, name: str | None = None) -> VideoScores:
    """J and F of every ground-truth object on every evaluated frame.

    Args:
        pred, gt: the results and the ground truth (:func:`~sam2trt.metrics.masks.open_masks`).
        all_frames: count the first and last frames too (parity), not the semi-supervised convention.
        void_as_background: treat void (255) as background instead of leaving it out, as the official
            semi-supervised script does (it passes no void mask to the measures).
        name: the video's name in the report (default: the ground truth's path).

    Raises:
        InputError: missing frames, frames of different sizes, an unreadable file, no ground-truth
            object, or result object ids the ground truth does not have.
    """
    frames = evaluated_frames(gt, all_frames)
    _check_frames(pred, gt, frames)
    gt_ids, pred_ids = set(gt.object_ids), set()
    values: dict[int, dict[int, tuple[float, float]]] = {}
    for pos, key in enumerate(frames):
        g, p = _frame_pair(pred, gt, key)
        void = None if void_as_background else g.void
        gt_ids.update(i for i, m in g.objects.items() if m.any())
        pred_ids.update(i for i, m in p.objects.items() if m.any())
        empty = np.zeros(g.size, dtype=bool)
        for oid in set(g.objects) | set(p.objects):
            gm, pm = g.objects.get(oid, empty), p.objects.get(oid, empty)
            if gm.any() or pm.any():
                values.setdefault(oid, {})[pos] = (region_similarity(gm, pm, void), boundary_f_measure(gm, pm, void))
    for key in {gt.frames[0], gt.frames[-1]} - set(frames):
        gt_ids.update(i for i, m in gt.read(key).objects.items() if m.any())
    if not gt_ids:
        raise InputError(f"{gt.path} has no object (no non-zero, non-255 pixel): give the ground-truth masks")
    extra = sorted(pred_ids - gt_ids)
    if extra:
        raise InputError(f"{pred.path} has object id(s) {', '.join(map(str, extra))} that {gt.path} does not: "
                         "compare results and ground truth of the same objects (ids as given to track)")
    objects = []
    for oid in sorted(gt_ids):
        per = values.get(oid, {})
        j = np.array([per.get(pos, (1.0, 1.0))[0] for pos in range(len(frames))])
        f = np.array([per.get(pos, (1.0, 1.0))[1] for pos in range(len(frames))])
        objects.append(ObjectScores(oid, frames, j, f))
    return VideoScores(name or gt.path, objects)


def _sequences(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that hold PNGs (a DAVIS ``Annotations/480p`` folder), or [] if it holds PNGs itself."""
    if not folder.is_dir() or any(f.suffix.lower() == ".png" for f in folder.iterdir()):
        return []
    return sorted(d for d in folder.iterdir() if d.is_dir() and any(f.suffix.lower() == ".png" for f in d.iterdir()))


def evaluate(pred: str | os.PathLike, gt: str | os.PathLike, *, all_frames: bool = False,
             void_as_background: bool = False) -> EvalReport:
    """Evaluate results against ground truth: one video, or a folder of videos.

    ``pred`` and ``gt`` are each a PNG folder or a COCO JSON
    (:mod:`sam2trt.metrics.masks`). When ``gt`` is a folder of sequence
    folders (the DAVIS layout), ``pred`` must be a folder holding, for each
    sequence, a PNG folder or a ``<sequence>.json`` of the same name.

    Raises:
        InputError: as :func:`evaluate_video`, or a sequence without results.
    """
    gt_path, pred_path = Path(gt), Path(pred)
    sequences = _sequences(gt_path)
    if not sequences:
        video = evaluate_video(open_masks(pred_path), open_masks(gt_path), all_frames=all_frames,
                               void_as_background=void_as_background, name=gt_path.name or str(gt_path))
        return EvalReport([video], all_frames)
    videos = []
    for seq in sequences:
        match = [c for c in (pred_path / seq.name, pred_path / f"{seq.name}.json") if c.exists()]
        if not match:
            raise InputError(f"{pred_path} has no results for sequence {seq.name} (no folder {seq.name}/ or "
                             f"{seq.name}.json): give results for every sequence of {gt_path}")
        videos.append(evaluate_video(open_masks(match[0]), open_masks(seq), all_frames=all_frames,
                                     void_as_background=void_as_background, name=seq.name))
    return EvalReport(videos, all_frames)
