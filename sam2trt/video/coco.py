"""COCO-style results file: per frame, per object mask as COCO RLE (pycocotools).

Layout of the JSON file written by :class:`CocoWriter` (loadable with
``pycocotools.coco.COCO``)::

    {"info": {...},
     "videos": [{"id": 1, "file_name": VIDEO, "width": W, "height": H}],
     "images": [{"id": frame + 1, "video_id": 1, "frame_index": frame,
                 "file_name": "00042.png", "width": W, "height": H}, ...],
     "annotations": [{"id": n, "image_id": frame + 1, "video_id": 1,
                      "category_id": 1, "track_id": OBJ_ID, "iscrowd": 0,
                      "segmentation": {"size": [H, W], "counts": "..."},
                      "area": PX, "bbox": [x, y, w, h], "score": 0..1,
                      "object_score_logit": LOGIT, "present": bool}, ...],
     "categories": [{"id": 1, "name": "object"}]}

One image per processed frame, one annotation per object per frame (absent
objects have an empty mask, ``area`` 0 and ``bbox`` ``[0, 0, 0, 0]``). The
mask is the object's pixels in the label map, i.e. exactly the PNG mask
(overlaps resolved to the higher logit). ``score`` is the sigmoid of the
object-score logit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a ``[H, W]`` bool mask: ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


class CocoWriter:
    """Collect per-frame masks in memory and write the COCO JSON atomically on :meth:`close`.

    ``write(frame_index, label_map, obj_ids, object_score_logits)``: ``label_map``
    ``[H, W]`` uint8 (pixel = object id), one logit per id. ``close()`` writes
    to a hidden temporary sibling and renames it onto ``path`` (also after a
    fault: the file then holds the frames written so far; with no frame
    written, nothing is created). ``abort()`` discards everything. Memory is
    the RLE strings only (a few hundred bytes per object per frame).

    Raises :class:`InputError` when the parent folder cannot be created,
    :class:`~sam2trt.errors.RuntimeFailure` when writing fails (disk full).
    """

    def __init__(self, path: str | os.PathLike, video: str, width: int, height: int):
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create {self.path.parent} ({exc}): choose a writable location") from exc
        self._doc = {"info": {"description": "sam2trt track", "video": str(video)},
                     "videos": [{"id": 1, "file_name": str(video), "width": self.width, "height": self.height}],
                     "images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
        self._closed = False

    def write(self, frame_index: int, label_map: np.ndarray, obj_ids, object_score_logits) -> None:
        """Add frame ``frame_index`` (0-based) with one annotation per object id."""
        image_id = int(frame_index) + 1
        self._doc["images"].append({"id": image_id, "video_id": 1, "frame_index": int(frame_index),
                                    "file_name": f"{frame_index:05d}.png", "width": self.width, "height": self.height})
        anns = self._doc["annotations"]
        for oid, logit in zip(obj_ids, object_score_logits):
            m = label_map == oid
            area = int(m.sum())
            if area:
                ys, xs = np.nonzero(m)
                bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            else:
                bbox = [0, 0, 0, 0]
            logit = float(logit)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "video_id": 1, "category_id": 1,
                         "track_id": int(oid), "iscrowd": 0, "segmentation": encode_rle(m), "area": area,
                         "bbox": bbox, "score": round(1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0))), 6),
                         "object_score_logit": round(logit, 4), "present": logit > 0})

    @property
    def frames_written(self) -> int:
        """Number of frames added so far."""
        return len(self._doc["images"])

    def close(self) -> None:
        """Write the JSON through an exclusive temporary onto ``path`` (untouched with no frame). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._doc["images"]:
            return
        atomic_write(self.path, json.dumps(self._doc))

    def abort(self) -> None:
        """Discard everything; ``path`` is left untouched."""
        self._closed = True
