"""What a ``track SOURCE`` string names, and opening a live one through PyAV/FFmpeg.

- :func:`classify_source`: ``"file" | "folder" | "url" | "v4l2" | "stdin"``.
- :func:`is_live`: live by default for everything that is not a regular file or folder.
- :func:`open_spec` / :func:`open_input`: the FFmpeg protocol options of each kind
  (RTSP transport, open and read timeouts) and the one-line errors of a source
  that cannot be opened. No protocol is spoken here: FFmpeg does it all.

Timeouts are enforced twice: by PyAV's interrupt callback (``av.open(...,
timeout=(open_s, read_s))``, which covers every protocol and the probing of the
stream) and by each FFmpeg protocol's own socket timeout (``timeout`` for RTSP
and UDP, ``rw_timeout`` for the other network protocols, in microseconds). A
FFmpeg ``pipe:``/stdin read is a blocking ``read(2)`` that neither can
interrupt: stdin ends at end of file.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ..errors import EnvironmentMissing, InputError, SourceUnavailable, UsageError

SourceKind = Literal["file", "folder", "url", "v4l2", "stdin"]

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp")
"""URL schemes accepted as live sources (FFmpeg protocols)."""

RTSP_TRANSPORTS = ("tcp", "udp")
DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 5.0

_V4L2_NAME = re.compile(r"^/dev/video\d+$")


def classify_source(source: str) -> SourceKind:
    """What ``source`` names.

    ``"-"`` -> ``"stdin"``; ``scheme://...`` with a scheme in :data:`URL_SCHEMES`
    (any case) -> ``"url"``; ``/dev/videoN`` (present or not) or any other
    character device -> ``"v4l2"``; an existing folder -> ``"folder"``; anything
    else (a video file, a named pipe, a path that does not exist) -> ``"file"``.

    Raises :class:`UsageError` for a URL whose scheme FFmpeg would not read as a
    live source (``ftp://``, ``file://``...).
    """
    if source == "-":
        return "stdin"
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme not in URL_SCHEMES:
            raise UsageError(f"source {source!r}: unsupported scheme {scheme!r}: use one of "
                             f"{', '.join(s + '://' for s in URL_SCHEMES)}, a file, a folder, /dev/videoN or -")
        return "url"
    if _V4L2_NAME.match(source):
        return "v4l2"
    try:
        mode = os.stat(source).st_mode
    except OSError:
        return "file"
    if stat.S_ISCHR(mode):
        return "v4l2"
    return "folder" if stat.S_ISDIR(mode) else "file"


def is_live(source: str, realtime: bool = False) -> bool:
    """Whether ``source`` is read in live mode (newest frame, drops counted; :mod:`sam2trt.video.live`).

    True for URLs, cameras, stdin and anything that is not a regular file or a
    folder (a named pipe); for a regular file only with ``realtime=True``
    (``--realtime``: paced by its timestamps). A folder is never live.
    """
    kind = classify_source(source)
    if kind == "folder":
        return False
    if kind == "file":
        return realtime or (os.path.exists(source) and not os.path.isfile(source))
    return True


@dataclass(frozen=True)
class OpenSpec:
    """Arguments of ``av.open`` for one source.

    ``file``: the URL, path or ``"pipe:0"``; ``format``: the demuxer to force
    (``"v4l2"`` for cameras) or ``None`` to probe; ``options``: FFmpeg options
    (strings); ``kind``: :func:`classify_source`'s answer; ``scheme``: the URL
    scheme, else ``""``.
    """

    file: str
    format: str | None
    kind: SourceKind
    scheme: str = ""
    options: dict[str, str] = field(default_factory=dict)


def _micros(seconds: float) -> str:
    return str(max(1, int(round(seconds * 1e6))))


def open_spec(source: str, *, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
              rtsp_transport: str = "tcp") -> OpenSpec:
    """The FFmpeg input and options for ``source`` (see the module docstring).

    ``read_timeout_s`` (seconds, > 0) becomes each protocol's socket timeout:
    RTSP ``timeout`` (with ``rtsp_transport`` ``"tcp"`` or ``"udp"``), UDP
    ``timeout`` (with ``overrun_nonfatal``), ``rw_timeout`` for RTMP, HTTP(S),
    SRT and TCP. Raises :class:`UsageError` for a bad transport or timeout.
    """
    if rtsp_transport not in RTSP_TRANSPORTS:
        raise UsageError(f"--rtsp-transport {rtsp_transport!r}: use tcp or udp")
    if not read_timeout_s > 0:
        raise UsageError(f"read timeout {read_timeout_s}: give a positive number of seconds")
    kind = classify_source(source)
    if kind == "stdin":
        return OpenSpec("pipe:0", None, kind)
    if kind == "v4l2":
        return OpenSpec(source, "v4l2", kind)
    if kind != "url":
        return OpenSpec(source, None, kind)
    scheme = source.split("://", 1)[0].lower()
    if scheme in ("rtsp", "rtsps"):
        options = {"rtsp_transport": rtsp_transport, "timeout": _micros(read_timeout_s)}
    elif scheme in ("udp", "rtp"):
        options = {"timeout": _micros(read_timeout_s), "overrun_nonfatal": "1"}
    else:
        options = {"rw_timeout": _micros(read_timeout_s)}
    return OpenSpec(source, None, kind, scheme, options)


def describe(source: str) -> str:
    """``source`` for messages: stdin as ``stdin``, a URL without its user and password."""
    if source == "-":
        return "stdin"
    if "://" in source:
        parts = urlsplit(source)
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            return parts._replace(netloc=netloc).geturl()
    return source


def failure_reason(exc: BaseException, timeout_s: float | None = None) -> str:
    """A short reason for a PyAV/FFmpeg failure: ``"Connection refused"``, ``"no data for 2 s"``...

    Drops the ``[Errno N]`` prefix and the quoted URL; PyAV's interrupt
    (``ExitError``, "Immediate exit requested") becomes ``no data for
    {timeout_s} s``.
    """
    import av

    if isinstance(exc, av.error.ExitError) and timeout_s is not None:
        return f"no data for {timeout_s:g} s"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = re.sub(r"^\[Errno -?\d+\]\s*", "", first)
    return re.sub(r":\s*'[^']*'$", "", first)[:160] or type(exc).__name__


def open_error(source: str, spec: OpenSpec, exc: BaseException, open_timeout_s: float) -> Exception:
    """The one-line error for an ``av.open`` of ``source`` that raised ``exc``.

    Cameras: missing device or not a camera -> :class:`InputError` (exit 3).
    URLs: no protocol in this FFmpeg -> :class:`EnvironmentMissing` (5); refused,
    timed out, reset, HTTP error or nothing decodable within ``open_timeout_s``
    -> :class:`SourceUnavailable` (6). Stdin or a file that is not a video ->
    :class:`InputError` (3).
    """
    import av

    name = describe(source)
    reason = failure_reason(exc, open_timeout_s)
    if spec.kind == "v4l2":
        if isinstance(exc, FileNotFoundError):
            return InputError(f"camera {name} does not exist: list the cameras with `ls /dev/video*` "
                              "(or `v4l2-ctl --list-devices`) and pass one of them")
        return InputError(f"{name} is not a V4L2 camera ({reason}): pass a capture device such as /dev/video0")
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return EnvironmentMissing(f"this FFmpeg build cannot read {spec.scheme}:// ({reason}): "
                                  "install PyAV from PyPI, whose FFmpeg has it")
    if spec.kind == "url":
        return SourceUnavailable(f"{name} does not answer ({reason}) within the {open_timeout_s:g} s open "
                                 "timeout: check the URL and that the server is up, or raise --open-timeout")
    where = "stdin" if spec.kind == "stdin" else name
    return InputError(f"{where} is not a readable video ({reason}): pipe a container such as "
                      "`ffmpeg -i IN -f mpegts -` or pass a video file")


def open_input(source: str, spec: OpenSpec, *, open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
               read_timeout_s: float = DEFAULT_READ_TIMEOUT_S):
    """``av.open`` ``spec`` for reading; returns ``(container, video_stream)``.

    ``open_timeout_s`` bounds connecting and probing, ``read_timeout_s`` each
    later read (seconds; PyAV's interrupt callback). Raises the error of
    :func:`open_error`, or :class:`InputError` when the source has no video
    stream or no frame size.
    """
    import av

    if not open_timeout_s > 0:
        raise UsageError(f"open timeout {open_timeout_s}: give a positive number of seconds")
    try:
        container = av.open(spec.file, "r", format=spec.format, options=dict(spec.options),
                            timeout=(open_timeout_s, read_timeout_s))
    except (OSError, av.FFmpegError, EOFError, ValueError) as exc:
        raise open_error(source, spec, exc, open_timeout_s) from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{describe(source)} has no video stream: pass a source with video")
    stream = container.streams.video[0]
    if not (stream.codec_context.width > 0 and stream.codec_context.height > 0):
        container.close()
        raise InputError(f"{describe(source)} gives no frame size after probing: check the stream, or raise "
                         "--open-timeout so that FFmpeg sees a whole frame")
    stream.thread_type = "SLICE"  # frame threads would hold back one frame per thread: latency
    return container, stream
