"""Output writers: overlay video, DAVIS-style indexed mask PNGs, JSON lines.

Every writer writes to an exclusive, unpredictably named temporary next to its
target (:mod:`sam2trt.fileio`) and moves it onto the target only on ``close()``
-- and only when something was written, so a run that wrote nothing leaves an
earlier run's output untouched. A target never holds a half-written file. A
full disk (``ENOSPC``/``EDQUOT``) raises :class:`~sam2trt.errors.RuntimeFailure`.
"""

from __future__ import annotations

import contextlib
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from av.video.reformatter import Colorspace
from PIL import Image

from ..errors import InputError, UsageError
from ..fileio import create_temp, publish, remove, stage_dir, swap_dir, writing


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


_PALETTE = davis_palette()


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
    palette = _PALETTE
    out = np.array(rgb, dtype=np.uint8, order="C", copy=True)
    rows, cols = np.flatnonzero(label_map.any(axis=1)), np.flatnonzero(label_map.any(axis=0))
    if rows.size == 0:
        return out
    # Work on the objects' bounding box grown by one pixel (contours need the background around them).
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, label_map.shape[0])
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, label_map.shape[1])
    labels = label_map[y0:y1, x0:x1]
    crop = out[y0:y1, x0:x1]
    fg = labels > 0
    tint = palette[labels].astype(np.float32)
    blended = (crop.astype(np.float32) * (1.0 - alpha) + tint * alpha + 0.5).astype(np.uint8)
    np.copyto(crop, blended, where=fg[:, :, None])
    for k in np.unique(labels[fg]):
        colour = palette[k].astype(np.int32)
        bright = np.where(colour > 0, colour + (255 - colour) // 2, 0)  # half-way to 255
        contours, _ = cv2.findContours((labels == k).view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(int(x0), int(y0)))
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in bright), thickness=2)
    return out
    tint = palette[label_map[fg]].astype(np.float32)
    out[fg] = (out[fg].astype(np.float32) * (1.0 - alpha) + tint * alpha + 0.5).astype(np.uint8)
    for k in np.unique(label_map[fg]):
        colour = palette[k].astype(np.int32)
        bright = np.where(colour > 0, colour + (255 - colour) // 2, 0)  # half-way to 255
        contours, _ = cv2.findContours((label_map == k).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in bright), thickness=2)
    return out


VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
"""``--out`` extensions and their containers: those that take the H.264 and MPEG-4 Part 2 encoders used here."""

DEFAULT_CRF = 18
DEFAULT_PRESET = "fast"
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def _encoders(width: int, height: int) -> list[str]:
    """Encoders to try, best first: H.264 needs even sides for yuv420p; MPEG-4 Part 2 takes any size."""
    even = width % 2 == 0 and height % 2 == 0
    return [c for c in (["libx264", "h264"] if even else []) + ["mpeg4"] if c in av.codecs_available]


def check_video_encoder(path: str | os.PathLike, width: int, height: int) -> None:
    """Raise :class:`UsageError` unless ``path``'s extension is in :data:`VIDEO_FORMATS` and an encoder exists.

    ``width``/``height``: frame size in pixels (odd sides need MPEG-4 Part 2).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise UsageError(f"--out {path}: unsupported video extension {suffix or '(none)'!r}: "
                         f"use one of {', '.join(VIDEO_FORMATS)}")
    if not _encoders(width, height):
        raise UsageError(f"--out {path}: this PyAV build has no H.264 or MPEG-4 encoder for {width}x{height} "
                         "frames: install PyAV from PyPI (it ships libx264)")


class _ClosedOnExit:
    """Context-manager behaviour of the writers: ``__exit__`` calls ``close()``.

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


FRAGMENT_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
"""``movflags`` of a fragmented MP4/MOV: an empty ``moov`` up front, then one ``moof`` + ``mdat`` per keyframe.

A reader needs no index at the end, so a file cut off anywhere (process
killed, even with SIGKILL) plays up to its last complete fragment.
"""


def add_video_stream(container, width: int, height: int, rate: Fraction, *, crf: int = DEFAULT_CRF,
                     preset: str = DEFAULT_PRESET, low_latency: bool = False, reopen=None):
    """Add and open the best available video encoder stream on the output ``container``.

    Tries :func:`_encoders` in order: libx264 (yuv420p, ``crf``, ``preset``), the
    build's "h264", mpeg4 (qscale 2); BT.709 limited range. ``width``/``height``
    in pixels, ``rate`` frames/second. ``low_latency``: no B-frames, x264
    ``tune=zerolatency`` (no lookahead delay) and a keyframe every second, as a
    live stream or a fragmented file needs. ``reopen``: ``() -> container``
    called after an encoder failed to open (a failed stream cannot be
    removed); without it the first failure is final. Returns the stream;
    raises :class:`InputError` when no encoder works.
    """
    failures = []
    for name in _encoders(width, height):
        try:
            stream = container.add_stream(name, rate=rate)
        except (av.FFmpegError, ValueError, av.codec.codec.UnknownCodecError) as exc:
            failures.append(f"{name}: {exc}")
            continue
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        cc = stream.codec_context
        if cc.name == "libx264":
            stream.options = {"crf": str(crf), "preset": preset, **({"tune": "zerolatency"} if low_latency else {})}
        elif cc.name == "mpeg4":
            cc.qscale = 2
        if low_latency:
            cc.gop_size = max(1, round(float(rate)))
            cc.max_b_frames = 0
        cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709, as encode_rgb() converts
        cc.color_range = 1  # limited ("MPEG") range
        try:
            cc.open()
            return stream
        except av.FFmpegError as exc:
            failures.append(f"{name}: {exc}")
            if reopen is None:
                break
            container = reopen()
    raise InputError(f"no video encoder works for {width}x{height} frames ({'; '.join(failures)}): "
                     "use a .mp4 or .mkv output, or install PyAV from PyPI (it ships libx264)")


def encode_rgb(stream, rgb: np.ndarray, pts: int) -> list:
    """Encode one ``(height, width, 3)`` uint8 RGB frame at ``pts`` (in frames); returns the packets to mux.

    The frame is converted to limited-range BT.709 yuv420p. Raises ``ValueError``
    for a frame of another shape or dtype.
    """
    if rgb.shape != (stream.height, stream.width, 3) or rgb.dtype != np.uint8:
        raise ValueError(f"frame must be ({stream.height}, {stream.width}, 3) uint8, got {rgb.shape} {rgb.dtype}")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709)
    frame.pts = pts
    frame.time_base = stream.codec_context.time_base
    return stream.encode(frame)


class OverlayVideoWriter(_ClosedOnExit):
    """Encode RGB frames into a video file, made visible at ``path`` on :meth:`close`.

    ``path``: target file; its extension picks the container (one of
    :data:`VIDEO_FORMATS`). Parent folders are created. ``width``/``height``: frame size in pixels;
    the video keeps exactly this size. ``fps``: frames/second (> 0), stored as a
    fraction with denominator <= 1001 (29.97002997 -> 30000/1001).

    ``crf``/``preset``: libx264's constant rate factor (0-51, lower is better;
    default 18) and speed preset (:data:`X264_PRESETS`, default "fast").

    Codec: see :func:`add_video_stream` (libx264, else "h264", else mpeg4; an odd
    width or height cannot be H.264 yuv420p, so such sizes are encoded with
    mpeg4 yuv420p, which allows odd sizes and plays in common players).

    ``fragmented`` (MP4/MOV only): write a fragmented file
    (:data:`FRAGMENT_MOVFLAGS`, a keyframe and a fragment every second,
    x264 ``zerolatency``), flushed fragment by fragment. ``in_place``: write
    straight to ``path`` instead of a temporary (live runs: with
    ``fragmented``, a process killed even by SIGKILL leaves ``path`` playable
    up to its last fragment). An earlier file at ``path`` is then replaced at
    once (a symlink there is replaced, not followed), and ``abort()`` deletes
    ``path``: a live run that stops early should ``close()`` to keep it.

    ``write(rgb)`` appends a ``(height, width, 3)`` uint8 frame. ``close()``
    flushes the encoder, finalises the container and renames it onto ``path``;
    after ``close()`` with zero frames written, ``path`` is left untouched.
    Until then the video is written to an exclusive temporary file
    (:func:`sam2trt.fileio.create_temp`, ``tmp_path``).
    ``abort()`` discards everything. Used as a context manager, leaving the
    block closes (also on an exception, so a run that stops early keeps a
    playable video of the frames written so far).

    Raises :class:`InputError` when the file cannot be created or no encoder
    works for the container, :class:`RuntimeFailure` when writing fails (disk
    full), ``ValueError`` for a frame of the wrong shape or dtype.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, *,
                 crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET, fragmented: bool = False,
                 in_place: bool = False):
        if width <= 0 or height <= 0 or not fps > 0:
            raise ValueError(f"need positive width, height and fps, got {width}x{height} at {fps} fps")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.crf, self.preset = int(crf), str(preset)
        self.frames_written = 0
        self._format = VIDEO_FORMATS.get(self.path.suffix.lower())
        if self._format is None:
            check_video_encoder(self.path, width, height)  # raises UsageError
        self.fragmented = bool(fragmented) and self._format in ("mp4", "mov")
        self.in_place = bool(in_place)
        self.tmp_path: Path | None = None
        self._file = None
        self._container = None
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self._open_file()
            self._container = self._open_container()
        except (OSError, ValueError) as exc:  # av.FFmpegError is an OSError
            self.abort()
            raise InputError(
                f"cannot create video {self.path} ({exc}): use a writable folder and a .mp4/.mkv/.avi name"
            ) from exc
        try:
            self._stream = add_video_stream(self._container, self.width, self.height, rate, crf=self.crf,
                                            preset=self.preset, low_latency=self.fragmented, reopen=self._reopen)
        except BaseException:
            self.abort()
            raise

    def _open_file(self) -> None:
        if self.in_place:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_symlink():  # replace a link itself, never the file it points to (as publish does)
                self.path.unlink()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
            self.tmp_path = self.path
            self._file = os.fdopen(fd, "w+b", buffering=0)  # unbuffered: each fragment reaches the file
        else:
            fd, self.tmp_path = create_temp(self.path)
            self._file = os.fdopen(fd, "w+b")

    def _open_container(self):
        options = {"movflags": FRAGMENT_MOVFLAGS, "flush_packets": "1"} if self.fragmented else {}
        return av.open(self._file, mode="w", format=self._format, options=options)

    def _reopen(self):
        """Start the container over in the same file (a stream that failed to open cannot be removed)."""
        self._container.close()
        self._file.seek(0)
        self._file.truncate()
        self._container = self._open_container()
        return self._container

    def write(self, rgb: np.ndarray) -> None:
        """Append one ``(height, width, 3)`` uint8 RGB frame (frame index = frames written so far)."""
        packets = encode_rgb(self._stream, rgb, self.frames_written)
        with writing(self.path):
            self._container.mux(packets)
        self.frames_written += 1

    def close(self) -> None:
        """Flush, finalise and rename onto ``path``; ``path`` untouched if no frame was written. Idempotent."""
        if self._container is None:
            return
        if self.frames_written == 0:
            self.abort()
            return
        try:
            with writing(self.path):
                self._container.mux(self._stream.encode(None))
                self._container.close()
                self._container = None
                self._file.close()
                self._file = None
                if not self.in_place:
                    publish(self.tmp_path, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close without finalising and delete the temporary file (``in_place``: the file); ``path`` untouched."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(Exception):
                file.close()
        remove(self.tmp_path)


class MaskPngWriter(_ClosedOnExit):
    """Write per-frame label maps as DAVIS-style indexed PNGs; the folder appears at ``directory`` on :meth:`close`.

    ``write(frame_index, label_map)`` stores ``label_map`` (``(H, W)`` uint8,
    pixel value = object id, 0 background) as ``{frame_index:05d}.png`` in mode
    "P" with :func:`davis_palette` in a private staging folder next to
    ``directory`` (:func:`sam2trt.fileio.stage_dir`, ``tmp_path``). ``close()``
    swaps the staging folder in whole (:func:`sam2trt.fileio.swap_dir`), so
    ``directory`` holds exactly this writer's frames and never a mix with an
    earlier run's; with no frame written it leaves ``directory`` untouched.
    ``write`` may be called from several threads at once (distinct frames).
    ``abort()`` discards the staging folder. Raises :class:`InputError` when the
    folder cannot be created, :class:`RuntimeFailure` when a write fails (disk
    full), ``ValueError`` for a label map of the wrong shape or dtype.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        try:
            self.tmp_path: Path | None = stage_dir(self.directory)
        except OSError as exc:
            raise InputError(f"cannot create mask folder {self.directory} ({exc}): choose a writable location") from exc
        self._palette = davis_palette().tobytes()
        self.frames_written = 0

    def write(self, frame_index: int, label_map: np.ndarray) -> Path:
        """Write frame ``frame_index``'s ``(H, W)`` uint8 label map; returns its final path (valid after close)."""
        if label_map.ndim != 2 or label_map.dtype != np.uint8:
            raise ValueError(f"label_map must be (H, W) uint8, got {label_map.shape} {label_map.dtype}")
        if self.tmp_path is None:
            raise ValueError(f"{self.directory}: writer is closed")
        name = f"{frame_index:05d}.png"
        img = Image.fromarray(np.ascontiguousarray(label_map))
        img.putpalette(self._palette)  # turns the "L" image into "P" with the same indices
        target = self.directory / name
        with writing(target):
            img.save(self.tmp_path / name, format="PNG")
        self.frames_written += 1
        return target

    def close(self) -> None:
        """Swap the staged folder in at ``directory`` (nothing happens with no frame written). Idempotent."""
        if self.tmp_path is None:
            return
        if self.frames_written == 0:
            self.abort()
            return
        try:
            with writing(self.directory):
                swap_dir(self.tmp_path, self.directory)
            self.tmp_path = None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Delete the staging folder; ``directory`` is left untouched."""
        staged, self.tmp_path = self.tmp_path, None
        remove(staged)


def _json_default(value: Any) -> Any:
    """Let ``json`` write NumPy scalars and arrays."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonLinesWriter(_ClosedOnExit):
    """Append one JSON object per line; the file appears at ``path`` on :meth:`close`.

    ``write(record)`` serialises a dict (NumPy scalars/arrays allowed) as one
    line and flushes it to an exclusive temporary file (``tmp_path``). ``close()``
    (also called when leaving a ``with`` block, with or without an exception)
    renames it onto ``path``, or leaves ``path`` untouched when nothing was
    written; ``abort()`` deletes it. Parent folders are created. Raises
    :class:`InputError` when the file cannot be created, :class:`RuntimeFailure`
    when a write fails (disk full).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp_path: Path | None = None
        self.frames_written = 0
        try:
            fd, self.tmp_path = create_temp(self.path)
            self._file = os.fdopen(fd, "w", encoding="utf-8")
        except OSError as exc:
            remove(self.tmp_path)
            raise InputError(f"cannot create {self.path} ({exc}): choose a writable location") from exc

    def write(self, record: dict) -> None:
        """Append ``record`` as one JSON line and flush it."""
        line = json.dumps(record, default=_json_default) + "\n"
        with writing(self.path):
            self._file.write(line)
            self._file.flush()
        self.frames_written += 1

    def close(self) -> None:
        """Close and rename onto ``path`` (``path`` untouched if nothing was written). Idempotent."""
        if self._file is None:
            return
        if self.frames_written == 0:
            self.abort()
            return
        try:
            with writing(self.path):
                file, self._file = self._file, None
                file.close()
                publish(self.tmp_path, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and delete the temporary file; ``path`` is left untouched."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        remove(self.tmp_path)

