"""Read one video's masks for ``sam2trt eval``: a folder of indexed PNGs, or a COCO RLE results JSON.

Both become a :class:`MaskSequence`: frame keys in order and, per frame, the
masks of the objects in it. The layouts:

- **PNG folder** (``track --masks-dir`` and the official DAVIS
  ``Annotations/480p/<sequence>`` layout): one PNG per frame, named by frame
  (``00042.png``); pixel value = object id, 0 background, 255 void (pixels
  the ground truth leaves out of the measures). Palette ("P") or grayscale
  ("L") PNGs: the value is read, not the colour. Names that are all digits
  are frame numbers (``00042`` = frame 42), so they match a COCO file's frames.
- **COCO JSON** (``track --coco``, :mod:`sam2trt.video.coco`): an image per
  frame (``frame_index``, else ``image_id - 1``) and an annotation per object
  and frame, ``track_id`` the object id, ``segmentation`` a COCO RLE.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError

VOID_LABEL = 255
"""The DAVIS label of void pixels in a PNG mask."""

FrameKey = int | str


@dataclass
class FrameMasks:
    """One frame: ``objects`` maps object id -> ``[H, W]`` bool mask; ``void`` is ``[H, W]`` bool or ``None``."""

    objects: dict[int, np.ndarray]
    size: tuple[int, int]
    void: np.ndarray | None = None


@dataclass
class MaskSequence:
    """One video's masks: ``frames`` (keys in frame order) and ``read(key) -> FrameMasks``.

    ``object_ids`` are the ids the source names (a COCO file lists every tracked
    object, also on frames where its mask is empty); a PNG folder's ids are
    only known from its pixels, so it starts empty. ``where(key)`` names a
    frame's file for error messages.
    """

    path: str
    frames: list[FrameKey]
    read: Callable[[FrameKey], FrameMasks]
    where: Callable[[FrameKey], str]
    object_ids: set[int] = field(default_factory=set)


def open_masks(path: str | os.PathLike) -> MaskSequence:
    """Open a PNG folder or a COCO JSON file (see the module docstring).

    Raises:
        InputError: ``path`` is missing, neither a folder nor a ``.json`` file, holds
            no PNG, or the JSON is not a COCO results file.
    """
    p = Path(path)
    if p.is_dir():
        return _png_folder(p)
    if p.is_file() and p.suffix.lower() == ".json":
        return _coco_file(p)
    if not p.exists():
        raise InputError(f"{p} does not exist: give a folder of PNG masks or a COCO results .json")
    raise InputError(f"{p} is neither a folder of PNG masks nor a COCO results .json: give one of those")


def _frame_key(stem: str) -> FrameKey:
    return int(stem) if stem.isdigit() else stem


def _png_folder(folder: Path) -> MaskSequence:
    files = {_frame_key(f.stem): f for f in folder.iterdir() if f.suffix.lower() == ".png" and f.is_file()}
    if not files:
        raise InputError(f"{folder} holds no .png masks: give a folder of one indexed PNG per frame "
                         "(track --masks-dir), or a COCO results .json")
    if len({type(k) for k in files}) > 1:
        raise InputError(f"{folder} mixes numbered and named PNGs: keep one naming (00000.png, 00001.png, ...)")
    return MaskSequence(str(folder), sorted(files), lambda key: read_png_masks(files[key]), lambda key: str(files[key]))


def read_png_masks(path: str | os.PathLike) -> FrameMasks:
    """One indexed PNG: each non-zero value other than 255 is an object; 255 is void.

    Raises:
        InputError: the file cannot be read, or is not a palette / grayscale PNG.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "1"):
                raise InputError(f"{path} is a {img.mode} image, not an indexed mask: save masks as palette (P) "
                                 "or grayscale (L) PNGs whose values are object ids")
            labels = np.array(img.convert("L") if img.mode == "1" else img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {path} ({type(exc).__name__}: {exc}): "
                         "replace it with a valid PNG mask") from None
    if img.mode == "1":
        labels = (labels > 0).astype(np.uint8)
    ids = [int(v) for v in np.unique(labels) if v not in (0, VOID_LABEL)]
    void = labels == VOID_LABEL
    return FrameMasks({i: labels == i for i in ids}, labels.shape, void if void.any() else None)


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path} ({type(exc).__name__}: {exc}): "
                         "give a COCO results JSON written by `sam2trt track --coco`") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        raise InputError(f"{path} is not a COCO results file (no 'images' and 'annotations' lists): "
                         "give the JSON written by `sam2trt track --coco`")
    return doc


def _coco_file(path: Path) -> MaskSequence:
    doc = _load_json(path)
    frame_of: dict[int, int] = {}
    sizes: dict[int, tuple[int, int]] = {}
    try:
        for img in doc["images"]:
            frame = int(img["frame_index"]) if "frame_index" in img else int(img["id"]) - 1
            frame_of[int(img["id"])] = frame
            sizes[frame] = (int(img["height"]), int(img["width"]))
        per_frame: dict[int, dict[int, dict]] = {f: {} for f in sizes}
        for n, ann in enumerate(doc["annotations"]):
            if int(ann["image_id"]) not in frame_of:
                raise InputError(f"{path}: annotation {n} names image_id {ann['image_id']}, which no image has: "
                                 "give a complete COCO results file")
            per_frame[frame_of[int(ann["image_id"])]][int(ann["track_id"])] = ann["segmentation"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path} is not a COCO results file ({type(exc).__name__}: {exc}): "
                         "give the JSON written by `sam2trt track --coco`") from None
    ids = {oid for objs in per_frame.values() for oid in objs}

    def read(frame: int) -> FrameMasks:
        return FrameMasks({oid: _decode_rle(rle, sizes[frame], path, frame) for oid, rle in per_frame[frame].items()},
                          sizes[frame])

    return MaskSequence(str(path), sorted(sizes), read, lambda frame: f"{path} frame {frame}", ids)


def _decode_rle(rle, size: tuple[int, int], path: Path, frame: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    try:
        if list(rle["size"]) != list(size):
            raise ValueError(f"RLE size {rle['size']} is not the image's {list(size)}")
        counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            counts = mask_utils.frPyObjects({"size": list(size), "counts": counts}, *size)["counts"]
        return mask_utils.decode({"size": list(size), "counts": counts}).astype(bool)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path} frame {frame}: bad RLE segmentation ({exc}): "
                         "give the JSON written by `sam2trt track --coco`") from None
