"""Object prompts: what the user gives, and how SAM 2 encodes it as points.

Command-line syntax (parsed by :func:`parse_box` / :func:`parse_point`):

- ``--box x,y,w,h``: top-left corner and size, pixels of the prompt frame.
- ``--point x,y[,label]``: label 1 (foreground, default) or 0 (background).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from sam2trt.errors import InputError, UsageError


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompt on one of its conditioning frames (an object may have several, on distinct frames).

    Attributes:
        obj_id: object id, 1..255 (the pixel value in the PNG masks).
        frame_idx: the frame the prompt is on (0-based).
        box: ``(x0, y0, x1, y1)`` corners in video pixels, or ``None``.
        points: ``((x, y, label), ...)`` in video pixels, label 1 = foreground,
            0 = background.
        mask: ``[H, W]`` bool initial mask at video resolution, or ``None``
            (exclusive with box and points, like the official ``add_new_mask``).
    """

    obj_id: int
    frame_idx: int = 0
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float, int], ...] = field(default_factory=tuple)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    def encode_points(self, video_hw: tuple[int, int], image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Box corners then points, scaled to model-input pixels.

        Mirrors ``SAM2VideoPredictor.add_new_points_or_box``: the box becomes two
        points labelled 2 and 3 placed before the clicks, and coordinates are
        divided by (width, height) and multiplied by ``image_size`` in float32.

        Returns:
            ``coords [N, 2]`` float32 and ``labels [N]`` int32.
        Raises:
            ValueError: neither a box nor points.
        """
        coords, labels = [], []
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            coords += [(x0, y0), (x1, y1)]
            labels += [2, 3]
        for x, y, lab in self.points:
            coords.append((x, y))
            labels.append(lab)
        if not coords:
            raise ValueError(f"object {self.obj_id} has neither a box nor points")
        h, w = video_hw
        c = np.asarray(coords, dtype=np.float32) / np.asarray([w, h], dtype=np.float32)
        c = c * np.float32(image_size)
        return c.astype(np.float32), np.asarray(labels, dtype=np.int32)

    def check_inside(self, video_hw: tuple[int, int]) -> None:
        """Raise :class:`InputError` when the box or a point lies outside the frame."""
        h, w = video_hw
        if self.mask is not None and self.mask.shape != (h, w):
            raise InputError(f"mask of object {self.obj_id} is {self.mask.shape[1]}x{self.mask.shape[0]}, "
                             f"the video is {w}x{h}: give a mask of the frame's size")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                raise InputError(
                    f"box {_fmt_box(self.box)} of object {self.obj_id} is outside the {w}x{h} frame: "
                    "give x,y,w,h inside the prompt frame"
                )
        for x, y, _ in self.points:
            if not (0 <= x < w and 0 <= y < h):
                raise InputError(f"point {x:g},{y:g} of object {self.obj_id} is outside the {w}x{h} frame")


def _fmt_box(box) -> str:
    x0, y0, x1, y1 = box
    return f"{x0:g},{y0:g},{x1 - x0:g},{y1 - y0:g}"


def _numbers(text: str, what: str, counts: tuple[int, ...]) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = None
    if vals is None or len(vals) not in counts or not all(math.isfinite(v) for v in vals):
        return None
    return vals


def parse_box(text: str) -> tuple[float, float, float, float]:
    """Parse ``"x,y,w,h"`` (pixels) into corners ``(x0, y0, x1, y1)``.

    Raises:
        UsageError: not four finite numbers, or width/height not positive.
    """
    vals = _numbers(text, "box", (4,))
    if vals is None:
        raise UsageError(f"malformed box {text!r}: use x,y,w,h in pixels, e.g. --box 250,215,36,97")
    x, y, w, h = vals
    if w <= 0 or h <= 0:
        raise UsageError(f"empty box {text!r}: width and height must be positive")
    return (x, y, x + w, y + h)


def parse_point(text: str) -> tuple[float, float, int]:
    """Parse ``"x,y[,label]"`` (pixels; label 1 foreground, default, or 0 background).

    Raises:
        UsageError: malformed text or a label other than 0/1.
    """
    vals = _numbers(text, "point", (2, 3))
    if vals is None:
        raise UsageError(f"malformed point {text!r}: use x,y or x,y,label in pixels, e.g. --point 268,260,1")
    label = 1 if len(vals) == 2 else vals[2]
    if label not in (0.0, 1.0):
        raise UsageError(f"bad point label in {text!r}: use 1 (foreground) or 0 (background)")
    return (vals[0], vals[1], int(label))


_PREFIX = re.compile(r"^\s*(?P<id>\d+)?(?:@(?P<frame>\d+))?:(?P<value>.*)$")


def split_prompt_prefix(text: str) -> tuple[int | None, int | None, str]:
    """Split ``"[ID][@FRAME]:VALUE"`` into ``(id | None, frame | None, VALUE)``.

    Without a prefix the whole text is the value: ``"250,215,36,97"`` ->
    ``(None, None, "250,215,36,97")``; ``"2@40:250,215,36,97"`` -> ``(2, 40, ...)``;
    ``"@40:..."`` sets only the frame, ``"3:..."`` only the object id.
    """
    m = _PREFIX.match(text)
    if m is None or (m.group("id") is None and m.group("frame") is None):
        return None, None, text
    obj = None if m.group("id") is None else int(m.group("id"))
    frame = None if m.group("frame") is None else int(m.group("frame"))
    return obj, frame, m.group("value")


def build_prompts(boxes: list[str], points: list[str], masks: list[str], prompt_frame: int = 0,
                  load_mask=None) -> list[ObjectPrompt]:
    """Turn the ``--box``/``--point``/``--mask`` strings of the CLI into one prompt per object and frame.

    Syntax: each string may start with ``ID@FRAME:``, ``ID:`` or ``@FRAME:``
    (e.g. ``--box 2@40:250,215,36,97``, ``--point 1:268,260,0``, ``--mask 3@12:obj3.png``).
    A ``--box`` without an id is a new object with the next free id (1, 2, ...);
    a ``--point`` or ``--mask`` without an id belongs to object 1, which is only
    allowed while there is at most one object. A prompt without a frame is on
    the first frame its object's other prompts name, else on ``prompt_frame``.
    One object may have prompts on several frames (``--point 1@0:x,y --point
    1@80:x,y,0 --box 1@150:x,y,w,h``): each prompted frame becomes one of its
    conditioning frames, as when the official ``add_new_points_or_box`` /
    ``add_new_mask`` is called once per frame before propagating. On one frame
    an object has at most one box and one mask, and a mask cannot be combined
    with a box or points (a mask prompt replaces them, as in ``add_new_mask``).

    Args:
        load_mask: ``path -> bool ndarray [H, W]``; required when ``masks`` is not empty.
    Returns:
        Prompts sorted by object id, then frame (one :class:`ObjectPrompt` per
        object and prompted frame).
    Raises:
        UsageError: malformed strings, ids outside 1..255, conflicting prompts.
    """
    per_obj: dict[tuple[int, int], dict] = {}
    used: list[int] = []
    explicit = {split_prompt_prefix(t)[0] for t in boxes + points + masks} - {None}

    # object ids of the boxes first (a box without an id is a new object)
    box_ids, next_id = [], 1
    for text in boxes:
        oid, _, _ = split_prompt_prefix(text)
        if oid is None:
            while next_id in explicit or next_id in used:
                next_id += 1
            oid = next_id
        used.append(oid)
        box_ids.append(oid)
    named_frames: dict[int, int] = {}  # each object's first named frame (boxes, points, masks, in order)
    for oid, text in zip(box_ids, boxes):
        frame = split_prompt_prefix(text)[1]
        if frame is not None:
            named_frames.setdefault(oid, frame)
    for t in points + masks:
        oid, frame, _ = split_prompt_prefix(t)
        if frame is not None:
            named_frames.setdefault(1 if oid is None else oid, frame)

    def obj(oid: int | None, frame: int | None, what: str) -> dict:
        if oid is None:
            oid = 1
        if not 1 <= oid <= 255:
            raise UsageError(f"object id {oid} in {what} is out of range: use 1..255")
        if frame is None:
            frame = named_frames.get(oid, prompt_frame)
        return per_obj.setdefault((oid, frame), {"box": None, "points": [], "mask": None})

    for oid, text in zip(box_ids, boxes):
        _, frame, value = split_prompt_prefix(text)
        entry = obj(oid, frame, f"--box {text}")
        if entry["box"] is not None:
            where = "" if frame is None else f" on frame {frame}"
            raise UsageError(f"object {oid} has two boxes{where}: give one --box per object and frame")
        entry["box"] = parse_box(value)
    for kind, items in (("point", points), ("mask", masks)):
        for text in items:
            oid, frame, value = split_prompt_prefix(text)
            if oid is None and len(set(used) | explicit) > 1:
                raise UsageError(f"--{kind} {text} names no object and there are several: "
                                 f"prefix it with the object id, e.g. --{kind} 2:{value}")
            entry = obj(oid, frame, f"--{kind} {text}")
            if kind == "point":
                entry["points"].append(parse_point(value))
            else:
                if entry["mask"] is not None:
                    raise UsageError(f"object {oid or 1} has two masks on one frame: give one --mask per object "
                                     "and frame")
                if load_mask is None:
                    raise UsageError("mask prompts need a mask loader")
                entry["mask"] = load_mask(value)
    prompts = []
    for oid, frame in sorted(per_obj):
        e = per_obj[(oid, frame)]
        if e["mask"] is not None and (e["box"] is not None or e["points"]):
            raise UsageError(f"object {oid} has a mask and a box/points on frame {frame}: give either a --mask or "
                             "a --box/--point on one frame")
        prompts.append(ObjectPrompt(oid, frame, box=e["box"], points=tuple(e["points"]), mask=e["mask"]))
    return prompts


def load_mask_png(path: str) -> np.ndarray:
    """Read a mask image: any non-zero pixel is the object. Returns ``[H, W]`` bool.

    Raises:
        InputError: missing or unreadable file, or a mask without any non-zero pixel.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "P", "1", "I", "I;16") else im)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read mask {path} ({type(e).__name__}): give a PNG whose non-zero pixels are the object") from None
    if arr.ndim != 2:
        arr = arr[..., 0]
    mask = arr != 0
    if not mask.any():
        raise InputError(f"mask {path} is empty (every pixel is 0): paint the object with non-zero pixels")
    return mask
