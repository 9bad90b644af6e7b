"""Live frames: a reader thread that always keeps only the newest decoded frame.

:func:`open_live` opens a camera, a network stream, stdin or (``realtime=True``)
a file paced by its timestamps, and returns a :class:`LiveSource`. Its thread
decodes continuously into a one-slot mailbox; the consumer always takes the
newest frame and every frame overwritten before it was taken is counted as
dropped (``stats.frames_received == stats.frames_taken + stats.frames_dropped``
once the source is drained or closed).

A lost connection or a read timeout is retried with exponential backoff
(``backoff_s = (first, cap)``: waits ``first, 2 first, 4 first, ...`` capped at
``cap`` seconds) up to ``reconnect`` attempts in a row; frame numbers and
timestamps go on across the gap. Giving up raises
:class:`~sam2trt.errors.StreamLost` (exit 6) from the iterator once every frame
received before the loss has been delivered.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np

from ..errors import StreamLost, UsageError
from .live_open import (DEFAULT_OPEN_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S, OpenSpec, describe, failure_reason,
                        open_input,
                        open_spec)

DEFAULT_RECONNECT = 5
"""Reconnect attempts in a row before giving up (``--reconnect``)."""
DEFAULT_BACKOFF_S = (0.5, 8.0)
MAX_INVALID_IN_A_ROW = 10
"""Unreadable packets in a row (no frame decoded between them) that count as a lost stream."""

_LOG = logging.getLogger("sam2trt.live")


@dataclass(frozen=True)
class LiveFrame:
    """One decoded frame of a live source.

    ``index``: source frame number, counted from the first frame received
    (0-based; dropped frames use numbers too). ``rgb``: ``[H, W, 3]`` uint8 RGB.
    ``time_s``: presentation time in seconds on the stream's timeline
    (``pts * time_base``) relative to the first frame; across a reconnect or a
    timestamp jump backwards it continues from the last one plus the wall-clock
    gap, so it never decreases. ``received_s``: ``time.monotonic()`` when it was decoded.
    """

    index: int
    rgb: np.ndarray
    time_s: float | None
    received_s: float


@dataclass
class LiveStats:
    """Counters of a :class:`LiveSource` (read :meth:`LiveSource.stats` for a consistent copy).

    ``frames_received`` = ``frames_taken`` + ``frames_dropped`` + (1 while a
    frame waits in the mailbox; after :meth:`LiveSource.close` it counts as dropped). ``reconnects``: successful reopenings;
    ``reconnect_attempts``: every attempt, failed or not; ``decode_errors``:
    packets the decoder rejected (skipped); ``gap_s``: seconds spent
    disconnected; ``last_error``: the last read or open failure, one line.
    """

    frames_received: int = 0
    frames_taken: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    reconnect_attempts: int = 0
    decode_errors: int = 0
    gap_s: float = 0.0
    last_error: str = ""


class _Mailbox:
    """One slot shared by the reader thread (``put``) and the consumer (``take``), with the counters."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.slot: LiveFrame | None = None
        self.done = False
        self.error: BaseException | None = None
        self.stats = LiveStats()

    def put(self, frame: LiveFrame) -> None:
        with self.cond:
            self.stats.frames_received += 1
            if self.done:  # closed while the reader was blocked: never to be taken
                self.stats.frames_dropped += 1
                return
            if self.slot is not None:
                self.stats.frames_dropped += 1
            self.slot = frame
            self.cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.done, self.error = True, error
            self.cond.notify_all()

    def discard(self) -> None:
        """Count a frame still waiting (never to be taken) as dropped."""
        with self.cond:
            if self.slot is not None:
                self.slot = None
                self.stats.frames_dropped += 1

    def take(self, alive: Callable[[], bool]) -> LiveFrame | None:
        """The newest frame, waiting for one; ``None`` at the end (raises the reader's error after the last frame)."""
        with self.cond:
            while self.slot is None and not self.done:
                self.cond.wait(0.25)
                if self.slot is None and not alive():
                    self.done = True
            frame, self.slot = self.slot, None
            if frame is not None:
                self.stats.frames_taken += 1
                return frame
            if self.error is not None:
                raise self.error
            return None


class _Timeline:
    """Presentation times in seconds from the first frame, continuous across reconnects and jumps back."""

    def __init__(self) -> None:
        self.offset: float | None = None  # stream seconds at time_s == 0 of the current connection
        self.last: tuple[float, float] | None = None  # (time_s, received_s) of the last frame

    def restart(self) -> None:
        """A new connection: its timestamps start anywhere; rebase at its first frame."""
        self.offset = None

    def stamp(self, pts: int | None, time_base, received_s: float) -> float:
        if pts is None or time_base is None:
            t = 0.0 if self.last is None else self.last[0] + max(received_s - self.last[1], 1e-6)
        else:
            seconds = float(pts * time_base)
            if self.offset is None or (self.last is not None and seconds - self.offset < self.last[0]):
                guess = 0.0 if self.last is None else self.last[0] + max(received_s - self.last[1], 1e-3)
                self.offset = seconds - guess
            t = seconds - self.offset
        self.last = (t, received_s)
        return t


class LiveSource:
    """Frames of a live source, newest first; build it with :func:`open_live`.

    Iterating yields :class:`LiveFrame` s, blocking until a frame newer than the
    last one taken arrives; it ends at the end of the stream (or on
    :meth:`close`) and raises :class:`~sam2trt.errors.StreamLost` after the
    last frame when reconnecting gave up. ``width``/``height``: frame size in
    pixels (frames of a reconnected stream of another size are scaled to it);
    ``fps``: the stream's nominal frame rate, or ``None`` when it does not say.
    A context manager; :meth:`close` stops the thread (at once while it waits
    for a frame, a pacing deadline or a backoff delay; within the open or read
    timeout while FFmpeg blocks on the network) and is idempotent.
    """

    def __init__(self, source: str, spec: OpenSpec, opened, *, realtime: bool, open_timeout_s: float,
                 read_timeout_s: float, reconnect: int, backoff_s: tuple[float, float], end_on_eof: bool):
        self.source, self._spec = source, spec
        container, stream = opened
        self.width, self.height = int(stream.codec_context.width), int(stream.codec_context.height)
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self._timeouts = (open_timeout_s, read_timeout_s)
        self._realtime, self._reconnect, self._backoff_s = realtime, reconnect, backoff_s
        self._end_on_eof = end_on_eof
        self._box = _Mailbox()
        self._stop = threading.Event()
        self._timeline = _Timeline()
        self._next_index = 0
        self._thread = threading.Thread(target=self._run, args=(container, stream), daemon=True,
                                        name="sam2trt-live-reader")
        self._thread.start()

    @property
    def stats(self) -> LiveStats:
        """A consistent copy of the counters (:class:`LiveStats`)."""
        with self._box.cond:
            return replace(self._box.stats)

    @property
    def running(self) -> bool:
        """Whether the reader thread is still decoding (or reconnecting)."""
        return self._thread.is_alive()

    def __iter__(self) -> Iterator[LiveFrame]:
        while True:
            frame = self._box.take(self._thread.is_alive)
            if frame is None:
                return
            yield frame

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the reader thread and release the source; a frame still in the mailbox counts as dropped."""
        self._stop.set()
        self._thread.join(max(self._timeouts) + 1.0)
        self._box.finish(self._box.error)
        self._box.discard()

    # -- reader thread ---------------------------------------------------------------------------

    def _run(self, container, stream) -> None:
        error: BaseException | None = None
        try:
            while container is not None and not self._stop.is_set():
                lost = self._pump(container, stream)
                container.close()
                container = None
                if self._stop.is_set() or lost is None:
                    break
                opened = self._reopen(lost)
                if opened is None:
                    break
                container, stream = opened
        except BaseException as exc:  # handed to the consumer after the frames so far
            error = exc
        finally:
            if container is not None:
                container.close()
            self._box.finish(error or self._box.error)

    def _pump(self, container, stream) -> str | None:
        """Decode until the end (``None``), the stop event (``None``) or a loss (its one-line reason).

        Invalid data (a corrupt packet, a damaged MJPEG boundary) is counted in
        ``decode_errors`` and reading goes on; :data:`MAX_INVALID_IN_A_ROW` of
        them without a frame in between count as a loss.
        """
        import av

        start = None  # (stream seconds, monotonic) of this connection's first frame, for --realtime
        invalid = 0
        while True:
            try:
                for packet in container.demux(stream):
                    if self._stop.is_set():
                        return None
                    for frame in self._decode(packet):
                        invalid = 0
                        start = self._pace(frame, start)
                        if self._stop.is_set():
                            return None
                        self._deliver(frame)
                break
            except av.error.InvalidDataError as exc:
                self._count_decode_error()
                invalid += 1
                if invalid >= MAX_INVALID_IN_A_ROW:
                    return failure_reason(exc)
            except (OSError, av.FFmpegError, EOFError) as exc:
                return failure_reason(exc, self._timeouts[1])
        return None if self._end_on_eof else "end of stream"

    def _decode(self, packet) -> list:
        import av

        try:
            return packet.decode()
        except (av.error.InvalidDataError, av.error.UndefinedError):
            self._count_decode_error()
            return []

    def _count_decode_error(self) -> None:
        with self._box.cond:
            self._box.stats.decode_errors += 1

    def _pace(self, frame, start):
        """With ``realtime``, wait until ``frame`` is due by its timestamp (as a camera would deliver it)."""
        if not self._realtime or frame.pts is None or frame.time_base is None:
            return start
        seconds = float(frame.pts * frame.time_base)
        if start is None:
            return (seconds, time.monotonic())
        due = start[1] + (seconds - start[0])
        self._stop.wait(max(0.0, due - time.monotonic()))
        return start

    def _deliver(self, frame) -> None:
        received = time.monotonic()
        if (frame.width, frame.height) == (self.width, self.height):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
        t = self._timeline.stamp(frame.pts, frame.time_base, received)
        self._box.put(LiveFrame(self._next_index, np.ascontiguousarray(rgb), t, received))
        self._next_index += 1

    def _reopen(self, reason: str):
        """Reconnect with exponential backoff; ``(container, stream)``, or ``None`` after giving up or on stop."""
        lost_at = time.monotonic()
        first, cap = self._backoff_s
        name = describe(self.source)
        for attempt in range(1, self._reconnect + 1):
            delay = min(cap, first * 2 ** (attempt - 1))
            _LOG.warning("%s: %s; reconnect %d/%d in %.1f s", name, reason, attempt, self._reconnect, delay)
            if self._stop.wait(delay):
                return None
            with self._box.cond:
                self._box.stats.reconnect_attempts += 1
                self._box.stats.last_error = reason
            try:
                opened = open_input(self.source, self._spec, open_timeout_s=self._timeouts[0],
                                    read_timeout_s=self._timeouts[1])
            except Exception as exc:  # the one-line open error; try again
                reason = failure_reason(exc.__cause__ or exc, self._timeouts[0])
                continue
            with self._box.cond:
                self._box.stats.reconnects += 1
                self._box.stats.gap_s += time.monotonic() - lost_at
            self._timeline.restart()
            _LOG.warning("%s: reconnected after %.1f s", name, time.monotonic() - lost_at)
            return opened
        with self._box.cond:
            self._box.stats.last_error = reason
        self._box.error = StreamLost(
            f"{name} lost ({reason}) and not regained after {self._reconnect} reconnect attempts "
            f"in {time.monotonic() - lost_at:.1f} s: check the source, or raise --reconnect")
        return None


def open_live(source: str, *, realtime: bool = False, open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
              read_timeout_s: float = DEFAULT_READ_TIMEOUT_S, rtsp_transport: str = "tcp",
              reconnect: int = DEFAULT_RECONNECT, backoff_s: tuple[float, float] = DEFAULT_BACKOFF_S,
              end_on_eof: bool | None = None) -> LiveSource:
    """Open ``source`` (:func:`~sam2trt.video.live_open.classify_source`) as a :class:`LiveSource`.

    The first connection is made here, in the caller's thread, so a source that
    cannot be opened raises at once: :class:`~sam2trt.errors.SourceUnavailable`
    (exit 6) for a URL that does not answer within ``open_timeout_s`` seconds,
    :class:`~sam2trt.errors.InputError` (exit 3) for a missing ``/dev/videoN``,
    a device that is not a camera, or stdin/a file that is not a video,
    :class:`~sam2trt.errors.UsageError` (exit 2) for bad options (a folder, a
    negative ``reconnect``, an RTSP transport other than tcp/udp).

    ``realtime``: pace a file by its timestamps (live sources pace themselves).
    ``read_timeout_s``: seconds without data before the connection counts as
    lost. ``reconnect``: attempts in a row (0: give up at once). ``backoff_s``:
    ``(first, cap)`` delays in seconds. ``end_on_eof``: whether the end of the
    stream ends iteration (``True``) or counts as a loss and reconnects; by
    default it ends files, stdin, cameras and HTTP(S), and reconnects RTSP,
    RTMP, UDP, RTP, SRT and TCP, whose servers have no natural end (a camera
    server killed mid-stream closes the connection like an end of stream).
    """
    spec = open_spec(source, read_timeout_s=read_timeout_s, rtsp_transport=rtsp_transport)
    if spec.kind == "folder":
        raise UsageError(f"{source} is a folder of frames: live mode and --realtime take a video file or a stream")
    if reconnect < 0:
        raise UsageError(f"--reconnect {reconnect}: give 0 or more attempts")
    first, cap = backoff_s
    if not 0 < first <= cap:
        raise UsageError(f"backoff {backoff_s}: give 0 < first <= cap seconds")
    if end_on_eof is None:
        end_on_eof = spec.scheme not in ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp")
    opened = open_input(source, spec, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s)
    return LiveSource(source, spec, opened, realtime=realtime, open_timeout_s=open_timeout_s,
                      read_timeout_s=read_timeout_s, reconnect=reconnect, backoff_s=(first, cap),
                      end_on_eof=end_on_eof)
