"""The ``sam2trt`` command (typer).

Exit codes: 0 success, 1 unexpected error, 2 usage error, 3 input error (video,
prompt, model folder), 4 runtime failure (decode, disk, backend), 130 interrupted.
Errors print one line ``error: ...`` on stderr; logs and progress go to stderr.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import List, Optional

import typer

from sam2trt.errors import Sam2TrtError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SAM 2 / SAM 2.1 video object tracking: export to ONNX, build TensorRT engines, track.")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- export
@app.command()
def export(
    config: str = typer.Option(..., help="official config name, e.g. sam2.1_hiera_t, sam2.1_hiera_b+, sam2_hiera_l"),
    checkpoint: Optional[pathlib.Path] = typer.Option(None, help="official checkpoint .pt ({'model': state_dict})"),
    random_weights: bool = typer.Option(False, "--random-weights", help="random weights (tests and benchmarks only)"),
    seed: int = typer.Option(0, help="torch seed for --random-weights"),
    out: pathlib.Path = typer.Option(..., help="output model folder"),
    verify: bool = typer.Option(True, help="check each module in ONNX Runtime against PyTorch"),
):
    """Export a SAM 2 model to four ONNX modules and model.json."""
    if (checkpoint is None) == (not random_weights):
        raise UsageError("give exactly one of --checkpoint PATH or --random-weights")
    from sam2trt.export.exporter import CONFIGS, build_model, export_model, sha256_file

    if config not in CONFIGS:
        raise UsageError(f"unknown config {config!r}: use one of {', '.join(CONFIGS)}")
    if random_weights:
        _err(f"WARNING: exporting {config} with RANDOM weights (seed {seed}): masks will be meaningless; "
             "use --checkpoint for real tracking")
        model = build_model(config, seed=seed)
        source = {"random_weights": True, "seed": seed}
    else:
        model = build_model(config, checkpoint=checkpoint)
        source = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint)}
    export_model(model, config, out, source=source, verify=verify, log=_err)
    _err(f"wrote {out}")


# ------------------------------------------------------------------------- download
@app.command()
def download(
    name: str = typer.Argument(..., help="config name, e.g. sam2.1_hiera_t"),
    cache_dir: Optional[pathlib.Path] = typer.Option(None, help="default: $XDG_CACHE_HOME/sam2trt/checkpoints"),
):
    """Download an official checkpoint from Meta's public URL; prints its path."""
    from sam2trt.export.checkpoints import download_checkpoint

    print(download_checkpoint(name, cache_dir=cache_dir, log=_err))


# -------------------------------------------------------------------- build-engines
@app.command("build-engines")
def build_engines(
    model_dir: pathlib.Path = typer.Argument(..., help="model folder from `sam2trt export`"),
    precision: str = typer.Option("fp16", help="fp16 | fp32"),
    max_objects: int = typer.Option(8, help="largest number of objects tracked at once (profile max)"),
    workspace: float = typer.Option(4.0, "--workspace", help="builder workspace, GiB"),
    timing_cache: Optional[pathlib.Path] = typer.Option(None, help="timing cache file, reused across builds"),
    force: bool = typer.Option(False, "--force", help="rebuild even if engines are up to date"),
):
    """Build TensorRT engines for this GPU next to the ONNX files (needs a GPU and TensorRT)."""
    from sam2trt.engine.build import build_engines as _build

    if precision not in ("fp16", "fp32"):
        raise UsageError(f"--precision {precision!r}: use fp16 or fp32")
    if max_objects < 1:
        raise UsageError(f"--max-objects {max_objects} must be at least 1")
    _build(model_dir, precision=precision, max_objects=max_objects, workspace_gib=workspace,
           timing_cache=timing_cache, force=force, log=_err)


# --------------------------------------------------------------------------- doctor
@app.command()
def doctor(model: Optional[pathlib.Path] = typer.Option(None, "--model", help="also say which backend `track` would use for it")):
    """Print what this machine has (GPU, driver, CUDA, TensorRT, ONNX Runtime) and the backend track would use."""
    from sam2trt.engine.environment import doctor_lines

    for line in doctor_lines(model):
        print(line)


# ---------------------------------------------------------------------------- track
def _prompts_from_cli(boxes: List[str], prompt_frame: int):
    from sam2trt.tracker.prompts import ObjectPrompt, parse_box

    return [ObjectPrompt(obj_id=i + 1, frame_idx=prompt_frame, box=parse_box(b)) for i, b in enumerate(boxes)]


@app.command()
def track(
    video: pathlib.Path = typer.Argument(..., help="video file, or folder of JPEG/PNG frames sorted by name"),
    model: pathlib.Path = typer.Option(..., "--model", help="model folder from `sam2trt export`"),
    box: List[str] = typer.Option([], "--box", help="object box x,y,w,h in pixels on the prompt frame; repeat per object"),
    prompt_frame: int = typer.Option(0, help="frame index the prompts are on; tracking runs forward from it"),
    max_frames: Optional[int] = typer.Option(None, help="process at most this many frames"),
    out: Optional[pathlib.Path] = typer.Option(None, help="overlay video (.mp4)"),
    masks_dir: Optional[pathlib.Path] = typer.Option(None, help="folder for one indexed PNG per frame (DAVIS palette)"),
    json_path: Optional[pathlib.Path] = typer.Option(None, "--json", help="JSON lines: per frame, per object box/area/score"),
    fill_hole_area: Optional[int] = typer.Option(None, help="fill mask holes up to this area (low-res pixels); 0 = off; default 8"),
    backend: str = typer.Option("auto", help="auto | onnxruntime | tensorrt"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ONNX Runtime (default: all cores)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
):
    """Track objects through a video and write an overlay video, PNG masks and JSON lines."""
    from sam2trt.model_spec import load_model_spec
    from sam2trt.pipeline import TrackJob, run_track, validate_job
    from sam2trt.runtime import open_runners

    if not box:
        raise UsageError("no objects: give at least one --box x,y,w,h")
    if fill_hole_area is not None and fill_hole_area < 0:
        raise UsageError(f"--fill-hole-area {fill_hole_area} must be >= 0")
    job = TrackJob(video=str(video), prompts=_prompts_from_cli(box, prompt_frame), max_frames=max_frames,
                   out=str(out) if out else None, masks_dir=str(masks_dir) if masks_dir else None,
                   json=str(json_path) if json_path else None, fill_hole_area=fill_hole_area)
    spec = load_model_spec(model)
    validate_job(job, spec)  # fail fast, before loading the model
    with open_runners(spec, backend, threads=threads) as runners:
        if not quiet:
            _err(f"backend: {runners.backend} ({runners.reason})")
        with _progress(quiet, f"tracking {video.name}") as progress:
            summary = run_track(job, spec, runners, progress=progress)
    if not quiet:
        _err(f"tracked {summary.frames} frames in {summary.seconds:.1f} s ({summary.frames / max(summary.seconds, 1e-9):.2f} fps)")


class _progress:
    """A rich progress bar on stderr (or nothing when quiet); callable as progress(done, total)."""

    def __init__(self, quiet: bool, label: str):
        self.quiet, self.label, self.bar, self.task = quiet, label, None, None

    def __enter__(self):
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=None)
        return self

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning sam2trt errors into one line and an exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except Sam2TrtError as e:
        _err(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        _err("error: interrupted")
        return 130
    except SystemExit as e:  # typer/click --help and usage errors
        return int(e.code or 0)
    except Exception as e:  # click usage errors carry exit codes too
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            _err("error: aborted")
            return 130
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
