"""``sam2trt track`` as a library call: validate, stream, infer, write.

Three stages overlap: a reader thread decodes and preprocesses frames into a
bounded queue, the calling thread runs the modules, and a writer thread
upsamples masks and writes the overlay video, PNG masks and JSON lines. Queues
are bounded (``QUEUE_DEPTH`` frames), so memory does not grow with video length.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sam2trt.errors import InputError, Interrupted, RuntimeFailure, Sam2TrtError
from sam2trt.model_spec import ModelSpec
from sam2trt.tracker import FrameStepper, ObjectPrompt, track_frames
from sam2trt.tracker.processing import mask_box, masks_to_label_map, preprocess_frame, upsample_logits
from sam2trt.video.coco import CocoWriter
from sam2trt.video import (
    JsonLinesWriter, MaskPngWriter, OverlayVideoWriter, VideoInfo, open_frames, overlay_masks, probe,
)

QUEUE_DEPTH = 4
SHORT_VIDEO_SLACK = 1
"""A video that decodes to more than this many frames fewer than its container lists is reported as truncated."""
_END = object()


@dataclass
class TrackJob:
    """One video to track and where its outputs go.

    Attributes:
        video: video file or folder of JPEG/PNG frames.
        prompts: one per object (ids 1..255), boxes/points in video pixels.
        max_frames: process at most this many frames from the first prompt frame.
        out: overlay video path (``.mp4``), or ``None``.
        masks_dir: folder for one DAVIS-palette PNG per processed frame, or ``None``.
        json: JSON-lines path (one line per processed frame), or ``None``.
        coco: COCO-style results JSON (RLE masks, see :mod:`sam2trt.video.coco`), or ``None``.
        fill_hole_area: override of the model's hole filling (low-res pixels; 0 = off).
    """

    video: str
    prompts: list[ObjectPrompt]
    max_frames: int | None = None
    out: str | None = None
    masks_dir: str | None = None
    json: str | None = None
    fill_hole_area: int | None = None
    coco: str | None = None

    OUTPUTS = ("out", "masks_dir", "json", "coco")

    def outputs(self) -> dict[str, str]:
        """The outputs this job writes, ``{"out" | "masks_dir" | "json" | "coco": path}``."""
        return {k: getattr(self, k) for k in self.OUTPUTS if getattr(self, k)}


@dataclass
class TrackSummary:
    """What a finished (or interrupted) job did; ``as_dict()`` is the JSON summary.

    ``status``: "ok", "error", "interrupted" or "skipped"; ``frames``: frames
    processed (from ``first_frame``); ``seconds``: wall time of the job;
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

    def as_dict(self) -> dict:
        """JSON-ready dict: video, status, frames, first_frame, objects, seconds, fps, backend, outputs, error, exit_code."""
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        return {"video": self.video, "status": self.status, "frames": self.frames, "first_frame": self.first_frame,
                "objects": self.objects, "seconds": round(self.seconds, 3), "fps": round(fps, 3),
                "backend": self.backend, "outputs": self.outputs, "error": self.error,
                "exit_code": self.exit_code}


def validate_job(job: TrackJob, spec: ModelSpec) -> VideoInfo:
    """Check the video, prompts and outputs before anything is written.

    Raises:
        InputError: unreadable video, prompt outside the frame or past the end,
            bad object ids, output folder that is a file.
    """
    info = probe(job.video)
    if not job.prompts:
        raise InputError("no objects to track: give at least one --box or --point")
    for p in job.prompts:
        if not 1 <= p.obj_id <= 255:
            raise InputError(f"object id {p.obj_id} out of range: ids must be 1..255")
        if p.frame_idx < 0 or (info.num_frames is not None and p.frame_idx >= info.num_frames):
            raise InputError(
                f"prompt frame {p.frame_idx} is past the end of {job.video} ({info.num_frames} frames): "
                f"use --prompt-frame 0..{(info.num_frames or 1) - 1}"
            )
        p.check_inside((info.height, info.width))
    if job.max_frames is not None and job.max_frames < 1:
        raise InputError(f"--max-frames {job.max_frames} must be at least 1")
    if job.masks_dir and os.path.exists(job.masks_dir) and not os.path.isdir(job.masks_dir):
        raise InputError(f"--masks-dir {job.masks_dir} is a file: give a folder path")
    for path in (job.out, job.json, job.coco):
        if path and os.path.isdir(path):
            raise InputError(f"output {path} is a folder: give a file path")
    return info


def _reader(source, spec: ModelSpec, start: int, stop: int | None, q: queue.Queue, cancel: threading.Event,
            stats: dict):
    """Decode + preprocess into ``q``: items ``(idx, rgb, image | None)``, then ``_END`` or an exception.

    ``stats["eof"]`` = frames decoded when the source ended by itself (not stopped early).
    """
    try:
        n = 0
        for idx, rgb in source:
            if cancel.is_set() or (stop is not None and idx >= stop):
                break
            image = preprocess_frame(rgb, spec.image_size, spec.image_mean, spec.image_std) if idx >= start else None
            q.put((idx, rgb, image))
            n = idx + 1
        else:
            stats["eof"] = n
        q.put(_END)
    except BaseException as e:  # handed to the main thread
        q.put(e)


def _drain(q: queue.Queue):
    while True:
        item = q.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _writer(q: queue.Queue, writers: dict, info, errors: list):
    video, pngs, jsonl, coco = (writers.get(k) for k in TrackJob.OUTPUTS)
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            idx, rgb, out = item
            if out is None:  # before the first prompt frame: plain frame in the overlay video
                if video:
                    video.write(rgb)
                continue
            logits = upsample_logits(out.mask_logits, info.height, info.width)
            label_map = masks_to_label_map(logits, out.obj_ids)
            if video:
                video.write(overlay_masks(rgb, label_map))
            if pngs:
                pngs.write(idx, label_map)
            if jsonl:
                objs = []
                for k, oid in enumerate(out.obj_ids):
                    m = logits[k] > 0
                    objs.append({"id": oid, "box": mask_box(m), "area": int(m.sum()),
                                 "score": round(float(out.object_score_logits[k]), 4),
                                 "present": bool(out.object_score_logits[k] > 0)})
                jsonl.write({"frame": idx, "objects": objs})
            if coco:
                coco.write(idx, label_map, out.obj_ids, out.object_score_logits)
    except BaseException as e:
        errors.append(e)
        while q.get() is not _END:  # keep the producer unblocked
            pass


class _InterruptGuard:
    """SIGINT/SIGTERM handler: raises KeyboardInterrupt while ``armed``, else only records ``pending``.

    Disarmed while outputs are being closed, so a signal arriving then cannot
    leave them half-closed; the pending signal is reported afterwards.
    """

    def __init__(self):
        self.armed, self.pending = True, None

    def __call__(self, signum, frame):
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        self.pending = signum


_active_guard: _InterruptGuard | None = None


@contextlib.contextmanager
def interrupt_guard():
    """Route SIGINT and SIGTERM to an :class:`_InterruptGuard` (main thread only; nests).

    Yields the guard (a fresh one outside the main thread, where no handler
    can be installed).
    """
    global _active_guard
    if _active_guard is not None or threading.current_thread() is not threading.main_thread():
        yield _active_guard or _InterruptGuard()
        return
    guard = _active_guard = _InterruptGuard()
    old = {s: signal.signal(s, guard) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield guard
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _active_guard = None


def run_track(job: TrackJob, spec: ModelSpec, runners, *, progress: Callable[[int, int | None], None] | None = None,
              summary: TrackSummary | None = None) -> TrackSummary:
    """Track one video with already-open runners and write its outputs.

    Validation happens before any output exists. Outputs are written to
    temporary names and renamed when closed; on a fault mid-video (decode
    error, disk full, SIGINT/SIGTERM) they are closed up to the last complete
    frame, so they stay valid, and the error is raised.

    Args:
        job: the video, prompts and outputs.
        spec: the model.
        runners: activated :class:`~sam2trt.runtime.ModuleRunners`.
        progress: called as ``progress(frames_done, total_or_None)`` after each frame.
        summary: filled in place (also on error) and returned.

    Raises:
        InputError, RuntimeFailure, Interrupted.
    """
    summary = summary or TrackSummary(video=str(job.video))
    info = validate_job(job, spec)
    start = min(p.frame_idx for p in job.prompts)
    stop = start + job.max_frames if job.max_frames else None
    total = None
    if info.num_frames is not None:
        total = info.num_frames - start if stop is None else min(stop, info.num_frames) - start
    summary.first_frame = start
    summary.objects = [p.obj_id for p in job.prompts]
    summary.backend = runners.backend
    stepper = FrameStepper(spec, runners, fill_hole_area=job.fill_hole_area)

    writers: dict = {}
    t0 = time.perf_counter()
    cancel = threading.Event()
    in_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
    out_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
    writer_errors: list = []
    failure: BaseException | None = None
    threads: list[threading.Thread] = []
    stats: dict = {}
    def interrupted() -> Interrupted:
        return Interrupted(f"interrupted after {summary.frames} frames of {job.video}; outputs hold those frames")

    with interrupt_guard() as guard, open_frames(job.video) as source:
        rgbs: dict[int, np.ndarray] = {}

        def frames():
            for idx, rgb, image in _drain(in_q):
                if writer_errors:
                    raise writer_errors[0]
                if image is None:
                    out_q.put((idx, rgb, None))
                    continue
                rgbs[idx] = rgb
                yield idx, rgb, image

        try:
            if guard.pending is not None:
                raise KeyboardInterrupt
            if job.out:
                writers["out"] = OverlayVideoWriter(job.out, info.width, info.height, info.fps)
            if job.masks_dir:
                writers["masks_dir"] = MaskPngWriter(job.masks_dir)
            if job.json:
                writers["json"] = JsonLinesWriter(job.json)
            if job.coco:
                writers["coco"] = CocoWriter(job.coco, str(job.video), info.width, info.height)
            threads = [threading.Thread(target=_reader, args=(source, spec, start, stop, in_q, cancel, stats), daemon=True),
                       threading.Thread(target=_writer, args=(out_q, writers, info, writer_errors),
                                        daemon=True)]
            for t in threads:
                t.start()
            for out in track_frames(stepper, frames(), job.prompts, num_frames=info.num_frames, max_frames=job.max_frames):
                out_q.put((out.frame_idx, rgbs.pop(out.frame_idx), out))
                summary.frames += 1
                if progress:
                    progress(summary.frames, total)
        except KeyboardInterrupt:
            failure = interrupted()
        except Sam2TrtError as e:
            failure = e
        except MemoryError:
            failure = RuntimeFailure("out of memory: track fewer objects at once or use a smaller model")
        except Exception as e:  # a backend or library error: report it in one line
            failure = RuntimeFailure(f"{type(e).__name__} after {summary.frames} frames: {str(e).splitlines()[0][:200] if str(e) else ''}")
        finally:
            guard.armed = False  # from here on a signal is only recorded: outputs must be closed first
            cancel.set()
            if threads:
                out_q.put(_END)
                threads[1].join()
                with contextlib.suppress(queue.Empty):
                    while True:
                        in_q.get_nowait()
                threads[0].join(timeout=5)
        if failure is None and writer_errors:
            failure = writer_errors[0]
        read = stats.get("eof")
        if (failure is None and read is not None and info.num_frames and read < info.num_frames - SHORT_VIDEO_SLACK
                and not os.path.isdir(job.video)):
            failure = RuntimeFailure(
                f"{job.video} ended after frame {read - 1} but its container lists {info.num_frames} frames "
                f"(truncated or damaged file): re-encode it or track frames 0..{read - 1} only"
            )
        unreached = [p.frame_idx for p in job.prompts if p.frame_idx >= start + summary.frames]
        if failure is None and unreached:
            failure = InputError(
                f"prompt frame {max(unreached)} was never reached in {job.video} ({start + summary.frames} frames read): "
                "use an earlier --prompt-frame or a larger --max-frames"
            )
            for w in writers.values():
                w.abort()
            writers = {}
        for name, w in writers.items():
            try:
                w.close()
                if os.path.exists(getattr(job, name)):
                    summary.outputs[name] = str(getattr(job, name))
            except Sam2TrtError as e:
                failure = failure or e
            except Exception as e:  # e.g. an encoder error while flushing
                failure = failure or RuntimeFailure(f"cannot finish {getattr(job, name)} ({type(e).__name__}: {e})")
        if failure is None and guard.pending is not None:
            failure = interrupted()
        if not isinstance(failure, Interrupted):
            guard.armed = True
    summary.seconds = time.perf_counter() - t0
    if failure is not None:
        summary.status = "interrupted" if isinstance(failure, Interrupted) else "error"
        summary.error = str(failure)
        if not isinstance(failure, Sam2TrtError):
            failure = RuntimeFailure(f"{type(failure).__name__}: {failure}")
        summary.exit_code = failure.exit_code
        raise failure
    return summary
