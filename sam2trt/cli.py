"""The ``sam2trt`` command (typer).

Exit codes: 0 success, 1 unexpected error, 2 usage error, 3 input error (video,
prompt, model folder), 4 runtime failure (decode, disk, backend), 130 interrupted.
Errors print one line ``error: ...`` on stderr; logs and progress go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import sys
import tempfile
from typing import List, Optional

import typer

from sam2trt import platform
from sam2trt.batch import plan_jobs, run_batch
from sam2trt.bench import HOST_OUTPUTS, format_bench, format_host_only, run_bench, run_host_only, synthetic_clip
from sam2trt.cli_help import APP_EPILOG, EXAMPLES, HelpCommand, HelpGroup
from sam2trt.cli_quality import eval_command, verify_command
from sam2trt.cluster import DEFAULT_RETRIES, run_on_ray
from sam2trt.engine.build import build_engines as _build
from sam2trt.engine.compat import describe_engines
from sam2trt.errors import Interrupted, RuntimeFailure, Sam2TrtError, UsageError
from sam2trt.export.checkpoints import download_checkpoint
from sam2trt.export.exporter import CONFIGS, build_model, export_model
from sam2trt.fileio import sha256_file
from sam2trt.fp16 import write_all_fp16
from sam2trt.model_spec import load_model_spec
from sam2trt.runtime.null_backend import host_only_spec
from sam2trt.runtime.openvino_backend import doctor_lines as openvino_doctor_lines
from sam2trt.runtime.select import check_precision, check_threads, choose_backend, open_runners
from sam2trt.signals import signal_guard
from sam2trt.video.writers import DEFAULT_CRF, DEFAULT_PRESET, X264_PRESETS


app = typer.Typer(cls=HelpGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SAM 2 / SAM 2.1 video object tracking: export to ONNX, build TensorRT engines, track.",
                  epilog=APP_EPILOG)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- export
@app.command(cls=HelpCommand, epilog=EXAMPLES["export"])
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
@app.command(cls=HelpCommand, epilog=EXAMPLES["download"])
def download(
    name: str = typer.Argument(..., help="config name, e.g. sam2.1_hiera_t"),
    cache_dir: Optional[pathlib.Path] = typer.Option(None, help="default: $XDG_CACHE_HOME/sam2trt/checkpoints"),
):
    """Download an official checkpoint from Meta's public URL; prints its path."""
    print(download_checkpoint(name, cache_dir=cache_dir, log=_err))


# -------------------------------------------------------------------- build-engines
@app.command("build-engines", cls=HelpCommand, epilog=EXAMPLES["build-engines"])
def build_engines(
    model_dir: pathlib.Path = typer.Argument(..., help="model folder from `sam2trt export`"),
    precision: str = typer.Option("fp16", help="fp16 | fp32"),
    max_objects: int = typer.Option(8, help="largest number of objects tracked at once (profile max)"),
    workspace: float = typer.Option(4.0, "--workspace", help="builder workspace, GiB"),
    timing_cache: Optional[pathlib.Path] = typer.Option(None, help="timing cache file, reused across builds"),
    force: bool = typer.Option(False, "--force", help="rebuild even if engines are up to date"),
):
    """Build TensorRT engines for this GPU next to the ONNX files (needs a GPU and TensorRT)."""
    if precision not in ("fp16", "fp32"):
        raise UsageError(f"--precision {precision!r}: use fp16 or fp32")
    if max_objects < 1:
        raise UsageError(f"--max-objects {max_objects} must be at least 1")
    _build(model_dir, precision=precision, max_objects=max_objects, workspace_gib=workspace,
           timing_cache=timing_cache, force=force, log=_err)


# --------------------------------------------------------------------- convert-fp16
@app.command("convert-fp16", cls=HelpCommand, epilog=EXAMPLES["convert-fp16"])
def convert_fp16(
    model_dir: pathlib.Path = typer.Argument(..., help="model folder from `sam2trt export`"),
    force: bool = typer.Option(False, "--force", help="rewrite files that are up to date"),
):
    """Write the mixed-precision <module>.fp16.onnx files (fp16 with fp32 LayerNorm/softmax/reductions) next to the ONNX files.

    build-engines --precision fp16 builds from them (and writes them when missing or stale);
    ONNX Runtime runs them too. A file that records the sha256 of the current fp32 file is kept.
    """
    write_all_fp16(load_model_spec(model_dir), log=_err, force=force)


# --------------------------------------------------------------------------- doctor
@app.command(cls=HelpCommand, epilog=EXAMPLES["doctor"])
def doctor(model: Optional[pathlib.Path] = typer.Option(None, "--model", help="also say which backend `track` would use for it")):
    """Print what this machine has (GPU, driver, CUDA, TensorRT, ONNX Runtime, OpenVINO) and the backend track would use."""
    if model is not None:
        load_model_spec(model)  # a missing or broken model folder is an error (exit 3), not a line
    for line in doctor_lines(model):
        print(line)


def doctor_lines(model_dir: str | os.PathLike | None = None,
                 env: platform.Environment | None = None) -> list[str]:
    """The ``sam2trt doctor`` report: the machine, OpenVINO, and with a model folder what ``track`` would run it on.

    Args:
        model_dir: a model folder; when given, adds the model, what its
            ``engines.json`` says (:func:`sam2trt.engine.compat.describe_engines`),
            and which backend ``track --backend auto`` would pick for it and why
            (:func:`sam2trt.runtime.select.choose_backend`).
        env: a precomputed :func:`sam2trt.platform.detect` (default: detect now).

    Returns:
        Lines without trailing newlines: :func:`sam2trt.platform.machine_lines`
        first, then :func:`sam2trt.runtime.openvino_backend.doctor_lines`.
        Never raises for a bad model folder: its error becomes a line.
    """
    env = env or platform.detect()
    lines = platform.machine_lines(env)
    lines += openvino_doctor_lines()
    if model_dir is None:
        return lines
    try:
        spec = load_model_spec(model_dir)
    except Sam2TrtError as e:
        lines.append(f"model: {e}")
        return lines
    lines.append(f"model: {spec.root} ({spec.config})")
    engines = describe_engines(spec)
    if engines:
        lines.append(engines)
    try:
        backend, reason = choose_backend(spec, "auto", env)
    except Sam2TrtError as e:
        backend, reason = "none", str(e)
    lines.append(f"track --backend auto: {backend} ({reason})")
    return lines


# ---------------------------------------------------------------------------- track
@app.command(cls=HelpCommand, epilog=EXAMPLES["track"])
def track(
    videos: List[str] = typer.Argument(None, metavar="VIDEO",
                                       help="video files or folders of JPEG/PNG frames sorted by name (several: a batch)"),
    model: pathlib.Path = typer.Option(..., "--model", help="model folder from `sam2trt export`"),
    box: List[str] = typer.Option([], "--box", metavar="X,Y,W,H",
                                  help="a box in pixels; prefix ID:, @FRAME: or ID@FRAME: to name the object "
                                  "or frame (repeat for more objects)"),
    point: List[str] = typer.Option([], "--point", metavar="X,Y[,L]",
                                    help="a click in pixels, label L 1 foreground (default) or 0 background; "
                                    "prefix as --box (repeat for more clicks or objects)"),
    mask: List[str] = typer.Option([], "--mask", metavar="PNG",
                                   help="an initial mask, a frame-sized PNG (non-zero = object); prefix as --box "
                                   "(repeat for more objects)"),
    prompt_frame: int = typer.Option(0, help="frame index of prompts given without @FRAME"),
    max_frames: Optional[int] = typer.Option(None, help="process at most this many frames in each direction"),
    direction: str = typer.Option("both", help="both (forward from the earliest prompt frame, then backward from it) | forward | backward"),
    out: Optional[str] = typer.Option(None, help="overlay video (.mp4); with several videos a pattern with {stem}, {name} or {index}"),
    masks_dir: Optional[str] = typer.Option(None, help="folder for one indexed PNG per frame (DAVIS palette); pattern as --out"),
    json_path: Optional[str] = typer.Option(None, "--json", help="JSON lines: per frame, per object box/area/score; pattern as --out"),
    coco: Optional[str] = typer.Option(None, "--coco", help="COCO-style results JSON with RLE masks; pattern as --out"),
    manifest: Optional[pathlib.Path] = typer.Option(None, help="CSV (with header) or JSON lines: one job per row (docs/batch.md)"),
    json_summary: bool = typer.Option(False, "--json-summary", help="print one JSON line per video on stdout"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="skip videos whose outputs all exist and are complete"),
    fill_hole_area: Optional[int] = typer.Option(None, help="fill mask holes up to this area (low-res pixels); 0 = off; default 8"),
    backend: str = typer.Option("auto", help="auto | onnxruntime | tensorrt | openvino (auto: TensorRT, else ONNX Runtime)"),
    precision: Optional[str] = typer.Option(None, help="--backend openvino only: auto (bf16 where the CPU has it) | fp32 | bf16"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ONNX Runtime or OpenVINO, 1..cores (default: all cores)"),
    crf: int = typer.Option(DEFAULT_CRF, help="--out quality: libx264 constant rate factor, 0 (lossless) .. 51"),
    preset: str = typer.Option(DEFAULT_PRESET, help="--out speed: libx264 preset, ultrafast .. veryslow"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help="run the jobs on a Ray cluster: auto "
                                      "(running cluster, RAY_ADDRESS), local (a private instance here) or HOST:PORT; "
                                      "needs pip install sam2trt with the ray extra (docs/batch.md)"),
    ray_cpus_per_worker: Optional[int] = typer.Option(None, "--ray-cpus-per-worker", help="with --ray, on nodes "
                                                      "without GPUs: cores per worker (default: all, one per node)"),
    retries: Optional[int] = typer.Option(None, "--retries", help="with --ray: runs again of a job whose worker was "
                                          "lost (killed, node lost, out of memory); default 2"),
):
    """Track objects through one or more videos and write overlay videos, PNG masks, JSON lines and COCO RLE.

    The model is loaded once for all videos. A failing video does not stop a
    batch: it is reported and the exit code is that of the first failing video
    (0 when all succeed or are skipped); an interrupt stops the batch with 130.
    With --ray they run on the workers of a Ray cluster (one per GPU, or per --ray-cpus-per-worker cores).
    """
    if not videos and manifest is None:
        raise UsageError("no video: give VIDEO (a video file or frame folder) or --manifest PATH")
    check_threads(threads)
    check_precision(backend, precision)
    if not 0 <= crf <= 51:
        raise UsageError(f"--crf {crf} is out of range: use 0 (lossless) .. 51 (default {DEFAULT_CRF})")
    if preset not in X264_PRESETS:
        raise UsageError(f"--preset {preset!r} is not a libx264 preset: use one of {', '.join(X264_PRESETS)}")
    if fill_hole_area is not None and fill_hole_area < 0:
        raise UsageError(f"--fill-hole-area {fill_hole_area} must be >= 0")
    if manifest is None and not (box or point or mask):
        raise UsageError("no objects: give at least one --box x,y,w,h, --point x,y or --mask PNG")
    if ray is None and (ray_cpus_per_worker is not None or retries is not None):
        raise UsageError(f"{'--retries' if retries is not None else '--ray-cpus-per-worker'} applies to Ray runs "
                         "only: add --ray auto|local|HOST:PORT, or drop it")
    if retries is not None and retries < 0:
        raise UsageError(f"--retries {retries} must be >= 0")
    if ray_cpus_per_worker is not None and ray_cpus_per_worker < 1:
        raise UsageError(f"--ray-cpus-per-worker {ray_cpus_per_worker} must be at least 1")
    specs = plan_jobs(videos or [], manifest, boxes=box, points=point, masks=mask, prompt_frame=prompt_frame,
                      max_frames=max_frames, patterns={"out": out, "masks_dir": masks_dir, "json": json_path, "coco": coco},
                      direction=direction)
    spec = load_model_spec(model)
    batch = len(specs) > 1
    state: dict = {}

    @contextlib.contextmanager
    def opened():  # log the backend once the runners are up
        with open_runners(spec, backend, threads=threads, precision=precision) as runners:
            if not quiet:
                _err(f"backend: {runners.backend} ({runners.reason})")
            yield runners

    def on_start(i, job):
        if state.get("bar"):
            state["bar"].__exit__(None, None, None)
        state["bar"] = _progress(quiet, f"tracking {pathlib.Path(job.video).name}" + (f" ({i + 1}/{len(specs)})" if batch else ""))
        return state["bar"].__enter__()

    def on_done(summary):
        bar = state.pop("bar", None)
        if bar:
            bar.__exit__(None, None, None)
        if json_summary:
            try:
                print(json.dumps(summary.as_dict()), flush=True)
            except BrokenPipeError:
                _silence_stdout()
                raise RuntimeFailure(f"standard output was closed before the summary of {summary.video} was "
                                     "printed: keep the reading end of --json-summary open") from None
        if summary.status == "ok" and not quiet:
            _err(f"tracked {summary.video}: {summary.frames} frames in {summary.seconds:.1f} s "
                 f"({summary.frames / max(summary.seconds, 1e-9):.2f} fps)")
        elif summary.status == "skipped" and not quiet:
            _err(f"skipped {summary.video}: outputs exist")
        elif summary.status == "error" and batch:
            _err(f"error: {summary.error}" if summary.video in (summary.error or "") else f"error: {summary.video}: {summary.error}")

    if ray is not None:  # the same jobs on a Ray cluster's workers (sam2trt/cluster.py)
        summaries = run_on_ray(specs, model, address=ray, backend=backend, threads=threads,
                               cpus_per_worker=ray_cpus_per_worker,
                               retries=DEFAULT_RETRIES if retries is None else retries, fill_hole_area=fill_hole_area,
                               skip_existing=skip_existing, job_options={"crf": crf, "preset": preset},
                               on_done=on_done, quiet=quiet)
    else:
        summaries = run_batch(specs, spec, opened, fill_hole_area=fill_hole_area, skip_existing=skip_existing,
                              on_done=on_done, on_start=on_start, job_options={"crf": crf, "preset": preset})
    failed = [s for s in summaries if s.exit_code]
    if failed:
        err = Sam2TrtError(f"{len(failed)} of {len(summaries)} videos failed, first {failed[0].video}: see the lines above"
                   if batch else failed[0].error)
        err.exit_code = failed[0].exit_code
        raise err


# ---------------------------------------------------------------------------- bench
@app.command(cls=HelpCommand, epilog=EXAMPLES["bench"])
def bench(
    model: Optional[pathlib.Path] = typer.Option(None, "--model", help="model folder (with --host-only: optional, "
                                                 "only model.json is read)"),
    backend: str = typer.Option("auto", help="auto | onnxruntime | tensorrt | openvino"),
    precision: Optional[str] = typer.Option(None, help="--backend openvino only: auto | fp32 | bf16"),
    frames: int = typer.Option(20, help="frames to track (the memory bank is full after 7)"),
    objects: int = typer.Option(1, help="objects tracked at once"),
    video: Optional[pathlib.Path] = typer.Option(None, help="video or frame folder (default: a synthetic 768x576 clip)"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ONNX Runtime or OpenVINO"),
    host_only: bool = typer.Option(False, "--host-only", help="instant module runners: measure decoding, the "
                                   "tracker core and the writers against a decode + re-encode floor"),
    outputs: str = typer.Option("out,json", help="with --host-only: outputs to write (out, json, masks_dir, coco)"),
    crf: int = typer.Option(DEFAULT_CRF, help="--out quality (libx264 crf)"),
    preset: str = typer.Option(DEFAULT_PRESET, help="--out speed (libx264 preset)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    direction: str = typer.Option("forward", help="with --host-only: forward | backward | both (as `track --direction`)"),
    prompt_frame: int = typer.Option(0, help="with --host-only: frame the boxes are on; --frames bounds each direction"),
):
    """Measure per-module latency, frames per second, overhead and peak memory on this machine.

    With --host-only, the module runners return instantly (the null backend) and
    the run measures the host side alone, next to a PyAV decode + libx264 re-encode
    of the same frames.
    """
    if frames < 1 or objects < 1:
        raise UsageError("--frames and --objects must be at least 1")
    check_threads(threads)
    check_precision(backend, precision)
    if host_only:
        outs = tuple(o.strip() for o in outputs.split(",") if o.strip())
        if not outs or set(outs) - set(HOST_OUTPUTS):
            raise UsageError(f"--outputs {outputs!r}: use a comma-separated list of {', '.join(HOST_OUTPUTS)}")
        if video is None:
            raise UsageError("--host-only needs --video PATH (a video file: the floor re-encodes it)")
        if model is None:
            spec = host_only_spec()
        else:
            spec = load_model_spec(model, verify_files=False)
        result = run_host_only(spec, str(video), frames, objects, outs, crf=crf, preset=preset, direction=direction,
                               prompt_frame=prompt_frame)
        print(json.dumps(result) if as_json else format_host_only(result))
        return
    if model is None:
        raise UsageError("missing option '--model': give the model folder (only --host-only runs without one)")
    spec = load_model_spec(model)
    with tempfile.TemporaryDirectory(prefix="sam2trt-clip-") as tmp:
        src = str(video) if video else synthetic_clip(tmp, frames)
        with open_runners(spec, backend, threads=threads, precision=precision) as runners:
            result = run_bench(spec, runners, src, frames, objects)
    result["threads"] = threads or os.cpu_count()
    print(json.dumps(result) if as_json else format_bench(result))


# ------------------------------------------------------------------- eval, verify
app.command("eval", cls=HelpCommand, epilog=EXAMPLES["eval"])(eval_command)  # DAVIS 2017 J&F (cli_quality.py)
app.command("verify", cls=HelpCommand, epilog=EXAMPLES["verify"])(verify_command)  # against ONNX Runtime fp32


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


def _usage_message(exc: Exception) -> str:
    """One line for a usage error raised by typer's parser (missing/unknown option, bad value, no command)."""
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "sam2trt"
    if type(exc).__name__ == "NoArgsIsHelpError":
        what = "no command given" if " " not in path else "no arguments given"
    else:
        what = " ".join(exc.format_message().split()).rstrip(".")
        what = what[:1].lower() + what[1:]
    return f"{what}: run `{path} --help` for usage"


def _is_parser_error(exc: BaseException) -> bool:
    """True for the exceptions of the click copy bundled in typer (usage errors and aborts).

    Matched by shape, not by import: typer >= 0.29 bundles its own click and does
    not install ``click``, so the project never imports it.
    """
    return hasattr(exc, "exit_code") and hasattr(exc, "format_message") or type(exc).__name__ == "Abort"


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app; every error becomes one line on stderr and an exit code.

    Exit codes are those of :mod:`sam2trt.errors` (docs/cli.md, Exit codes): 2 for a
    usage error (also those typer's parser raises), 130 for SIGINT/SIGTERM, and
    1 for an unexpected error (a traceback follows only with ``SAM2TRT_DEBUG=1``).
    """
    if argv is None:  # the program itself, not an in-process call
        code = _run(sys.argv[1:])
        if code == Interrupted.exit_code:
            # An interrupted module call may still be unwinding in a backend thread, and some
            # backends (ONNX Runtime after RunOptions.terminate) abort in interpreter shutdown:
            # the outputs are closed and the error is printed, so leave now with the documented code.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        return code
    return _run(list(argv))


def _run(args: list[str]) -> int:
    if not args:  # typer would print the whole help: one line is the rule for every usage error
        return _fail(UsageError("no command given: run `sam2trt --help` for the commands "
                                "(export, build-engines, convert-fp16, track, bench, doctor, download)"))
    with signal_guard():
        try:
            app(args=args, standalone_mode=False)
        except Sam2TrtError as e:
            return _fail(e)
        except KeyboardInterrupt:
            return _fail(Interrupted("interrupted"))
        except BrokenPipeError:
            _silence_stdout()
            return _fail(RuntimeFailure("standard output was closed while printing the summary: "
                                        "keep the reading end open (e.g. redirect to a file)"))
        except SystemExit as e:  # --help
            return int(e.code or 0)
        except Exception as e:
            if _is_parser_error(e):
                if type(e).__name__ == "Abort":
                    return _fail(Interrupted("interrupted"))
                return _fail(UsageError(_usage_message(e)))
            if os.environ.get("SAM2TRT_DEBUG"):
                raise
            return _fail(Sam2TrtError(f"unexpected {type(e).__name__}: {' '.join(str(e).split())[:300]}: "
                                      "please report it (SAM2TRT_DEBUG=1 shows the traceback)"))
        finally:
            with contextlib.suppress(BrokenPipeError, ValueError):
                sys.stdout.flush()
    return 0


def _fail(e: Sam2TrtError) -> int:
    _err(f"error: {e}")
    return e.exit_code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise BrokenPipeError again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
