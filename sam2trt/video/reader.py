"""Streaming frame sources: a video file (PyAV) or a folder of JPEG/PNG frames (PIL).

Frames are decoded one at a time and yielded as ``(frame_index, rgb)`` where
``rgb`` is an ``(H, W, 3)`` ``uint8`` C-contiguous array in RGB order; nothing
is kept after it is yielded, so memory does not grow with the video length.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
from PIL import Image

from ..errors import InputError, RuntimeFailure

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_FPS = 30.0
"""Frame rate (frames/second) reported for frame folders, which carry none."""

_IMAGE_ERRORS = (OSError, SyntaxError, ValueError)  # what PIL raises on a broken file
CHUNK_BYTES = 64 * 1024 * 1024
"""Bound (bytes of decoded RGB frames) of one chunk when a video file is read backward."""
_BIG = 1 << 62


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a frame source.

    ``width``/``height`` in pixels, ``fps`` in frames/second, ``num_frames`` the
    frame count the container claims (``None`` when it does not say; decoding may
    still yield a few more or fewer frames than a container claims).
    """

    width: int
    height: int
    fps: float
    num_frames: int | None


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Frame files in ``folder`` in playback order.

    Files ending in .jpg/.jpeg/.png (any case), hidden files excluded. Ordered as
    the official SAM 2 loader does, by ``int(stem)``, when every stem is a
    decimal integer; otherwise by file name. Returns ``[]`` for a folder without
    frames.
    """
    files = [
        p
        for p in Path(folder).iterdir()
        if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    if files and all(re.fullmatch(r"[0-9]+", p.stem) for p in files):
        return sorted(files, key=lambda p: (int(p.stem), p.name))
    return sorted(files, key=lambda p: p.name)


def _load_image_rgb(path: Path) -> np.ndarray:
    """Read one frame with PIL as ``(H, W, 3)`` uint8 RGB (read-only array).

    8-bit modes (L, LA, P, RGBA, CMYK, ...) go through ``Image.convert("RGB")``,
    bit-identical to the official SAM 2 loader; alpha is dropped, not composited.
    16-bit grayscale ("I;16*", "I") keeps the high byte (``value >> 8``) instead
    of PIL's clipping at 255. (PIL already reduces 16-bit RGB PNGs to their high
    byte when opening them.)
    """
    with Image.open(path) as img:
        if img.mode.startswith("I"):
            gray = np.asarray(img).astype(np.int64).clip(0, 65535) >> 8
            return np.ascontiguousarray(np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2))
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))


class FrameSource:
    """A streaming source of RGB frames; create it with :func:`open_frames`.

    Attributes: ``path`` (:class:`pathlib.Path`), ``info`` (:class:`VideoInfo`).
    Iterating yields ``(frame_index, rgb)``: ``frame_index`` counts from 0,
    ``rgb`` is an ``(info.height, info.width, 3)`` uint8 C-contiguous array (may
    be read-only; copy it before modifying in place). Each iteration starts from
    frame 0. Use it as a context manager or call :meth:`close`.

    Raises while iterating: :class:`InputError` when not even the first frame
    decodes; :class:`RuntimeFailure` when decoding fails after frame ``k`` or a
    frame's size differs from the first frame's.
    """

    def __init__(self, path: Path, info: VideoInfo, frame_files: list[Path] | None):
        self.path = path
        self.info = info
        self._files = frame_files
        self._container: av.container.InputContainer | None = None  # opened, not yet iterated
        self._active: set = set()  # containers of iterations in progress

    # -- video files -------------------------------------------------------
    @classmethod
    def _open_video(cls, path: Path, fps: float | None) -> "FrameSource":
        container = _open_container(path)
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        info = VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps if fps is not None else (float(rate) if rate else DEFAULT_FPS),
            num_frames=stream.frames if stream.frames > 0 else None,
        )
        src = cls(path, info, None)
        src._container = container
        return src

    def _iter_video(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._container is None:  # a second iteration: start over
            self._container = _open_container(self.path)
        container, self._container = self._container, None
        self._active.add(container)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            index = -1
            for frame in self._decoded(container, stream, lambda: index):
                index += 1
                if index == 0:
                    first_size = (frame.width, frame.height)
                elif (frame.width, frame.height) != first_size:
                    self._size_changed(index, (frame.width, frame.height), first_size)
                yield index, np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
            if index < 0:
                raise InputError(
                    f"{self.path} has no decodable video frames: re-encode it (e.g. with ffmpeg) "
                    "or pass a folder of JPEG frames"
                )
        finally:
            self._active.discard(container)
            container.close()

    # -- frame folders -----------------------------------------------------
    def _iter_folder(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, file in enumerate(self._files or []):
            try:
                rgb = _load_image_rgb(file)
            except _IMAGE_ERRORS as exc:
                self._decode_failed(index - 1, exc, file)
            if rgb.shape[:2] != (self.info.height, self.info.width):
                self._size_changed(index, (rgb.shape[1], rgb.shape[0]), (self.info.width, self.info.height))
            yield index, rgb

    # -- shared ------------------------------------------------------------
    def _decoded(self, container, stream, last_good: Callable[[], int]) -> Iterator[av.VideoFrame]:
        """The decoded frames of ``stream``; a decoding error raises :meth:`_decode_failed` naming ``last_good()``,
        the index of the last frame handed on (-1: none)."""
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                self._decode_failed(last_good(), exc)
            yield frame

    def _decode_failed(self, last_good: int, exc: Exception, file: Path | None = None) -> None:
        where = file if file is not None else self.path
        if last_good < 0:
            raise InputError(
                f"cannot decode the first frame of {where} ({exc}): "
                "re-encode the video or replace the file"
            ) from exc
        raise RuntimeFailure(
            f"decoding {where} failed after frame {last_good} ({exc}): "
            f"re-encode the input or track frames 0..{last_good} only"
        ) from exc

    def _size_changed(self, index: int, size: tuple[int, int], first: tuple[int, int]) -> None:
        raise RuntimeFailure(
            f"frame {index} of {self.path} is {size[0]}x{size[1]} but frame 0 is "
            f"{first[0]}x{first[1]}: resize all frames to one size"
        )

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self._iter_folder() if self._files is not None else self._iter_video()

    # -- frame ranges, forward or backward --------------------------------------
    def frames(self, start: int, stop: int | None = None, *, reverse: bool = False,
               chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """Frames ``start .. stop - 1`` as ``(frame_index, rgb)``, in increasing order, or decreasing with ``reverse``.

        A frame folder is read directly (in either order). A video file is never
        loaded whole: a demux-only pass (:meth:`frame_index`) maps packet
        presentation timestamps to frame indices (B-frames included) and finds
        the keyframes; a forward range seeks to the keyframe before ``start``
        and decodes forward; a backward range is cut into chunks of at most
        ``chunk_bytes`` of decoded RGB (at least one frame), each decoded forward
        from the keyframe before it and yielded reversed, last chunk first. Peak
        memory is one chunk, whatever the video's length. Without usable
        timestamps each range is decoded from frame 0 (slower, same frames).

        Args:
            start: first frame (0-based); ``stop``: one past the last (``None``: the end).
            reverse: yield ``stop - 1`` down to ``start``.
            chunk_bytes: bound of one backward chunk, in bytes of decoded frames.
        Raises:
            RuntimeFailure: decoding fails inside the range, or frames of another size.
        """
        if self._files is not None:
            stop = len(self._files) if stop is None else min(stop, len(self._files))
            order = range(stop - 1, start - 1, -1) if reverse else range(start, stop)
            for index in order:
                file = self._files[index]
                try:
                    rgb = _load_image_rgb(file)
                except _IMAGE_ERRORS as exc:
                    self._decode_failed(index - 1 if not reverse else index + 1, exc, file)
                if rgb.shape[:2] != (self.info.height, self.info.width):
                    self._size_changed(index, (rgb.shape[1], rgb.shape[0]), (self.info.width, self.info.height))
                yield index, rgb
            return
        pts, keys = self.frame_index()
        n = len(pts) if pts is not None else self.info.num_frames
        if stop is None:
            stop = n if n is not None else _BIG
        if n is not None:
            stop = min(stop, n)
        if not reverse:
            yield from self._decode_range(start, stop, pts, keys)
            return
        per_frame = max(1, self.info.width * self.info.height * 3)
        chunk = max(1, chunk_bytes // per_frame)
        if stop > start:
            chunk = min(chunk, stop - start)
        # One buffer for every chunk, allocated once (a single mapping the allocator returns whole when
        # the range ends, instead of a chunk's worth of frame-sized blocks left to fragment): each frame is
        # decoded into it and handed out as a copy, so the consumer may keep it.
        buf = None
        b = stop
        while b > start:
            a = max(start, b - chunk)
            got: list[int] = []
            for index, rgb in self._decode_range(a, b, pts, keys):
                if buf is None:
                    buf = np.empty((chunk, *rgb.shape), np.uint8)
                buf[len(got)] = rgb
                got.append(index)
                del rgb
            if not got:
                return
            for k in range(len(got) - 1, -1, -1):
                yield got[k], buf[k].copy()
            b = a

    def frame_index(self) -> tuple[list[int] | None, list[int] | None]:
        """``(pts, keyframes)`` of a video file, from a demux-only pass (cached; no decoding).

        ``pts[i]`` is frame ``i``'s presentation timestamp (stream time base), in
        presentation order; ``keyframes`` are the keyframes' indices. ``(None, None)``
        when packets lack timestamps or repeat them (ranges are then decoded from frame 0).
        """
        if getattr(self, "_index", None) is None:
            container = _open_container(self.path)
            try:
                stream = container.streams.video[0]
                stamps, key_stamps = [], set()
                ok = True
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    if packet.pts is None:
                        ok = False
                        break
                    stamps.append(packet.pts)
                    if packet.is_keyframe:
                        key_stamps.add(packet.pts)
            except av.FFmpegError:
                ok = False
            finally:
                container.close()
            stamps.sort()
            if not ok or not stamps or len(set(stamps)) != len(stamps):
                self._index = (None, None)
            else:
                self._index = (stamps, [i for i, t in enumerate(stamps) if t in key_stamps] or [0])
        return self._index

    def _decode_range(self, start: int, stop: int, pts, keys) -> Iterator[tuple[int, np.ndarray]]:
        """Decode frames ``start .. stop - 1`` forward, seeking to the keyframe before ``start`` when indexed."""
        if pts is None:
            for index, rgb in self._iter_video():
                if index >= stop:
                    return
                if index >= start:
                    yield index, rgb
            return
        lookup = {t: i for i, t in enumerate(pts)}
        key = max((k for k in keys if k <= start), default=0)
        container = _open_container(self.path)
        self._active.add(container)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if key > 0:
                container.seek(pts[key], stream=stream, backward=True, any_frame=False)
            last = start - 1
            for frame in self._decoded(container, stream, lambda: last):
                index = lookup.get(frame.pts)
                if index is None or index < start:
                    continue
                if index >= stop:
                    break
                if (frame.width, frame.height) != (self.info.width, self.info.height):
                    self._size_changed(index, (frame.width, frame.height), (self.info.width, self.info.height))
                last = index
                yield index, np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
        finally:
            self._active.discard(container)
            container.close()

    def close(self) -> None:
        """Release open containers, also those of unfinished iterations. Safe to call more than once."""
        for container in [self._container, *self._active]:
            if container is not None:
                container.close()
        self._container = None
        self._active.clear()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameSource({str(self.path)!r}, {self.info})"


def _open_container(path: Path) -> "av.container.InputContainer":
    """``av.open`` a file that must have a video stream; :class:`InputError` otherwise."""
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise InputError(
            f"{path} is not a readable video ({exc}): pass a video file (mp4, mkv, avi, ...) "
            "or a folder of JPEG/PNG frames"
        ) from exc
    if not container.streams.video:
        container.close()
        raise InputError(
            f"{path} has no video stream (or is truncated): pass a complete video file or a folder of JPEG/PNG frames"
        )
    return container


def open_frames(path: str | os.PathLike, fps: float | None = None) -> FrameSource:
    """Open a video file or a folder of frames for streaming.

    ``path``: a video file (decoded with PyAV, first video stream, threaded) or
    a folder of .jpg/.jpeg/.png frames (decoded with PIL, ordered as
    :func:`list_frame_files`). ``fps`` (frames/second, > 0) overrides the frame
    rate in ``info``; without it a video reports its average (else guessed)
    rate, else 30.0, and a folder reports :data:`DEFAULT_FPS` (30.0). A folder's
    ``info`` has ``num_frames`` = number of files and the size of its first frame.

    Returns a :class:`FrameSource` (a context manager). Raises :class:`InputError`
    when the path does not exist, a folder holds no frames or its first frame
    cannot be read, a file is not a decodable video or has no video stream, or
    ``fps`` is not a positive number. A video's frames are only checked while
    iterating; use :func:`probe` to validate up front.
    """
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError(f"frame rate {fps} is invalid: pass a positive number of frames per second")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist: check the path to the video or frame folder")
    if p.is_dir():
        files = list_frame_files(p)
        if not files:
            raise InputError(f"{p} contains no .jpg/.jpeg/.png frames: pass a folder of frames or a video file")
        try:
            first = _load_image_rgb(files[0])
        except _IMAGE_ERRORS as exc:
            raise InputError(f"cannot read frame {files[0]} ({exc}): replace or remove the file") from exc
        info = VideoInfo(first.shape[1], first.shape[0], fps or DEFAULT_FPS, len(files))
        return FrameSource(p, info, files)
    if p.suffix.lower() in FRAME_EXTENSIONS:
        raise InputError(f"{p} is a single image: pass the folder that contains the frames")
    return FrameSource._open_video(p, fps)


def probe(path: str | os.PathLike, fps: float | None = None) -> VideoInfo:
    """Validate a source and return its :class:`VideoInfo` without keeping it open.

    Opens ``path`` like :func:`open_frames`, decodes its first frame and closes
    it. Raises :class:`InputError` for every case :func:`open_frames` does and
    when the first frame does not decode (e.g. a video with zero frames).
    """
    with open_frames(path, fps) as source:
        frames = iter(source)
        try:
            next(frames, None)  # InputError when the first frame does not decode
        finally:
            frames.close()
        return source.info
