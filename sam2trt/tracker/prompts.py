"""Object prompts: what the user gives, and how SAM 2 encodes it as points.

Command-line syntax (parsed by :func:`parse_box` / :func:`parse_point`):

- ``--box x,y,w,h``: top-left corner and size, pixels of the prompt frame.
- ``--point x,y[,label]``: label 1 (foreground, default) or 0 (background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sam2trt.errors import InputError, UsageError


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompt on its conditioning frame.

    Attributes:
        obj_id: object id, 1..255 (the pixel value in the PNG masks).
        frame_idx: the frame the prompt is on (0-based).
        box: ``(x0, y0, x1, y1)`` corners in video pixels, or ``None``.
        points: ``((x, y, label), ...)`` in video pixels, label 1 = foreground,
            0 = background.
    """

    obj_id: int
    frame_idx: int = 0
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float, int], ...] = field(default_factory=tuple)

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
