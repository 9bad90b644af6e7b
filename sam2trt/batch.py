"""Many ``track`` jobs with one loaded model: manifests, output patterns, per-video results.

A job comes from a VIDEO argument (prompts and output patterns from the
command line) or from one row of a manifest (CSV with a header, or JSON
lines); see the README's "Batch jobs" section. Manifest columns:

- ``input`` (required): video file or frame folder.
- ``box``, ``point``, ``mask``: prompts in the ``[ID][@FRAME]:VALUE`` syntax
  of ``--box``/``--point``/``--mask``; several separated by ``;`` in CSV, a
  string or a list of strings in JSON lines. A row without any prompt uses
  the command line's.
- ``prompt_frame``, ``max_frames``: integers; empty = the command line's.
- ``direction``: ``forward``, ``backward`` or ``both``; empty = the command line's.
- ``out``, ``masks_dir``, ``json``, ``coco``: output paths (``{stem}``,
  ``{name}``, ``{index}`` substituted); empty = the command line's pattern.

Relative paths in a manifest (inputs, outputs, mask PNGs) are resolved
against the manifest's folder. Each output is written under a temporary
name and moved into place at the end of the job; when a failed or interrupted
job leaves partial outputs, a marker ``.NAME.incomplete`` sits next to each of
them until a later run of the job succeeds, so ``--skip-existing`` re-runs a
video whose outputs are partial.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from sam2trt.errors import Interrupted, Sam2TrtError, UsageError
from sam2trt.pipeline import TrackJob, TrackSummary, marker_path, run_track
from sam2trt.signals import signal_guard
from sam2trt.tracker.prompts import build_prompts, load_mask_png
from sam2trt.validation import DIRECTIONS, validate_job

COLUMNS = ("input", "box", "point", "mask", "prompt_frame", "max_frames", "out", "masks_dir", "json", "coco",
           "direction")
OUTPUTS = TrackJob.OUTPUTS


@dataclass
class JobSpec:
    """One job before its prompts are built.

    ``boxes``/``points``/``masks``: prompt strings (``[ID][@FRAME]:VALUE``);
    ``outputs``: ``{"out" | "masks_dir" | "json" | "coco": path}`` (patterns
    already substituted); ``base``: folder that relative mask paths are
    resolved against (``None``: the working directory); ``where``: where the job
    was given (for messages), e.g. ``"manifest.csv line 3"``.
    """

    video: str
    boxes: list[str] = field(default_factory=list)
    points: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    prompt_frame: int = 0
    max_frames: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    base: str | None = None
    where: str = ""
    manifest: str | None = None
    direction: str = "both"

    def to_track_job(self, fill_hole_area: int | None = None, **options) -> TrackJob:
        """Build the prompts (loading mask PNGs) into a :class:`TrackJob`.

        ``options``: further :class:`TrackJob` fields (``crf``, ``preset``).
        Raises:
            UsageError: malformed prompt text. InputError: unreadable mask PNG.
        """
        files: list[str] = [self.manifest] if self.manifest else []

        def load(path: str):
            full = str(Path(self.base) / path) if self.base else path
            files.append(full)
            return load_mask_png(full)

        prompts = build_prompts(self.boxes, self.points, self.masks, self.prompt_frame, load_mask=load)
        return TrackJob(video=self.video, prompts=prompts, max_frames=self.max_frames, direction=self.direction,
                        fill_hole_area=fill_hole_area, input_files=tuple(files), **self.outputs, **options)


PATTERN_FIELDS = ("stem", "name", "index")


def expand(pattern: str | None, video: str, index: int) -> str | None:
    """Substitute ``{stem}`` (name without extension), ``{name}`` and ``{index}`` (0-based job number).

    Format specs work (``{index:03d}``); nothing else does (no attribute or item
    access, no conversions). Names come from the input's resolved path, so an
    input like ``../a/sub/..`` gives ``a``, never ``..``.
    Raises :class:`UsageError` for an unknown field, stray braces, or an input
    whose name cannot be a file name.
    """
    if not pattern:
        return None
    try:
        fields = [(f, conv) for _, f, _, conv in string.Formatter().parse(pattern) if f is not None]
        for f, conv in fields:
            if f not in PATTERN_FIELDS or conv:
                raise KeyError(f)
    except (KeyError, ValueError) as e:
        raise UsageError(f"bad output pattern {pattern!r} ({type(e).__name__}: {e}): "
                         "use {stem}, {name} or {index}, and {{ }} for literal braces") from None
    p = Path(os.path.realpath(video))
    name = p.name
    if {"stem", "name"} & {f for f, _ in fields} and name in ("", ".", ".."):
        raise UsageError(f"input {video} has no name to put in {pattern!r}: name the input folder or file")
    try:
        return pattern.format(stem=p.stem if p.suffix and not p.is_dir() else name, name=name, index=index)
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(f"bad output pattern {pattern!r} ({type(e).__name__}: {e}): "
                         "use {stem}, {name} or {index}, and {{ }} for literal braces") from None


def _split(value, sep: str = ";") -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(sep) if v.strip()]


def _int(value, column: str, where: str) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise UsageError(f"{where}: {column} {value!r} is not an integer") from None


def read_manifest(path: str | os.PathLike) -> list[tuple[str, dict]]:
    """Read a manifest into ``[(where, row)]``: CSV with a header, or JSON lines (``.jsonl``/``.ndjson``/``.json``,
    or any file whose first non-blank character is ``{``).

    Blank lines and JSON lines starting with ``#`` are skipped. Raises
    :class:`UsageError` for an unreadable file, malformed JSON, an unknown
    column, a row without ``input``, or no rows at all.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read manifest {path} ({e}): give a CSV or JSON-lines file") from None
    rows: list[tuple[str, dict]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path.name} line {n} is not JSON ({e.msg}): one JSON object per line") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path.name} line {n} is not a JSON object: one object per line")
            rows.append((f"{path.name} line {n}", row))
    else:
        reader = csv.DictReader(text.splitlines())
        for row in reader:
            if None in row:
                raise UsageError(f"{path.name} line {reader.line_num} has more cells than the header: "
                                 "quote values with commas, e.g. \"250,215,36,97\"")
            if any((v or "").strip() for v in row.values()):
                rows.append((f"{path.name} line {reader.line_num}", {k.strip(): v for k, v in row.items() if k}))
    for where, row in rows:
        unknown = sorted(set(row) - set(COLUMNS))
        if unknown:
            raise UsageError(f"{where}: unknown column(s) {', '.join(unknown)}: use {', '.join(COLUMNS)}")
        if not str(row.get("input") or "").strip():
            raise UsageError(f"{where}: no input: every row needs an input video or frame folder")
    if not rows:
        raise UsageError(f"manifest {path} has no jobs: add rows with at least an input column")
    return rows


def check_numbers(prompt_frame: int | None, max_frames: int | None, where: str = "") -> None:
    """Raise :class:`UsageError` for a negative prompt frame or ``max_frames`` < 1 (``where``: for messages)."""
    at = f" ({where})" if where else ""
    if prompt_frame is not None and prompt_frame < 0:
        raise UsageError(f"--prompt-frame {prompt_frame}{at} is negative: frames count from 0")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"--max-frames {max_frames}{at} must be at least 1")


def plan_jobs(videos: Iterable[str], manifest: str | os.PathLike | None, *, boxes: list[str], points: list[str],
              masks: list[str], prompt_frame: int, max_frames: int | None,
              patterns: dict[str, str | None], direction: str = "both") -> list[JobSpec]:
    """All jobs in order: the manifest's rows, then the VIDEO arguments.

    Command-line prompts, ``prompt_frame``, ``max_frames`` and output patterns
    (``patterns``: ``{"out" | "masks_dir" | "json" | "coco": pattern | None}``)
    and ``direction`` are the defaults of every job. Prompt strings are checked here (masks are
    not loaded yet).

    Raises:
        UsageError: malformed manifest or prompts, a job without objects, or two
            jobs writing the same output (e.g. several videos and an output
            path without ``{stem}``/``{name}``/``{index}``).
    """
    specs: list[JobSpec] = []
    if manifest is not None:
        base = Path(manifest).parent

        def resolve(p: str) -> str:
            return str(p) if os.path.isabs(p) else str(base / p)

        for where, row in read_manifest(manifest):
            video = resolve(str(row["input"]).strip())
            index = len(specs)
            outs = {}
            for k in OUTPUTS:
                own = str(row.get(k) or "").strip()
                value = resolve(expand(own, video, index)) if own else expand(patterns.get(k), video, index)
                if value:
                    outs[k] = value
            rb, rp, rm = _split(row.get("box")), _split(row.get("point")), _split(row.get("mask"))
            own_prompts = bool(rb or rp or rm)
            pf, mf = _int(row.get("prompt_frame"), "prompt_frame", where), _int(row.get("max_frames"), "max_frames", where)
            if not own_prompts:
                rb, rp, rm = boxes, points, masks
            specs.append(JobSpec(video, list(rb), list(rp), list(rm), prompt_frame=prompt_frame if pf is None else pf,
                                 max_frames=max_frames if mf is None else mf, outputs=outs,
                                 base=str(base) if own_prompts else None, where=where, manifest=str(manifest),
                                 direction=str(row.get("direction") or "").strip() or direction))
    for n, video in enumerate(videos, 1):
        index = len(specs)
        outs = {k: expand(patterns.get(k), str(video), index) for k in OUTPUTS if patterns.get(k)}
        specs.append(JobSpec(str(video), list(boxes), list(points), list(masks), prompt_frame, max_frames, outs,
                             where=f"VIDEO argument {n}", direction=direction))
    if not specs:
        raise UsageError("no video: give VIDEO arguments or --manifest PATH")
    for s in specs:
        check_numbers(s.prompt_frame, s.max_frames, s.where if manifest else "")
        if s.direction not in DIRECTIONS:
            what = f"direction {s.direction!r} in {s.where}" if manifest and s.where.startswith(Path(manifest).name) \
                else f"--direction {s.direction!r}"
            raise UsageError(f"{what} is not one of {', '.join(DIRECTIONS)}: use both (forward, then backward from "
                             "the earliest prompt frame), forward or backward")
        if not (s.boxes or s.points or s.masks):
            raise UsageError(f"no objects for {s.video} ({s.where}): give at least one --box x,y,w,h, --point x,y "
                             "or --mask PNG, or box/point/mask in the manifest")
        try:
            build_prompts(s.boxes, s.points, s.masks, s.prompt_frame, load_mask=lambda p: None)
        except UsageError as e:
            raise UsageError(f"{e} ({s.where})" if len(specs) > 1 or manifest else str(e)) from None
    if len(specs) > 1:
        for k, pattern in patterns.items():
            if pattern and "{" not in pattern and sum(1 for s in specs if s.outputs.get(k) == pattern) > 1:
                raise UsageError(f"--{k.replace('_', '-')} {pattern} would be the same file for every video: "
                                 "put {stem}, {name} or {index} in it, e.g. out/{stem}.mp4")
    seen: dict[str, str] = {}
    for s in specs:
        for path in s.outputs.values():
            key = os.path.normpath(os.path.abspath(path))
            if key in seen:
                raise UsageError(f"{s.video} ({s.where}) and {seen[key]} would both write {path}: "
                                 "give each video its own outputs (use {stem} or {index})")
            seen[key] = f"{s.video} ({s.where})"
    return specs


def outputs_complete(job: TrackJob) -> bool:
    """True when the job has outputs, all of them exist and none carries an ``.incomplete`` marker."""
    outs = job.outputs()
    return bool(outs) and all(os.path.exists(p) and not marker_path(p).exists() for p in outs.values())


def run_job(s: JobSpec, spec, runners: Callable[[], object], *, index: int = 0, summary: TrackSummary | None = None,
            fill_hole_area: int | None = None, skip_existing: bool = False, job_options: dict | None = None,
            on_start: Callable[[int, TrackJob], Callable | None] | None = None) -> TrackSummary:
    """Run one job with the runners ``runners()`` gives: the one job function of every batch path.

    Used by :func:`run_batch` (one process) and by the Ray workers
    (:mod:`sam2trt.cluster`). Builds the prompts, skips the job when
    ``skip_existing`` and its outputs are complete, validates it
    (:func:`~sam2trt.validation.validate_job`, before any output exists), then
    tracks it with :func:`~sam2trt.pipeline.run_track` (exclusive temporaries,
    ``.NAME.incomplete`` markers on partial outputs).

    Args:
        s: the job, from :func:`plan_jobs`.
        spec: the :class:`~sam2trt.model_spec.ModelSpec`.
        runners: returns the open :class:`~sam2trt.runtime.ModuleRunners`; called only once the
            job passed validation (so a caller may open them on first use).
        index: the job's number (passed to ``on_start``).
        summary: filled in place (a new :class:`TrackSummary` when ``None``) and returned.
        fill_hole_area, job_options: as :func:`run_batch`.
        on_start: called as ``on_start(index, job)`` before tracking; may return a
            progress callback ``(done, total)``.
    Returns:
        The summary: ``status`` "ok", "skipped", "error" (input or runtime failure:
        ``error`` and ``exit_code`` set) or "interrupted" (SIGINT/SIGTERM: the outputs
        are closed up to the last tracked frame, exit code 130).
    Raises:
        Whatever ``runners()`` raises (model, backend, environment errors).
    """
    summary = summary if summary is not None else TrackSummary(video=s.video, direction=s.direction)
    try:
        try:
            job = s.to_track_job(fill_hole_area, **(job_options or {}))
            if skip_existing and outputs_complete(job):
                summary.status, summary.outputs = "skipped", job.outputs()
                return summary
            plan = validate_job(job, spec)
        except Sam2TrtError as e:
            summary.status, summary.error, summary.exit_code = "error", str(e), e.exit_code
            return summary
        active = runners()
        try:
            run_track(job, spec, active, progress=on_start(index, job) if on_start else None, summary=summary,
                      plan=plan)
        except Sam2TrtError:
            pass  # status ("error" or "interrupted"), error and exit code are in the summary (run_track fills it)
    except KeyboardInterrupt:
        e = Interrupted(f"interrupted at {s.video}")
        summary.status, summary.error, summary.exit_code = "interrupted", str(e), e.exit_code
    return summary


def run_batch(specs: list[JobSpec], spec, open_runners: Callable[[], contextlib.AbstractContextManager], *,
              fill_hole_area: int | None = None, skip_existing: bool = False,
              on_done: Callable[[TrackSummary], None] | None = None,
              on_start: Callable[[int, TrackJob], Callable | None] | None = None,
              job_options: dict | None = None) -> list[TrackSummary]:
    """Run the jobs in order with one set of runners, opened at the first job that passes validation.

    Each job is :func:`run_job`. A job that fails (input error, runtime failure) is
    recorded and the batch goes on; SIGINT/SIGTERM stops the whole batch (the
    current job's outputs are closed up to its last frame) and raises
    :class:`Interrupted`. Errors from ``open_runners`` (model, backend,
    environment) stop the batch too.

    Args:
        specs: from :func:`plan_jobs`.
        spec: the :class:`~sam2trt.model_spec.ModelSpec`.
        open_runners: called once, returns a context manager yielding the runners.
        skip_existing: skip jobs whose outputs are all complete (status "skipped").
        job_options: further :class:`~sam2trt.pipeline.TrackJob` fields for every job (``crf``, ``preset``).
        on_done: called with each job's summary as soon as it is known.
        on_start: called as ``on_start(index, job)`` before tracking; may return a
            progress callback ``(done, total)``.
    Returns:
        One :class:`TrackSummary` per job (``status`` ok/error/skipped; ``exit_code``).
    Raises:
        Interrupted, and whatever ``open_runners`` raises.
    """
    summaries: list[TrackSummary] = []
    runners: list = []

    with contextlib.ExitStack() as stack, signal_guard():
        def opened():
            if not runners:
                runners.append(stack.enter_context(open_runners()))
            return runners[0]

        for i, s in enumerate(specs):
            summary = TrackSummary(video=s.video, direction=s.direction)
            summaries.append(summary)
            try:
                run_job(s, spec, opened, index=i, summary=summary, fill_hole_area=fill_hole_area,
                        skip_existing=skip_existing, job_options=job_options, on_start=on_start)
            except KeyboardInterrupt:  # a signal just outside run_job's own handling
                e = Interrupted(f"interrupted at {s.video}")
                summary.status, summary.error, summary.exit_code = "interrupted", str(e), e.exit_code
            if on_done:
                on_done(summary)
            if summary.status == "interrupted":
                raise Interrupted(summary.error or f"interrupted at {s.video}")
    return summaries
