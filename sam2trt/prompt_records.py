"""Prompt records: one JSON object per line that adds, corrects or removes an object.

The one schema shared by ``--prompt-stream PATH`` (followed while it grows) and
a static ``--prompts FILE.jsonl``. Coordinates are pixels of the source frame::

    {"frame": 12, "id": 3, "box": [x, y, w, h]}
    {"id": 3, "points": [[x, y], [x, y]], "labels": [1, 0]}
    {"id": 4, "mask": {"size": [H, W], "counts": "..."}}      (COCO RLE, compressed string or list)
    {"id": 3, "remove": true}

- ``frame`` (optional, >= 0): the source frame number the prompt is for; without
  it the record applies to the next tracked frame.
- ``id``: object id, 1..255.
- ``box`` (top-left corner and size) and ``points`` may be combined; ``labels``
  (1 foreground, 0 background) default to all 1; ``mask`` excludes both.
- ``remove``: true, with no prompt: the object is forgotten.

:func:`parse_prompt_record` turns one record into a :class:`PromptRecord`
holding an :class:`~sam2trt.tracker.prompts.ObjectPrompt` (box as corners
``x0, y0, x1, y1``); :func:`read_prompt_records` reads a whole file;
:class:`PromptFollower` follows a growing file or FIFO (``tail -f``).
"""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from sam2trt.errors import InputError
from sam2trt.tracker.prompts import ObjectPrompt

_KEYS = {"frame", "id", "box", "points", "labels", "mask", "remove"}
MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest record accepted (bytes); a longer line is skipped with a warning."""


@dataclass(frozen=True)
class PromptRecord:
    """One parsed record.

    ``obj_id``: 1..255. ``frame``: the source frame number, or ``None`` (the
    next tracked frame). ``prompt``: the :class:`ObjectPrompt` (its
    ``frame_idx`` is ``frame`` or 0), ``None`` when ``remove``.
    """

    obj_id: int
    frame: int | None
    prompt: ObjectPrompt | None
    remove: bool = False


def _number_list(value: Any, n: int | None, what: str) -> list[float]:
    if not isinstance(value, list) or (n is not None and len(value) != n):
        raise ValueError(f"{what} must be a list of {n} numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{what} must hold finite numbers, got {v!r}")
        out.append(float(v))
    return out


def _int_field(rec: dict, key: str, lo: int, hi: int | None) -> int | None:
    value = rec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f'"{key}" must be an integer {bound}, got {value!r}')
    return value


def _box_xyxy(value: Any) -> tuple[float, float, float, float]:
    x, y, w, h = _number_list(value, 4, '"box" [x, y, w, h]')
    if w <= 0 or h <= 0:
        raise ValueError(f'"box" {value} has no area: width and height must be positive')
    return (x, y, x + w, y + h)


def _points(rec: dict) -> tuple[tuple[float, float, int], ...]:
    if "points" not in rec:
        return ()
    pts = rec["points"]
    if not isinstance(pts, list) or not pts:
        raise ValueError('"points" must be a non-empty list of [x, y]')
    xy = [_number_list(p, 2, '"points" entry [x, y]') for p in pts]
    labels = rec.get("labels", [1] * len(xy))
    if not isinstance(labels, list) or len(labels) != len(xy) or any(lab not in (0, 1) or isinstance(lab, bool)
                                                                     for lab in labels):
        raise ValueError(f'"labels" must be one 1 (foreground) or 0 (background) per point ({len(xy)})')
    return tuple((x, y, int(lab)) for (x, y), lab in zip(xy, labels))


def _mask(value: Any) -> np.ndarray:
    """COCO RLE ``{"size": [H, W], "counts": str | list}`` -> ``[H, W]`` bool."""
    from pycocotools import mask as mask_utils

    if not isinstance(value, dict) or set(value) != {"size", "counts"}:
        raise ValueError('"mask" must be COCO RLE {"size": [H, W], "counts": ...}')
    h, w = (int(v) for v in _number_list(value["size"], 2, '"mask" "size" [H, W]'))
    counts = value["counts"]
    if h <= 0 or w <= 0 or not isinstance(counts, (str, list)):
        raise ValueError('"mask" needs a positive size and "counts" as a string or a list of run lengths')
    try:
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w) if isinstance(counts, list) \
            else {"size": [h, w], "counts": counts.encode("ascii")}
        mask = mask_utils.decode(rle).astype(bool)
    except Exception as exc:  # pycocotools raises bare exceptions on malformed counts
        raise ValueError(f'"mask" RLE does not decode ({type(exc).__name__})') from None
    if mask.shape != (h, w) or not mask.any():
        raise ValueError('"mask" is empty or its counts do not match its size')
    return mask


def parse_prompt_record(record: dict | str, *, where: str = "prompt record") -> PromptRecord:
    """Parse one record (a dict, or its JSON text) per the module docstring.

    ``where`` names it in errors (e.g. ``"prompts.jsonl:7"``). Raises
    :class:`InputError` (exit 3) with a one-line message naming ``where`` and
    the problem: not JSON, not an object, an unknown key, a bad id or frame,
    no prompt, a mask with a box or points, a bad box/points/labels/RLE.
    """
    try:
        rec = json.loads(record) if isinstance(record, str) else record
        if not isinstance(rec, dict):
            raise ValueError("a record must be a JSON object")
        unknown = sorted(set(rec) - _KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}: use {', '.join(sorted(_KEYS))}")
        obj_id = _int_field(rec, "id", 1, 255)
        if obj_id is None:
            raise ValueError('"id" (1..255) is missing')
        frame = _int_field(rec, "frame", 0, None)
        return _build(rec, obj_id, frame)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{where}: {text}: see docs/live.md (prompt records)") from None


def _build(rec: dict, obj_id: int, frame: int | None) -> PromptRecord:
    prompts = [k for k in ("box", "points", "mask") if k in rec]
    if "labels" in rec and "points" not in rec:
        raise ValueError('"labels" without "points"')
    if rec.get("remove") is not None:
        if rec["remove"] is not True or prompts:
            raise ValueError('"remove" must be true and come without box, points or mask')
        return PromptRecord(obj_id, frame, None, remove=True)
    if not prompts:
        raise ValueError('give "box", "points", "mask" or "remove"')
    if "mask" in rec and len(prompts) > 1:
        raise ValueError('"mask" cannot be combined with "box" or "points"')
    box = _box_xyxy(rec["box"]) if "box" in rec else None
    mask = _mask(rec["mask"]) if "mask" in rec else None
    prompt = ObjectPrompt(obj_id, frame or 0, box=box, points=_points(rec), mask=mask)
    return PromptRecord(obj_id, frame, prompt)


def iter_prompt_records(lines: Iterable[str], name: str,
                        on_warning: Callable[[str], None] | None = None) -> Iterator[PromptRecord]:
    """Parse JSON lines (``name`` for messages, lines numbered from 1); blank lines are skipped.

    With ``on_warning`` a malformed record becomes one warning line
    (``"NAME:LINE: problem: ..."``) and the rest go on; without it the
    :class:`InputError` is raised.
    """
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield parse_prompt_record(line, where=f"{name}:{number}")
        except InputError as exc:
            if on_warning is None:
                raise
            on_warning(str(exc))


def read_prompt_records(path: str | os.PathLike) -> list[PromptRecord]:
    """Every record of a JSON-lines file (``--prompts``). Raises :class:`InputError` for an
    unreadable file or the first malformed record (naming its line)."""
    try:
        with open(path, encoding="utf-8") as f:
            return list(iter_prompt_records(f, str(path)))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read prompt records {path} ({exc}): give a UTF-8 JSON-lines file") from None


class PromptFollower:
    """Follow a JSON-lines file or FIFO as it grows (``tail -f``), from its start.

    ``poll()`` returns the records completed since the last call without
    blocking (a line counts once its newline arrived); iterating blocks,
    polling every ``poll_s`` seconds, until :meth:`close` (from any thread).
    A FIFO is opened non-blocking, so no writer is needed yet, and writers may
    come and go. A file that shrinks (rewritten) is read again from its
    start. A malformed record or a line over :data:`MAX_LINE_BYTES` is
    reported by ``on_warning`` (one line naming ``path:line``; default: a
    ``sam2trt.prompts`` log warning) and skipped. Raises :class:`InputError`
    when ``path`` cannot be opened.
    """

    def __init__(self, path: str | os.PathLike, *, poll_s: float = 0.1,
                 on_warning: Callable[[str], None] | None = None):
        self.path, self.poll_s = str(path), float(poll_s)
        self._on_warning = on_warning or _log_warning
        self._closed = threading.Event()
        self._lock = threading.Lock()  # poll() reads the descriptor that close() closes
        self._buffer = b""
        self._line = 0
        self._skipping = False
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._fifo = stat.S_ISFIFO(os.fstat(self._fd).st_mode)
        except OSError as exc:
            raise InputError(f"cannot open prompt stream {self.path} ({exc.strerror}): give a JSON-lines file "
                             "or a FIFO (mkfifo)") from None

    def _read_new(self) -> bytes:
        chunks = []
        if not self._fifo and os.fstat(self._fd).st_size < os.lseek(self._fd, 0, os.SEEK_CUR):
            self._on_warning(f"{self.path}: the file shrank: reading it again from its start")
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._buffer, self._line = b"", 0
        for _ in range(64):  # bounded: at most 64 x 1 MiB per poll
            try:
                chunk = os.read(self._fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def poll(self) -> list[PromptRecord]:
        """The records whose lines were completed since the last call ([] when closed)."""
        with self._lock:
            if self._closed.is_set():
                return []
            self._buffer += self._read_new()
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE_BYTES:
            self._buffer, self._skipping = b"", True
        records = []
        for raw in lines:
            self._line += 1
            where = f"{self.path}:{self._line}"
            if self._skipping or len(raw) > MAX_LINE_BYTES:
                self._skipping = False
                self._on_warning(f"{where}: line longer than {MAX_LINE_BYTES} bytes: skipped")
            elif raw.strip():
                try:
                    records.append(parse_prompt_record(raw.decode("utf-8", errors="replace"), where=where))
                except InputError as exc:
                    self._on_warning(str(exc))
        return records

    def __iter__(self) -> Iterator[PromptRecord]:
        while not self._closed.is_set():
            yield from self.poll()
            self._closed.wait(self.poll_s)

    def close(self) -> None:
        """Stop following (idempotent; a blocked iteration ends within ``poll_s``)."""
        with self._lock:
            if not self._closed.is_set():
                self._closed.set()
                os.close(self._fd)

    def __enter__(self) -> "PromptFollower":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _log_warning(message: str) -> None:
    import logging

    logging.getLogger("sam2trt.prompts").warning("%s", message)
