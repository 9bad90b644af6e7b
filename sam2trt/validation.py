"""Everything about a track job that can be checked before the model loads, in one place.

:func:`validate_job` runs once per job, before any output exists. It checks the
source (it decodes the first frame), the prompts (ids, frames, inside the
frame, reachable within ``max_frames``) and the outputs:

- **Inputs are sacred.** No output may be, or resolve to (symlink, hard link),
  an input file: the video, a mask prompt PNG, a manifest or a model file. No
  output file may land directly in an input frame folder, and ``--masks-dir``
  may not be one (a subfolder of an input folder is fine: the reader does not
  look into subfolders). No input may lie inside ``--masks-dir``, which is
  replaced as a whole.
- **Earlier results are sacred.** ``--masks-dir`` is replaced as a whole, so an
  existing one may hold nothing but frame PNGs (``00042.png``) from an earlier
  run; no other output may lie inside it.
- **Outputs can be written.** Each output's nearest existing ancestor is a
  folder in which a file can be created (checked by creating and removing an
  exclusive temporary file); ``--out`` has a container with a working encoder.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sam2trt.errors import InputError, UsageError
from sam2trt.video import VideoInfo, probe
from sam2trt.video.writers import VIDEO_FORMATS, check_video_encoder

_FRAME_PNG = re.compile(r"[0-9]+\.png")


@dataclass(frozen=True)
class JobPlan:
    """What validation learned: the source's :class:`~sam2trt.video.VideoInfo`, and the frames to process.

    ``start``: the earliest prompt frame, where tracking starts in each
    direction. ``stop``: one past the last frame forward (``start + 1`` for
    ``backward``), or ``None`` for the end of the video. ``back_start``: the
    lowest frame tracked backward (``start`` when there is no backward pass).
    ``total``: number of frames to process when known, else ``None``.
    ``direction``: ``forward``, ``backward`` or ``both``.
    """

    info: VideoInfo
    start: int
    stop: int | None
    total: int | None
    direction: str = "forward"
    back_start: int | None = None


DIRECTIONS = ("forward", "backward", "both")


def _exists(p: Path) -> bool:
    return os.path.lexists(p)


def _same(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are the same file or folder (symlinks and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, folder: Path) -> bool:
    """True when ``child`` resolves to ``folder`` itself or lies below it."""
    try:
        c, f = Path(os.path.realpath(child)), Path(os.path.realpath(folder))
    except OSError:
        return False
    return c == f or f in c.parents


def _check_writable(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path``'s parent is a folder where a file can be created."""
    parent = path.parent
    while not _exists(parent):
        if parent.parent == parent:
            break
        parent = parent.parent
    if _exists(parent) and not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder: choose another output path")
    try:
        fd, probe_name = tempfile.mkstemp(prefix=".sam2trt-write-test-", dir=parent)
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot write in {parent} ({e.strerror or e}): "
                         "choose a writable location") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe_name)


def check_outputs(outputs: dict[str, str], inputs: list[str], info: VideoInfo) -> None:
    """Check a job's outputs against its inputs and the file system (see the module docstring).

    Args:
        outputs: ``{"out" | "masks_dir" | "json" | "coco": path}``.
        inputs: every input path (video file or frame folder, mask PNGs, manifest, model files).
        info: the source's size (an odd side needs the MPEG-4 encoder).
    Raises:
        UsageError: an output that is an input or inside an input frame folder, an
            unsupported ``--out`` extension, outputs nested in ``--masks-dir``.
        InputError: an output that cannot be created or written, or a
            ``--masks-dir`` holding other files.
    """
    flags = {"out": "--out", "masks_dir": "--masks-dir", "json": "--json", "coco": "--coco"}
    in_paths = [Path(p) for p in inputs if p]
    frame_folders = [p for p in in_paths if p.is_dir()]
    for kind, raw in outputs.items():
        flag, path = flags[kind], Path(raw)
        for src in in_paths:
            if _exists(path) and _same(path, src) and not (kind == "masks_dir" and src.is_dir()):
                raise UsageError(f"{flag} {raw} is an input ({src}): write the output somewhere else")
        for folder in frame_folders:
            if kind == "masks_dir" and _inside(folder, path):
                raise UsageError(f"{flag} {raw} would replace the input frame folder {folder}: "
                                 "choose a new folder (a subfolder of the input is fine)")
            if kind != "masks_dir" and _same(path.parent, folder):
                raise UsageError(f"{flag} {raw} would land among the input frames of {folder}: "
                                 "write it elsewhere (a subfolder of the input is fine)")
        if kind == "masks_dir":
            for src in in_paths:
                if _inside(src, path):
                    raise UsageError(f"{flag} {raw} holds the input {src}, and the folder is replaced as a whole: "
                                     "choose a new folder")
            for other_kind, other in outputs.items():
                if other_kind != kind and _inside(Path(other).parent, path):
                    raise UsageError(f"{flags[other_kind]} {other} is inside {flag} {raw}, which is replaced as a "
                                     "whole: put it elsewhere")
            if _exists(path):
                if not path.is_dir():
                    raise InputError(f"{flag} {raw} is a file: give a folder path")
                strangers = sorted(p.name for p in path.iterdir() if not (_FRAME_PNG.fullmatch(p.name) and p.is_file()))
                if strangers:
                    raise InputError(f"{flag} {raw} holds files other than frame PNGs ({strangers[0]}"
                                     f"{', ...' if len(strangers) > 1 else ''}) and is replaced as a whole: "
                                     "give a new or empty folder, or one written by sam2trt")
            _check_writable(path, flag)
            continue
        if _exists(path) and path.is_dir():
            raise InputError(f"output {raw} is a folder: give a file path")
        if kind == "out":
            if path.suffix.lower() not in VIDEO_FORMATS:
                raise UsageError(f"--out {raw}: unsupported video extension {path.suffix or '(none)'!r}: "
                                 f"use one of {', '.join(VIDEO_FORMATS)}")
            check_video_encoder(raw, info.width, info.height)
        _check_writable(path, flag)


def validate_job(job, spec=None) -> JobPlan:
    """Check a :class:`~sam2trt.pipeline.TrackJob` before anything is written; return its :class:`JobPlan`.

    Args:
        job: the job (video, prompts, ``max_frames``, outputs, ``input_files``).
        spec: the model (its files count as inputs), or ``None``.
    Raises:
        UsageError: ``max_frames`` < 1, a prompt frame not reachable within
            ``max_frames``, an output that is an input (see :func:`check_outputs`).
        InputError: unreadable video, prompt outside the frame or past the end,
            bad object ids, unwritable outputs.
    """
    if job.max_frames is not None and job.max_frames < 1:
        raise UsageError(f"--max-frames {job.max_frames} must be at least 1")
    info = probe(job.video)
    if not job.prompts:
        raise InputError("no objects to track: give at least one --box or --point")
    for p in job.prompts:
        if not 1 <= p.obj_id <= 255:
            raise InputError(f"object id {p.obj_id} out of range: ids must be 1..255")
        if p.frame_idx < 0:
            raise UsageError(f"prompt frame {p.frame_idx} is negative: frames count from 0")
        if info.num_frames is not None and p.frame_idx >= info.num_frames:
            raise InputError(
                f"prompt frame {p.frame_idx} is past the end of {job.video} ({info.num_frames} frames): "
                f"use --prompt-frame 0..{info.num_frames - 1}"
            )
        p.check_inside((info.height, info.width))
    direction = getattr(job, "direction", "forward")
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    start = min(p.frame_idx for p in job.prompts)
    stop = start + job.max_frames if job.max_frames else None
    back_start = start if direction == "forward" else max(0, start - job.max_frames) if job.max_frames else 0
    if direction == "backward":
        stop = start + 1
        late = [p for p in job.prompts if p.frame_idx > start
                and min(q.frame_idx for q in job.prompts if q.obj_id == p.obj_id) > start]
        if late:
            raise UsageError(f"object {late[0].obj_id} is first prompted on frame {late[0].frame_idx}, after frame "
                             f"{start} where --direction backward starts: prompt it on frame {start} or earlier, "
                             "or use --direction both")
    late = [p for p in job.prompts if stop is not None and p.frame_idx >= stop and direction != "backward"]
    if late:
        worst = max(p.frame_idx for p in late)
        raise UsageError(f"object {late[0].obj_id}'s prompt on frame {worst} is not reached with --max-frames "
                         f"{job.max_frames} from frame {start}: use --max-frames {worst - start + 1} or more")
    inputs = [str(job.video), *getattr(job, "input_files", ())]
    if spec is not None:
        inputs += [str(p) for p in sorted(Path(spec.root).iterdir()) if p.is_file()]
    check_outputs(job.outputs(), inputs, info)
    total = None
    if info.num_frames is not None:
        total = info.num_frames - start if stop is None else min(stop, info.num_frames) - start
        total += start - back_start
    return JobPlan(info=info, start=start, stop=stop, total=total, direction=direction, back_start=back_start)
