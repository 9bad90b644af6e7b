"""``sam2trt track`` as a library call: source -> preprocess -> infer -> post-process -> sinks.

Each stage is a thread joined to the next by a bounded queue (``QUEUE_DEPTH``
frames), so memory does not grow with the video's length:

- **source + preprocess** (reader thread): decodes frames (PyAV with FFmpeg's
  own threads, or PIL for a frame folder) and preprocesses the tracked ones;
- **infer** (inference thread): the tracker core and the module runners;
- **post-process** (one thread): mask upsampling and the label map, once per
  frame, shared by every sink (:func:`sam2trt.postprocess.postprocess`);
- **sinks**: each output in its own thread (:class:`sam2trt.video.sinks.SinkRunner`),
  PNG encoding in a small pool.

The calling (main) thread only validates, starts the stages, waits, and closes
the outputs, so SIGINT/SIGTERM are handled promptly even during a long module
call: the runners are asked to cancel (ONNX Runtime stops at the next node),
and the outputs are closed up to the last complete frame.

With a backward pass (``direction`` ``both`` or ``backward``) the outputs are
still written in frame order: the reader's segments (:func:`_segments`) track
the forward frames the backward pass reads, then the backward pass (its
results kept on disk, :class:`_Spill`), then decode forward from frame 0,
writing the stored results and tracking the rest forward live. A run cut
short writes the results still waiting for their turn before closing the
outputs (:func:`_write_backlog`), so they hold every processed frame.

Outputs are written under exclusive temporary names and moved into place at
the end (:mod:`sam2trt.fileio`): all of them when the job succeeds; when it
fails after at least one tracked frame, the partial outputs, each marked by an
``.NAME.incomplete`` file; when it fails before, none (an earlier run's
outputs stay untouched).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from sam2trt.errors import InputError, Interrupted, RuntimeFailure, Sam2TrtError, as_runtime_failure
from sam2trt.fileio import remove, stage_dir, write_marker
from sam2trt.model_spec import MODULES, ModelSpec
from sam2trt.postprocess import FrameResult, postprocess
from sam2trt.signals import signal_guard
from sam2trt.tracker import FrameStepper, ObjectMemory, ObjectPrompt, encode_conditioning, needs_conditioning, track_frames
from sam2trt.tracker.memory_bank import memory_windows
from sam2trt.tracker.processing import preprocess_frame
from sam2trt.validation import JobPlan, validate_job
from sam2trt.video import open_frames
from sam2trt.video.sinks import CocoSink, JsonLinesSink, PngSink, SinkRunner, VideoSink
from sam2trt.video.writers import DEFAULT_CRF, DEFAULT_PRESET

QUEUE_DEPTH = 4
SHORT_VIDEO_SLACK = 1
"""A video that decodes to more than this many frames fewer than its container lists is reported as truncated."""
_END = object()


@dataclass
class TrackJob:
    """One video to track and where its outputs go.

    Attributes:
        video: video file or folder of JPEG/PNG frames.
        prompts: one per object and prompted frame (ids 1..255), boxes/points in video pixels.
        max_frames: process at most this many frames in each direction: forward the frames
            ``S .. S + max_frames - 1`` from the earliest prompt frame ``S``, backward the ones before
            ``S`` (``S - 1 .. S - max_frames``; ``backward`` alone also processes ``S``).
        out: overlay video path (``.mp4``), or ``None``.
        masks_dir: folder for one DAVIS-palette PNG per processed frame, or ``None``.
        json: JSON-lines path (one line per processed frame), or ``None``.
        coco: COCO-style results JSON (RLE masks, see :mod:`sam2trt.video.coco`), or ``None``.
        fill_hole_area: override of the model's hole filling (low-res pixels; 0 = off).
        crf, preset: libx264 settings of ``out`` (constant rate factor 0-51; x264 preset name).
        input_files: other inputs the outputs must not overwrite (mask PNGs, the manifest).
        direction: ``forward`` (the library default: from the earliest prompt frame on),
            ``backward``, or ``both`` (forward, then backward from the earliest prompt
            frame, as the official demo; the command line's default).
    """

    video: str
    prompts: list[ObjectPrompt]
    max_frames: int | None = None
    out: str | None = None
    masks_dir: str | None = None
    json: str | None = None
    fill_hole_area: int | None = None
    coco: str | None = None
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    input_files: tuple[str, ...] = ()
    direction: str = "forward"

    OUTPUTS = ("out", "masks_dir", "json", "coco")

    def outputs(self) -> dict[str, str]:
        """The outputs this job writes, ``{"out" | "masks_dir" | "json" | "coco": path}``."""
        return {k: getattr(self, k) for k in self.OUTPUTS if getattr(self, k)}


@dataclass
class TrackSummary:
    """What a finished (or interrupted) job did; ``as_dict()`` is the JSON summary.

    ``status``: "ok", "error", "interrupted" or "skipped"; ``frames``: frames
    processed (``first_frame`` is the lowest); ``direction``: the job's direction;
    ``seconds``: wall time of the job;
    ``outputs``: ``{kind: path}`` of the outputs that exist (closed, possibly
    partial after an error); ``error``: the one-line message or ``None``;
    ``exit_code``: the process exit code this job alone would give.
    """

    video: str
    frames: int = 0
    first_frame: int = 0
    objects: list[int] = field(default_factory=list)
    seconds: float = 0.0
    backend: str = ""
    status: str = "ok"
    error: str | None = None
    outputs: dict = field(default_factory=dict)
    exit_code: int = 0
    direction: str = "forward"

    def as_dict(self) -> dict:
        """JSON-ready dict: video, status, frames, first_frame, direction, objects, seconds, fps, backend, outputs,
        error, exit_code."""
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        return {"video": self.video, "status": self.status, "frames": self.frames, "first_frame": self.first_frame,
                "direction": self.direction, "objects": self.objects, "seconds": round(self.seconds, 3), "fps": round(fps, 3),
                "backend": self.backend, "outputs": self.outputs, "error": self.error,
                "exit_code": self.exit_code}




def marker_path(output: str | os.PathLike) -> Path:
    """The ``.NAME.incomplete`` marker next to an output file or folder."""
    p = Path(str(output).rstrip("/\\"))
    return p.with_name(f".{p.name}.incomplete")


class _Channel:
    """A bounded queue between two stages that a producer can give up on.

    ``put`` returns False (dropping the item) once the channel is closed or
    ``cancel`` is set; otherwise it blocks while the queue is full. ``close``
    (by the producer's owner) lets the consumer's iteration end after the
    items already queued. Iterating yields items; an exception item is raised.
    """

    def __init__(self, depth: int):
        self._q: queue.Queue = queue.Queue(depth)
        self._lock = threading.Lock()
        self._closed = False

    def put(self, item, cancel: threading.Event | None = None) -> bool:
        while True:
            with self._lock:
                if self._closed:
                    return False
                try:
                    self._q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            if cancel is not None and cancel.is_set():
                return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._q.put(_END)

    def drain(self) -> None:
        """Discard everything queued (so a blocked producer can finish)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _segments(source, plan: JobPlan, prompts, spec: ModelSpec) -> tuple[list, int]:
    """The reader's plan: ``([(tag, frames), ...], live_from)``.

    Tags: ``"C"`` conditioning frames computed ahead (prompts on several frames),
    ``"F"`` forward-tracked frames, ``"B"`` backward-tracked frames (decreasing
    order), then the final forward decode from frame 0 to ``plan.stop - 1``,
    whose frames are ``"O"`` (output only: results already computed, or none)
    before ``live_from`` and ``"F"`` from it. With ``both`` the forward pass
    first tracks the frames whose memories the backward pass reads (the first
    ``max(memory_windows)`` frames from the prompt frame), then the backward
    pass runs, then the forward pass goes on live while every frame is written
    in frame order.
    """
    segments = []
    cond = needs_conditioning(prompts)
    if cond:
        segments.append(("C", (f for i in cond for f in source.frames(i, i + 1))))
    start, stop, lo = plan.start, plan.stop, plan.back_start
    if plan.direction == "backward":
        segments.append(("B", source.frames(lo, start + 1, reverse=True)))
        return segments, start + 1
    if plan.direction == "both" and lo < start:
        head = start + max(memory_windows(spec))
        if stop is not None:
            head = min(head, stop)
        segments.append(("F", source.frames(start, head)))
        segments.append(("B", source.frames(lo, start, reverse=True)))
        return segments, head
    return segments, start


def _reader(source, spec: ModelSpec, plan: JobPlan, out: _Channel, cancel: threading.Event, stats: dict,
            host_preprocess: bool = True, prompts=()) -> None:
    """Decode + preprocess into ``out``: ``(idx, rgb, image | None, tag)`` items, then an exception or the end.

    Runs the segments of :func:`_segments`, then decodes the video forward
    from frame 0. ``image`` is ``None`` for frames that are not tracked (tag
    ``"O"``); for tracked frames it is the host-preprocessed image, or, without
    ``host_preprocess`` (the backend has a preprocessing module), the marker
    ``True``: the inference thread hands the raw frame to the backend.

    The final forward decode stops right after frame ``plan.stop - 1`` (never decoding past it).
    ``stats["eof"]`` = frames decoded when the source ended by itself;
    ``stats["decode"]``/``stats["preprocess"]``: this thread's CPU seconds in each.
    """
    clock = time.thread_time

    def prepared(idx, rgb, track):
        t1 = clock()
        if not track:
            image = None
        elif host_preprocess:
            image = preprocess_frame(rgb, spec.image_size, spec.image_mean, spec.image_std)
        else:
            image = True
        stats["preprocess"] = stats.get("preprocess", 0.0) + clock() - t1
        return image

    try:
        segments, live_from = _segments(source, plan, prompts, spec)
        for tag, frames in segments:
            frames = iter(frames)
            while not cancel.is_set():
                t0 = clock()
                try:
                    idx, rgb = next(frames)
                except StopIteration:
                    break
                stats["decode"] = stats.get("decode", 0.0) + clock() - t0
                if not out.put((idx, rgb, prepared(idx, rgb, True), tag), cancel):
                    return
        n, frames = 0, iter(source)
        while not cancel.is_set() and (plan.stop is None or n < plan.stop):
            t0 = clock()
            try:
                idx, rgb = next(frames)
            except StopIteration:
                stats["eof"] = n
                break
            stats["decode"] = stats.get("decode", 0.0) + clock() - t0
            live = idx >= live_from
            if not out.put((idx, rgb, prepared(idx, rgb, live), "F" if live else "O"), cancel):
                break
            n = idx + 1
    except BaseException as e:  # handed to the inference thread, after the frames before it
        out.put(e, cancel)
    finally:
        out.close()


class _Spill:
    """Backward results kept compactly until they are written in frame order.

    One file per frame in a private temporary folder next to the job's first
    output (:func:`sam2trt.fileio.stage_dir`): the label map as PNG bytes plus
    the per-object boxes, areas and score logits. Reading a frame deletes it.
    Memory does not grow with the number of frames.
    """

    def __init__(self, near: str | None):
        self.dir = stage_dir(near) if near else Path(tempfile.mkdtemp(prefix=".sam2trt-backward-"))
        self.frames: set[int] = set()

    def put(self, r: FrameResult) -> None:
        ok, png = cv2.imencode(".png", r.label_map, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise RuntimeFailure(f"cannot encode the label map of frame {r.frame_idx}")
        data = (r.frame_idx, list(r.obj_ids), png.tobytes(), list(r.boxes), list(r.areas),
                np.asarray(r.object_score_logits, np.float32))
        with open(self.dir / f"{r.frame_idx}.pkl", "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        self.frames.add(r.frame_idx)

    def pop(self, idx: int) -> FrameResult | None:
        if idx not in self.frames:
            return None
        path = self.dir / f"{idx}.pkl"
        with open(path, "rb") as f:
            frame_idx, ids, png, boxes, areas, scores = pickle.load(f)
        os.unlink(path)
        self.frames.discard(idx)
        label_map = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        return FrameResult(frame_idx, ids, label_map, boxes, areas, scores)

    def close(self) -> None:
        remove(self.dir)


class _Backlog:
    """Results tracked ahead of their turn in frame order, and how far the outputs got.

    ``head``: forward :class:`~sam2trt.tracker.FrameOutput` s tracked before the
    backward pass (at most ``max(memory_windows)`` frames), by frame; ``spill``:
    the backward pass's :class:`_Spill` (or ``None``); ``written``: one past the
    last frame handed to the sinks; ``broken``: the post-processing stage or the
    sinks' setup failed, so nothing more may be written. The inference thread
    fills it; after it stopped, :func:`_write_backlog` empties it.
    """

    def __init__(self):
        self.head: dict = {}
        self.spill: _Spill | None = None
        self.written = 0
        self.broken = False

    def pop(self, idx: int):
        """Frame ``idx``'s result (a ``FrameOutput`` or ``FrameResult``), removed; ``None`` if there is none."""
        result = self.head.pop(idx, None)
        if result is None and self.spill is not None:
            result = self.spill.pop(idx)
        return result

    def spill_frames(self) -> set[int]:
        """The backward results still on disk, by frame."""
        return self.spill.frames if self.spill is not None else set()

    def last(self) -> int | None:
        """The highest frame still waiting, or ``None``."""
        waiting = set(self.head) | self.spill_frames()
        return max(waiting) if waiting else None


def _write_backlog(backlog: _Backlog, source, sinks_run, info, guard, pictures: bool = True) -> int:
    """Write the results a run cut short has tracked but not yet written; returns how many frames that adds.

    With ``both`` or ``backward`` the frames are written in frame order only
    after the backward pass (its results wait in a :class:`_Spill`, the forward
    frames tracked before it in ``backlog.head``). When the run stops earlier
    (error, SIGINT/SIGTERM), this writes them from ``backlog.written`` on, in
    frame order, so that the partial outputs hold every processed frame: the
    video is decoded once more from there for the overlay, and untracked frames
    in between go to the overlay unmasked. If decoding fails here, the remaining
    results still go to the per-frame outputs and the overlay ends before that
    frame. A further signal stops the writing at the current frame. Runs in the
    calling thread once the inference and post-processing threads have stopped.

    Args:
        backlog: the run's :class:`_Backlog`; ``source``: the open
            :class:`~sam2trt.video.reader.FrameSource`; ``sinks_run``: the running
            :class:`~sam2trt.video.sinks.SinkRunner`; ``info``: the source's
            :class:`~sam2trt.video.VideoInfo`; ``guard``: the :class:`~sam2trt.signals.SignalGuard`;
            ``pictures``: whether a sink needs the frames (the overlay video); without one nothing is decoded.
    Raises:
        Whatever post-processing or the backward results' folder raises (``OSError``,
        :class:`RuntimeFailure`); decoding errors are not raised.
    """
    last = backlog.last()
    if backlog.broken or last is None or last < backlog.written:
        return 0
    signals = len(guard.received)
    frames = source.frames(backlog.written, last + 1) if pictures else None
    decoded: tuple | None = None
    added = 0
    try:
        for idx in range(backlog.written, last + 1):
            if len(guard.received) > signals:
                break
            if not pictures and idx not in backlog.head and idx not in backlog.spill_frames():
                continue
            rgb = None
            while frames is not None and (decoded is None or decoded[0] < idx):
                try:
                    decoded = next(frames)
                except (StopIteration, Sam2TrtError, OSError):
                    frames = None  # the overlay ends here; the per-frame outputs go on
            if decoded is not None and decoded[0] == idx and frames is not None:
                rgb = decoded[1]
            result = backlog.pop(idx)
            if result is not None and not isinstance(result, FrameResult):
                result = postprocess(result, info.height, info.width)
            sinks_run.put(idx, rgb, result)  # without a picture the overlay ends here
            backlog.written = idx + 1
            added += result is not None
    finally:
        if frames is not None:
            frames.close()
    return added


class _Items:
    """The reader's items with one item of look-ahead (:meth:`tag` peeks)."""

    def __init__(self, channel: _Channel):
        self._it = iter(channel)
        self._next = None
        self._done = False

    def tag(self) -> str | None:
        """The next item's tag, or ``None`` at the end."""
        if self._next is None and not self._done:
            try:
                self._next = next(self._it)
            except StopIteration:
                self._done = True
        return None if self._next is None else self._next[3]

    def take(self):
        self.tag()
        item, self._next = self._next, None
        return item


def _copy_banks(banks: dict) -> dict:
    """Memory banks for the backward pass: the forward pass's, copied (the arrays are shared, not copied),
    so that pruning one pass never touches the other's."""
    return {oid: ObjectMemory(cond=dict(b.cond),
                              non_cond={t: dataclasses.replace(m) for t, m in b.non_cond.items()})
            for oid, b in banks.items()}


def _open_sinks(job: TrackJob, plan: JobPlan) -> dict:
    """One sink per output of ``job`` (opened; on failure the ones already open are aborted)."""
    info, sinks = plan.info, {}
    try:
        if job.out:
            sinks["out"] = VideoSink(job.out, info.width, info.height, info.fps, crf=job.crf, preset=job.preset)
        if job.masks_dir:
            sinks["masks_dir"] = PngSink(job.masks_dir, workers=min(4, os.cpu_count() or 1))
        if job.json:
            sinks["json"] = JsonLinesSink(job.json)
        if job.coco:
            sinks["coco"] = CocoSink(job.coco, str(job.video), info.width, info.height)
    except BaseException:
        for s in sinks.values():
            s.abort()
        raise
    return sinks


def _cancel_runners(runners, flag: bool = True) -> None:
    for m in MODULES:
        cancel = getattr(getattr(runners, m, None), "cancel", None)
        if cancel is not None:
            with contextlib.suppress(Exception):
                cancel(flag)


CANCEL_GRACE_S = 10.0
"""How long (seconds) the main thread waits for a module call to stop after SIGINT/SIGTERM before it
closes the outputs anyway (ONNX Runtime stops at the next node; a call that cannot be cancelled is left behind)."""


def run_track(job: TrackJob, spec: ModelSpec, runners, *, progress: Callable[[int, int | None], None] | None = None,
              summary: TrackSummary | None = None, stats: dict | None = None,
              plan: JobPlan | None = None) -> TrackSummary:
    """Track one video with already-open runners and write its outputs.

    Validation (:func:`sam2trt.validation.validate_job`) happens before any
    output exists. Outputs are written to exclusive temporary names and moved
    into place at the end: all of them on success; on a fault mid-video (decode
    error, disk full, SIGINT/SIGTERM) those holding at least one tracked frame,
    closed up to the last complete frame and marked ``.NAME.incomplete``; on a
    fault before the first tracked frame, none (earlier outputs stay untouched).

    Args:
        job: the video, prompts and outputs.
        spec: the model.
        runners: activated :class:`~sam2trt.runtime.ModuleRunners`.
        progress: called from the calling thread as ``progress(frames_done, total_or_None)``.
        summary: filled in place (also on error) and returned.
        stats: if given, filled with CPU seconds per stage (``decode``, ``preprocess``,
            ``infer`` = the inference thread's serial wall time spent on frames,
            ``postprocess``, ``sink:<name>``) and ``frames``.
        plan: the job's :class:`~sam2trt.validation.JobPlan` when the caller has just
            validated it (else validation runs here).

    Raises:
        UsageError, InputError, RuntimeFailure, Interrupted.
    """
    summary = summary or TrackSummary(video=str(job.video))
    stats = {} if stats is None else stats
    plan = plan or validate_job(job, spec)
    check_size = getattr(getattr(runners, "preprocess", None), "check_frame_size", None)
    if check_size is not None:  # a device preprocessing engine has a frame-size profile
        check_size(plan.info.height, plan.info.width)
    summary.first_frame = plan.start if plan.back_start is None else plan.back_start
    summary.direction = plan.direction
    summary.objects = list(dict.fromkeys(p.obj_id for p in job.prompts))
    summary.backend = runners.backend
    stepper = FrameStepper(spec, runners, fill_hole_area=job.fill_hole_area)
    t_start = time.perf_counter()
    failures: list[BaseException] = []
    cancel = threading.Event()
    frames_ch, post_ch = _Channel(QUEUE_DEPTH), _Channel(QUEUE_DEPTH)
    info = plan.info

    def fail(e: BaseException) -> None:
        failures.append(e)
        cancel.set()

    def infer() -> None:
        clock = time.perf_counter
        items = _Items(frames_ch)
        t_in = [0.0]
        rgbs: dict = {}

        def feed(tag: str, keep_rgb: bool = False, stop_at_change: bool = True):
            while True:
                if stop_at_change and items.tag() != tag:
                    return
                item = items.take()
                if item is None:
                    return
                idx, rgb, image, _ = item
                if keep_rgb:
                    rgbs[idx] = rgb
                t_in[0] = clock()
                yield (idx, rgb) if image is True else (idx, rgb, image)

        def emit(idx, rgb, result) -> bool:
            if cancel.is_set() or not post_ch.put((idx, rgb, result), cancel):
                return False
            if result is not None:
                summary.frames += 1
            return True

        def tracked():
            stats["infer"] = stats.get("infer", 0.0) + clock() - t_in[0]
            stats["processed"] = stats.get("processed", 0) + 1

        fwd = None
        try:
            cond = {}
            if items.tag() == "C":
                cond = encode_conditioning(stepper, feed("C"), job.prompts, only=needs_conditioning(job.prompts))
            banks: dict = {}
            if plan.direction != "backward":
                fwd = track_frames(stepper, feed("F", keep_rgb=True, stop_at_change=False), job.prompts,
                                   num_frames=info.num_frames, banks=banks, conditioning=cond)
            # with both, the forward frames tracked before the backward pass wait in `head` for their turn
            live = not (plan.direction == "both" and plan.back_start < plan.start)
            while not cancel.is_set():
                tag = items.tag()
                if tag is None:
                    break
                if tag == "F":
                    out = next(fwd)
                    tracked()
                    stats["reached"] = out.frame_idx + 1
                    if live:
                        if not emit(out.frame_idx, rgbs.pop(out.frame_idx), out):
                            return
                    else:
                        rgbs.pop(out.frame_idx, None)
                        backlog.head[out.frame_idx] = out
                elif tag == "B":
                    spill = backlog.spill = _Spill(next(iter(job.outputs().values()), None))
                    for out in track_frames(stepper, feed("B"), job.prompts, num_frames=info.num_frames,
                                            banks=_copy_banks(banks), reverse=True, conditioning=cond):
                        tracked()
                        spill.put(postprocess(out, info.height, info.width))
                        if cancel.is_set():
                            return
                elif tag == "O":
                    live = True
                    idx, rgb, _, _ = items.take()
                    result = backlog.pop(idx)
                    if not emit(idx, rgb, result):
                        return
                else:
                    items.take()
        except BaseException as e:
            fail(e)
        finally:
            cancel.set()  # stops the reader
            frames_ch.drain()
            if fwd is not None:
                fwd.close()

    def post() -> None:
        clock = time.thread_time
        try:
            for idx, rgb, out in post_ch:
                t0 = clock()
                result = out if out is None or isinstance(out, FrameResult) else postprocess(out, info.height,
                                                                                             info.width)
                stats["postprocess"] = stats.get("postprocess", 0.0) + clock() - t0
                sinks_run.put(idx, rgb, result)
                backlog.written = idx + 1
        except BaseException as e:
            backlog.broken = True
            fail(e)
            post_ch.drain()

    backlog = _Backlog()
    sinks: dict = {}
    sinks_run = None
    threads: list[threading.Thread] = []
    interrupted = False
    with signal_guard() as guard, open_frames(job.video) as source:
        with guard.on_cancel(lambda: (cancel.set(), _cancel_runners(runners))):
            try:
                if guard.pending:
                    raise KeyboardInterrupt
                sinks = _open_sinks(job, plan)
                sinks_run = SinkRunner(sinks, QUEUE_DEPTH, on_error=fail)
                host_pre = getattr(runners, "preprocess", None) is None
                threads = [threading.Thread(target=_reader, args=(source, spec, plan, frames_ch, cancel, stats,
                                                                  host_pre, job.prompts),
                                            name="sam2trt-reader", daemon=True),
                           threading.Thread(target=infer, name="sam2trt-infer", daemon=True),
                           threading.Thread(target=post, name="sam2trt-post", daemon=True)]
                for t in reversed(threads):  # consumers first: a started producer always has its consumer
                    t.start()
                shown = -1
                while threads[1].is_alive():
                    threads[1].join(0.1)
                    if progress and stats.get("processed", 0) != shown:
                        shown = stats.get("processed", 0)
                        progress(shown, plan.total)
            except KeyboardInterrupt:
                interrupted = True
            except BaseException:
                backlog.broken = True
                for s in sinks.values():
                    s.abort()
                raise
            finally:
                with guard.disarmed():
                    cancel.set()
                    if interrupted or guard.pending:
                        _cancel_runners(runners)
                    started = [t.ident is not None for t in threads]  # a signal may come between starts
                    if any(started):
                        if started[1]:
                            threads[1].join(CANCEL_GRACE_S)
                        post_ch.close()
                        if started[2]:
                            threads[2].join()
                        frames_ch.drain()
                        if started[0]:
                            threads[0].join(5)
                    if sinks_run is not None and started and started[1] and not threads[1].is_alive():
                        try:  # a run cut short: what was tracked but still waits for its turn in frame order
                            summary.frames += _write_backlog(backlog, source, sinks_run, info, guard,
                                                             pictures="out" in sinks)
                        except Exception as e:  # e.g. disk full while writing the label maps back
                            failures.append(e)
                    if sinks_run is not None:
                        sinks_run.finish()
                    if backlog.spill is not None:  # the backward results' folder
                        backlog.spill.close()
                    if guard.pending:
                        _cancel_runners(runners, False)
        with guard.disarmed():
            failure, keep = _job_failure(job, plan, summary, failures, stats, interrupted or guard.pending)
            failure = _finish_outputs(job, sinks, summary, failure, keep)
    for name, seconds in (sinks_run.timings if sinks_run else {}).items():
        stats[f"sink:{name}"] = seconds
    stats["frames"] = summary.frames
    summary.seconds = time.perf_counter() - t_start
    if failure is not None:
        summary.status = "interrupted" if isinstance(failure, Interrupted) else "error"
        summary.error = str(failure)
        summary.exit_code = failure.exit_code
        raise failure
    return summary


def _job_failure(job: TrackJob, plan: JobPlan, summary: TrackSummary, failures: list, stats: dict,
                 interrupted: bool) -> tuple[Sam2TrtError | None, bool]:
    """``(error or None, keep)``: the job's one error mapped to a :class:`Sam2TrtError`, and whether
    its outputs are worth moving into place (at least one tracked frame, and every prompt reached)."""
    keep = summary.frames > 0
    if interrupted:
        return Interrupted(f"interrupted after {summary.frames} frames of {job.video}; outputs hold those frames"), keep
    if failures:
        return as_runtime_failure(failures[0], f"after {summary.frames} frames"), keep
    read = stats.get("eof")
    n = plan.info.num_frames
    if read is not None and n and read < n - SHORT_VIDEO_SLACK and not os.path.isdir(job.video):
        return RuntimeFailure(
            f"{job.video} ended after frame {read - 1} but its container lists {n} frames "
            f"(truncated or damaged file): re-encode it or track frames 0..{read - 1} only"
        ), keep
    reached = stats.get("reached", plan.start)
    unreached = [] if plan.direction == "backward" else [p.frame_idx for p in job.prompts if p.frame_idx >= reached]
    if unreached:
        return InputError(
            f"prompt frame {max(unreached)} was never reached in {job.video} ({reached} "
            "frames read): use an earlier --prompt-frame"
        ), False
    return None, keep


def _finish_outputs(job: TrackJob, sinks: dict, summary: TrackSummary, failure: Sam2TrtError | None,
                    keep: bool) -> Sam2TrtError | None:
    """Move outputs into place (``keep``), or discard them, as the module docstring says; returns the first failure."""
    if not keep:
        for s in sinks.values():
            s.abort()
        return failure
    if failure is not None:
        for name in sinks:
            write_marker(marker_path(getattr(job, name)))
    for name, sink in sinks.items():
        try:
            sink.close()
            if os.path.exists(getattr(job, name)):
                summary.outputs[name] = str(getattr(job, name))
        except Exception as e:  # e.g. an encoder error while flushing, or disk full
            err = as_runtime_failure(e, f"while finishing {getattr(job, name)}")
            if failure is None:
                failure = err
                for other in sinks:
                    write_marker(marker_path(getattr(job, other)))
    if failure is None:
        for name in sinks:
            remove(marker_path(getattr(job, name)))
    return failure
