"""``--out`` beyond a finished file: a fragmented MP4 written in place, or a live stream a player can watch.

- :func:`classify_output`: ``"file" | "url" | "stdout"``.
- :class:`StreamVideoWriter`: the overlay video muxed live through PyAV/FFmpeg
  to ``udp://``, ``srt://``, ``tcp://`` (MPEG-TS), ``rtsp://`` (published to an
  RTSP server, e.g. MediaMTX, over TCP), ``rtmp://`` (FLV) or ``-`` (MPEG-TS
  on stdout). H.264 with a keyframe every second and no lookahead delay
  (x264 ``zerolatency``), so a player joining mid-stream starts within a second.
- :func:`open_video_output`: the writer for a ``--out`` target, live or not.

Watch a stream with ``ffplay udp://127.0.0.1:5000`` or ``vlc udp://@:5000``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import EnvironmentMissing, InputError, RuntimeFailure, UsageError
from .writers import DEFAULT_CRF, OverlayVideoWriter, add_video_stream, check_video_encoder, encode_rgb

OutputKind = Literal["file", "url", "stdout"]

STREAM_FORMATS = {"udp": "mpegts", "srt": "mpegts", "tcp": "mpegts", "rtsp": "rtsp", "rtmp": "flv"}
"""Output URL schemes and the FFmpeg muxer each is written with."""

STREAM_PRESET = "veryfast"
"""x264 preset of stream outputs: a live stream must encode faster than real time."""

FRAGMENT_FILES = False
"""Whether ``--out FILE.mp4`` of a file run (not live) is fragmented too (see docs/live.md: measured, not worth it)."""


def classify_output(target: str) -> OutputKind:
    """``"-"`` -> ``"stdout"``; ``scheme://...`` -> ``"url"`` (scheme checked by
    :func:`check_output`); anything else -> ``"file"``."""
    if target == "-":
        return "stdout"
    return "url" if "://" in target else "file"


def check_output(target: str, width: int, height: int) -> None:
    """Raise :class:`UsageError` for a ``--out`` target that cannot be written: an
    unsupported URL scheme, or a file extension outside ``VIDEO_FORMATS``."""
    kind = classify_output(target)
    if kind == "url":
        scheme = target.split("://", 1)[0].lower()
        if scheme not in STREAM_FORMATS:
            raise UsageError(f"--out {target}: unsupported stream scheme {scheme!r}: use "
                             f"{', '.join(s + '://' for s in STREAM_FORMATS)}, - (stdout) or a video file")
    elif kind == "file":
        check_video_encoder(target, width, height)


class StreamVideoWriter:
    """Encode RGB frames and mux them live to a stream URL or stdout (see the module docstring).

    ``target``: the URL or ``"-"``. ``width``/``height`` in pixels; ``fps``
    frames/second (> 0); ``crf``/``preset`` as :class:`OverlayVideoWriter`.
    ``timeout_s``: seconds the connection may take to open and each write may
    block (a publishing server that stalls). Same interface as
    :class:`OverlayVideoWriter`: ``write(rgb)``, ``close()`` (flushes and ends
    the stream), ``abort()`` (ends it without flushing), context manager.

    Raises :class:`UsageError` for an unsupported scheme, :class:`InputError`
    (exit 3) when the stream cannot be opened (no server, no encoder),
    :class:`EnvironmentMissing` (exit 5) when this FFmpeg lacks the protocol (PyPI's PyAV has no SRT),
    :class:`RuntimeFailure` (exit 4) when a write fails (server gone, stdout
    closed), ``ValueError`` for a frame of the wrong shape or dtype.
    """

    def __init__(self, target: str, width: int, height: int, fps: float, *, crf: int = DEFAULT_CRF,
                 preset: str = STREAM_PRESET, timeout_s: float = 10.0):
        import av

        if width <= 0 or height <= 0 or not fps > 0:
            raise ValueError(f"need positive width, height and fps, got {width}x{height} at {fps} fps")
        check_output(target, width, height)
        self.target, self.width, self.height = target, int(width), int(height)
        self.frames_written = 0
        file, fmt, options = self._muxer_args(target)
        try:
            self._container = av.open(file, mode="w", format=fmt, options=options, timeout=(timeout_s, timeout_s))
        except (OSError, ValueError) as exc:  # av.FFmpegError is an OSError
            raise self._open_failed(exc) from exc
        try:
            self._stream = add_video_stream(self._container, self.width, self.height,
                                            Fraction(fps).limit_denominator(1001), crf=crf, preset=preset,
                                            low_latency=True)
        except BaseException:
            self.abort()
            raise
        try:
            self._container.start_encoding()  # connects (RTSP/RTMP publish) and writes the header now
        except (OSError, ValueError) as exc:
            self.abort()
            raise self._open_failed(exc) from exc

    def _open_failed(self, exc: BaseException) -> InputError | EnvironmentMissing:
        import av

        if isinstance(exc, av.error.ProtocolNotFoundError):
            return EnvironmentMissing(f"this FFmpeg build cannot write {self.target.split('://')[0]}:// ({exc}): "
                                      "use udp:// or tcp://, or a PyAV whose FFmpeg has the protocol")
        return InputError(f"cannot open output stream {self.target} ({exc}): check the URL and that the "
                          "server (RTSP/RTMP/SRT/TCP) is up")

    @staticmethod
    def _muxer_args(target: str) -> tuple[object, str, dict[str, str]]:
        """``(file, format, options)`` of ``av.open`` for ``target``."""
        if target == "-":
            return sys.stdout.buffer, "mpegts", {"flush_packets": "1"}
        scheme = target.split("://", 1)[0].lower()
        options = {"flush_packets": "1"}
        if scheme == "udp" and "?" not in target:
            target += "?pkt_size=1316"  # seven 188-byte TS packets per datagram (a protocol option: in the URL)
        if scheme == "rtsp":
            options["rtsp_transport"] = "tcp"
        return target, STREAM_FORMATS[scheme], options

    def write(self, rgb: np.ndarray) -> None:
        """Append one ``(height, width, 3)`` uint8 RGB frame."""
        import av

        packets = encode_rgb(self._stream, rgb, self.frames_written)
        try:
            self._container.mux(packets)
        except (OSError, av.FFmpegError) as exc:
            raise RuntimeFailure(f"writing to {self.target} failed after {self.frames_written} frames "
                                 f"({exc}): check the receiving server") from exc
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and end the stream. Idempotent."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            container.mux(self._stream.encode(None))
        except Exception as exc:
            with contextlib.suppress(Exception):
                container.close()
            raise RuntimeFailure(f"ending the stream {self.target} failed ({exc})") from exc
        container.close()

    def abort(self) -> None:
        """End the stream without flushing the encoder."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()

    def __enter__(self) -> "StreamVideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self.close()


def open_video_output(target: str | os.PathLike, width: int, height: int, fps: float, *, live: bool,
                      crf: int = DEFAULT_CRF, preset: str | None = None):
    """The writer of ``--out target``: a :class:`StreamVideoWriter` for a URL or ``-``, else an
    :class:`OverlayVideoWriter` -- in a live run fragmented (MP4/MOV) and written in place, so
    it plays while being written and after a kill; otherwise as before (temporary, renamed on close;
    fragmented only if :data:`FRAGMENT_FILES`). ``preset`` defaults to the writer's own."""
    target = str(target)
    if classify_output(target) != "file":
        return StreamVideoWriter(target, width, height, fps, crf=crf, preset=preset or STREAM_PRESET)
    kwargs = {} if preset is None else {"preset": preset}
    return OverlayVideoWriter(Path(target), width, height, fps, crf=crf, fragmented=live or FRAGMENT_FILES,
                              in_place=live, **kwargs)
