"""Sinks: the outputs of ``track`` behind one interface.

A sink has ``write(frame_idx, frame, result)``, ``close()`` and ``abort()``:

- ``frame``: the ``[H, W, 3]`` uint8 RGB frame, or ``None`` when a run cut short
  writes its remaining results and that frame could not be decoded again
  (the overlay video then ends before it; the other sinks do not use the frame);
- ``result``: the frame's :class:`~sam2trt.postprocess.FrameResult`, or ``None``
  for a frame before the first prompt (only the overlay video shows those);
- ``close()`` moves the output into place (nothing happens if nothing was
  written: an earlier run's output stays); ``abort()`` discards it.

Frames arrive in frame order and every sink keeps it. :class:`SinkRunner`
gives each sink its own thread and bounded queue, so the video encoder, the
PNG encoders and the JSON/COCO writers run in parallel.

The JSON-lines schema (one line per processed frame) is :func:`jsonl_record`;
the COCO one is in :mod:`sam2trt.video.coco`.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .coco import CocoWriter
from .writers import DEFAULT_CRF, DEFAULT_PRESET, JsonLinesWriter, MaskPngWriter, OverlayVideoWriter, overlay_masks

if TYPE_CHECKING:  # the type only; video/ does not depend on the post-processing room
    from sam2trt.postprocess import FrameResult


class Sink(Protocol):
    """What :class:`SinkRunner` drives (see the module docstring)."""

    def write(self, frame_idx: int, frame: np.ndarray, result: "FrameResult | None") -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def jsonl_record(result: "FrameResult") -> dict:
    """One JSON line of ``--json``: ``{"frame": i, "objects": [{"id", "box", "area", "score", "present"}]}``.

    ``box`` is ``[x, y, w, h]`` in pixels (or ``None``), ``area`` in pixels, both of
    the object's own mask; ``score`` the object-score logit (4 decimals);
    ``present`` whether it is > 0.
    """
    objs = []
    for oid, box, area, logit in zip(result.obj_ids, result.boxes, result.areas, result.object_score_logits):
        objs.append({"id": int(oid), "box": box, "area": int(area), "score": round(float(logit), 4),
                     "present": bool(logit > 0)})
    return {"frame": int(result.frame_idx), "objects": objs}


class VideoSink:
    """``--out``: the input frames with each object tinted and outlined (:func:`overlay_masks`), H.264.

    Built from a file path, or with :meth:`for_writer` over any video writer (stream outputs).

    ``width``/``height`` in pixels, ``fps`` frames/second, ``crf``/``preset`` as
    :class:`~sam2trt.video.writers.OverlayVideoWriter`.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, *,
                 crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET):
        self.writer = OverlayVideoWriter(path, width, height, fps, crf=crf, preset=preset)
        self._ended = False

    @classmethod
    def for_writer(cls, writer) -> "VideoSink":
        """The sink over an already open writer with ``write(rgb)``/``close()``/``abort()``: e.g. what
        :func:`sam2trt.video.stream_out.open_video_output` returns (a stream URL, a fragmented live MP4)."""
        sink = cls.__new__(cls)
        sink.writer, sink._ended = writer, False
        return sink

    def write(self, frame_idx: int, frame: np.ndarray | None, result: "FrameResult | None") -> None:
        if frame is None:  # no picture for this frame (see the module docstring): the video ends before it
            self._ended = True
        if self._ended:
            return
        self.writer.write(frame if result is None else overlay_masks(frame, result.label_map))

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class PngSink:
    """``--masks-dir``: one DAVIS-palette PNG per processed frame, encoded by a pool of ``workers`` threads.

    PNG encoding (zlib) releases the GIL, so the pool uses several cores. At most
    ``2 * workers`` frames are in flight; ``close()`` waits for them, then swaps
    the folder in (:class:`~sam2trt.video.writers.MaskPngWriter`). A failed
    encode is raised by the next ``write`` or by ``close``.
    """

    def __init__(self, directory: str | os.PathLike, workers: int = 2):
        self.writer = MaskPngWriter(directory)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="sam2trt-png")
        self._slots = threading.BoundedSemaphore(2 * max(1, workers))
        self._futures: list[concurrent.futures.Future] = []
        self.pool_cpu_s = 0.0  # CPU seconds spent encoding in the pool threads

    def _encode(self, frame_idx: int, label_map: np.ndarray) -> None:
        t0 = time.thread_time()
        self.writer.write(frame_idx, label_map)
        self.pool_cpu_s += time.thread_time() - t0  # += of a float under the GIL: no update is lost

    def _reap(self, wait: bool) -> None:
        keep = []
        for f in self._futures:
            if wait or f.done():
                f.result()
            else:
                keep.append(f)
        self._futures = keep

    def write(self, frame_idx: int, frame: np.ndarray, result: "FrameResult | None") -> None:
        if result is None:
            return
        self._reap(wait=False)
        self._slots.acquire()
        fut = self.pool.submit(self._encode, frame_idx, result.label_map)
        fut.add_done_callback(lambda _: self._slots.release())
        self._futures.append(fut)

    def close(self) -> None:
        try:
            self._reap(wait=True)
        except BaseException:
            self.abort()
            raise
        finally:
            self.pool.shutdown(wait=True)
        self.writer.close()

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.writer.abort()


class JsonLinesSink:
    """``--json``: :func:`jsonl_record` per processed frame (:class:`~sam2trt.video.writers.JsonLinesWriter`)."""

    def __init__(self, path: str | os.PathLike):
        self.writer = JsonLinesWriter(path)

    def write(self, frame_idx: int, frame: np.ndarray, result: "FrameResult | None") -> None:
        if result is not None:
            self.writer.write(jsonl_record(result))

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class CocoSink:
    """``--coco``: COCO results with RLE masks (:class:`~sam2trt.video.coco.CocoWriter`)."""

    def __init__(self, path: str | os.PathLike, video: str, width: int, height: int):
        self.writer = CocoWriter(path, video, width, height)

    def write(self, frame_idx: int, frame: np.ndarray, result: "FrameResult | None") -> None:
        if result is not None:
            self.writer.write(frame_idx, result.label_map, result.obj_ids, result.object_score_logits)

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


_END = object()


class SinkRunner:
    """Feed each sink from its own thread, in frame order, through a bounded queue of ``depth`` frames.

    ``put(frame_idx, frame, result)`` hands a frame to every sink still working;
    it blocks while a queue is full. A sink whose ``write`` raises stops
    receiving frames; its error is kept in ``errors`` (first one first) and
    ``on_error`` is called. ``finish()`` waits until every queue is drained;
    then the caller closes or aborts the sinks. ``timings[name]`` accumulates
    each sink's thread CPU seconds (``time.thread_time``), plus its pool's
    (``pool_cpu_s``) for sinks that have one.
    """

    def __init__(self, sinks: dict[str, Sink], depth: int = 4, on_error=None):
        self._clock = time.thread_time
        self.sinks = sinks
        self.errors: list[BaseException] = []
        self.timings = {name: 0.0 for name in sinks}
        self._on_error = on_error
        self._queues = {name: queue.Queue(depth) for name in sinks}
        self._failed: set[str] = set()
        self._threads = [threading.Thread(target=self._run, args=(name,), name=f"sam2trt-sink-{name}", daemon=True)
                         for name in sinks]
        for t in self._threads:
            t.start()

    def _run(self, name: str) -> None:
        q, sink = self._queues[name], self.sinks[name]
        while True:
            item = q.get()
            if item is _END:
                return
            if name in self._failed:
                continue
            t0 = self._clock()
            try:
                sink.write(*item)
            except BaseException as e:
                self._failed.add(name)
                self.errors.append(e)
                if self._on_error is not None:
                    self._on_error(e)
            self.timings[name] += self._clock() - t0

    def put(self, frame_idx: int, frame: np.ndarray, result: "FrameResult | None") -> None:
        for name, q in self._queues.items():
            if name not in self._failed:
                q.put((frame_idx, frame, result))

    def finish(self) -> None:
        """Let every sink thread drain its queue and stop (idempotent)."""
        for q in self._queues.values():
            q.put(_END)
        for t in self._threads:
            t.join()
        for name, sink in self.sinks.items():
            self.timings[name] += getattr(sink, "pool_cpu_s", 0.0)
            if hasattr(sink, "pool_cpu_s"):
                sink.pool_cpu_s = 0.0
        self._queues = {name: queue.Queue() for name in self.sinks}
        self._threads = []
