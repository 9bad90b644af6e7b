"""Output writers: overlay video, DAVIS-style indexed mask PNGs, JSON lines.

Every writer writes to a hidden temporary sibling of its target (see
:func:`atomic_path`) and ``os.replace``-s it onto the target only when the file
is complete, so a target path never holds a half-written file. A full disk
(``ENOSPC``/``EDQUOT``) raises :class:`RuntimeFailure`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import cv2
import numpy as np
from av.video.reformatter import Colorspace
from PIL import Image

from ..errors import InputError, RuntimeFailure


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC palette: ``(256, 3)`` uint8 RGB, row ``i`` = colour of label ``i``.

    Bits 0, 1, 2 of ``i`` go to the most significant free bit of R, G, B, then
    bits 3, 4, 5 to the next one, and so on: 0 black, 1 (128, 0, 0),
    2 (0, 128, 0), 3 (128, 128, 0), 4 (0, 0, 128), ...
    """
    idx = np.arange(256)
    pal = np.zeros((256, 3), np.int64)
    for shift in range(8):  # bit triple `shift` of i -> bit (7 - shift) of R, G, B
        for channel in range(3):
            pal[:, channel] |= ((idx >> (3 * shift + channel)) & 1) << (7 - shift)
    return pal.astype(np.uint8)


def overlay_masks(rgb: np.ndarray, label_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint each object of ``label_map`` over ``rgb`` and outline it.

    ``rgb``: ``(H, W, 3)`` uint8. ``label_map``: ``(H, W)`` uint8, 0 background,
    ``k > 0`` object id ``k``. Pixels of object ``k`` become
    ``(1 - alpha) * rgb + alpha * davis_palette()[k]`` (rounded); then every
    border of the object (outer and holes) is drawn 2 px wide in a brightened
    version of that colour. ``alpha`` in [0, 1]. Returns a new ``(H, W, 3)``
    uint8 array; the inputs are not modified. Raises ``ValueError`` on wrong
    shapes, dtypes or ``alpha``.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if label_map.dtype != np.uint8 or label_map.shape != rgb.shape[:2]:
        raise ValueError(f"label_map must be {rgb.shape[:2]} uint8, got {label_map.shape} {label_map.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    palette = davis_palette()
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    fg = label_map > 0
    if not fg.any():
        return out
    tint = palette[label_map[fg]].astype(np.float32)
    out[fg] = (out[fg].astype(np.float32) * (1.0 - alpha) + tint * alpha + 0.5).astype(np.uint8)
    for k in np.unique(label_map[fg]):
        colour = palette[k].astype(np.int32)
        bright = np.where(colour > 0, colour + (255 - colour) // 2, 0)  # half-way to 255
        contours, _ = cv2.findContours((label_map == k).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in bright), thickness=2)
    return out


def atomic_path(path: str | os.PathLike) -> Path:
    """Hidden temporary sibling of ``path``: ``<dir>/.<stem>.partial-<pid><suffix>``.

    The suffix is kept so tools that infer a format from it (PyAV, PIL) still do.
    """
    p = Path(path)
    return p.with_name(f".{p.stem}.partial-{os.getpid()}{p.suffix}")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a one-line :class:`RuntimeFailure`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise RuntimeFailure(
                f"disk full while writing {path}: free space or choose another output location"
            ) from exc
        raise RuntimeFailure(f"cannot write {path} ({exc}): check the output location") from exc


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class _ClosedOnExit:
    """Context-manager behaviour of the atomic writers: ``__exit__`` calls ``close()``.

    On an exception the partial output is still finalised (valid, renamed into
    place); if ``close()`` itself fails then (it has already aborted), the
    original exception is the one that propagates.
    """

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(Exception):
            self.close()


class OverlayVideoWriter(_ClosedOnExit):
    """Encode RGB frames into a video file, made visible at ``path`` on :meth:`close`.

    ``path``: target file; its extension picks the container (.mp4, .mkv, .avi,
    ...). Parent folders are created. ``width``/``height``: frame size in pixels;
    the video keeps exactly this size. ``fps``: frames/second (> 0), stored as a
    fraction with denominator <= 1001 (29.97002997 -> 30000/1001).

    Codec: libx264 (yuv420p, crf 18) when this PyAV build has it, else the
    build's "h264" encoder, else mpeg4 (qscale 2); frames are converted to
    limited-range BT.709 YUV and tagged so. An odd width or
    height cannot be H.264 yuv420p, so such sizes are encoded with mpeg4 yuv420p,
    which allows odd sizes and plays in common players.

    ``write(rgb)`` appends a ``(height, width, 3)`` uint8 frame. ``close()``
    flushes the encoder, finalises the container and renames it onto ``path``;
    after ``close()`` with zero frames written, nothing is left at ``path``.
    ``abort()`` discards everything. Used as a context manager, leaving the
    block closes (also on an exception, so a run that stops early keeps a
    playable video of the frames written so far).

    Raises :class:`InputError` when the file cannot be created or no encoder
    works for the container, :class:`RuntimeFailure` when writing fails (disk
    full), ``ValueError`` for a frame of the wrong shape or dtype.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float):
        if width <= 0 or height <= 0 or not fps > 0:
            raise ValueError(f"need positive width, height and fps, got {width}x{height} at {fps} fps")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.frames_written = 0
        self._tmp = atomic_path(self.path)
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), mode="w")
        except (OSError, ValueError) as exc:  # av.FFmpegError is an OSError
            _remove(self._tmp)
            raise InputError(
                f"cannot create video {self.path} ({exc}): use a writable folder and a .mp4/.mkv/.avi name"
            ) from exc
        try:
            self._stream = self._add_stream(rate)
        except BaseException:
            self.abort()
            raise

    def _add_stream(self, rate: Fraction) -> "av.video.stream.VideoStream":
        even = self.width % 2 == 0 and self.height % 2 == 0
        candidates = (["libx264", "h264"] if even else []) + ["mpeg4"]
        failures = []
        for name in candidates:
            try:
                stream = self._container.add_stream(name, rate=rate)
            except (av.FFmpegError, ValueError, av.codec.codec.UnknownCodecError) as exc:
                failures.append(f"{name}: {exc}")
                continue
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            cc = stream.codec_context
            if cc.name == "libx264":
                stream.options = {"crf": "18", "preset": "fast"}
            elif cc.name == "mpeg4":
                cc.qscale = 2
            cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709, as write() converts
            cc.color_range = 1  # limited ("MPEG") range
            try:
                cc.open()
                return stream
            except av.FFmpegError as exc:  # a stream that failed to open cannot be removed: start over
                failures.append(f"{name}: {exc}")
                self._container.close()
                self._container = av.open(str(self._tmp), mode="w")
        raise InputError(
            f"no video encoder works for {self.path} ({'; '.join(failures)}): use a .mp4 or .mkv output name"
        )

    def write(self, rgb: np.ndarray) -> None:
        """Append one ``(height, width, 3)`` uint8 RGB frame (frame index = frames written so far)."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.height}, {self.width}, 3) uint8, got {rgb.shape} {rgb.dtype}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709)
        frame.pts = self.frames_written
        frame.time_base = self._stream.codec_context.time_base
        with _writing(self.path):
            self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush, finalise and rename onto ``path``; no file at all if no frame was written. Idempotent."""
        if self._container is None:
            return
        if self.frames_written == 0:
            self.abort()
            return
        try:
            with _writing(self.path):
                self._container.mux(self._stream.encode(None))
                self._container.close()
                self._container = None
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close without finalising and delete the temporary file; ``path`` is left untouched."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        _remove(self._tmp)


class MaskPngWriter:
    """Write per-frame label maps as DAVIS-style indexed PNGs into ``directory``.

    ``write(frame_index, label_map)`` stores ``label_map`` (``(H, W)`` uint8,
    pixel value = object id, 0 background) as ``{frame_index:05d}.png`` in mode
    "P" with :func:`davis_palette`, via a temporary file and ``os.replace``.
    The directory is created if needed. Raises :class:`InputError` when it
    cannot be created, :class:`RuntimeFailure` when a write fails (disk full),
    ``ValueError`` for a label map of the wrong shape or dtype.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create mask folder {self.directory} ({exc}): choose a writable location") from exc
        self._palette = davis_palette().tobytes()

    def write(self, frame_index: int, label_map: np.ndarray) -> Path:
        """Write frame ``frame_index``'s ``(H, W)`` uint8 label map; returns the PNG's path."""
        if label_map.ndim != 2 or label_map.dtype != np.uint8:
            raise ValueError(f"label_map must be (H, W) uint8, got {label_map.shape} {label_map.dtype}")
        target = self.directory / f"{frame_index:05d}.png"
        tmp = atomic_path(target)
        img = Image.fromarray(np.ascontiguousarray(label_map))
        img.putpalette(self._palette)  # turns the "L" image into "P" with the same indices
        try:
            with _writing(target):
                img.save(tmp, format="PNG")
                os.replace(tmp, target)
        except BaseException:
            _remove(tmp)
            raise
        return target

    def close(self) -> None:
        """Nothing to finalise: every PNG was complete when ``write`` returned."""

    def abort(self) -> None:
        """Nothing to undo: PNGs already written are complete and stay."""


def _json_default(value: Any) -> Any:
    """Let ``json`` write NumPy scalars and arrays."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonLinesWriter(_ClosedOnExit):
    """Append one JSON object per line; the file appears at ``path`` on :meth:`close`.

    ``write(record)`` serialises a dict (NumPy scalars/arrays allowed) as one
    line and flushes it to the temporary file. ``close()`` (also called when
    leaving a ``with`` block, with or without an exception) renames it onto
    ``path``; ``abort()`` deletes it. Parent folders are created. Raises
    :class:`InputError` when the file cannot be created, :class:`RuntimeFailure`
    when a write fails (disk full).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._tmp = atomic_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "w", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot create {self.path} ({exc}): choose a writable location") from exc

    def write(self, record: dict) -> None:
        """Append ``record`` as one JSON line and flush it."""
        line = json.dumps(record, default=_json_default) + "\n"
        with _writing(self.path):
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        """Close and rename onto ``path``. Idempotent."""
        if self._file is None:
            return
        try:
            with _writing(self.path):
                file, self._file = self._file, None
                file.close()
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and delete the temporary file; ``path`` is left untouched."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        _remove(self._tmp)

