"""``sam2trt bench``: per-module latency, end-to-end fps, overhead share, peak RSS.

Runs the real track pipeline (reader thread, inference, writer thread writing
an overlay video, PNGs and JSON lines to a temporary folder) and times every
module call through a proxy runner.
"""

from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from fractions import Fraction

import numpy as np

from sam2trt import platform as sam2trt_platform
from sam2trt.errors import EnvironmentMissing, InputError
from sam2trt.model_spec import MODULES, ModelSpec
from sam2trt.pipeline import TrackJob, run_track
from sam2trt.runtime.base import ModuleRunners
from sam2trt.runtime.null_backend import open_null_runners
from sam2trt.tracker import ObjectPrompt
from sam2trt.video import probe


class TimedRunner:
    """Wraps a runner; records the wall time of each ``infer`` call in seconds.

    Runners that queue work asynchronously (TensorRT, when every output is
    kept on the GPU) are synchronized before the clock stops, so each call is
    charged its own GPU time; this costs a little overlap, only in ``bench``.
    """

    def __init__(self, runner):
        self.runner = runner
        self.name = getattr(runner, "name", "")
        self.times: list[float] = []
        self._sync = getattr(runner, "synchronize", None)

    def infer(self, feed, keep=()):
        t0 = time.perf_counter()
        out = self.runner.infer(feed, keep=keep)
        if self._sync is not None:
            self._sync()
        self.times.append(time.perf_counter() - t0)
        return out


def machine_description() -> dict:
    """CPU model, core count, OS and GPUs (if any) of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = []
    try:
        gpus = [g.name for g in sam2trt_platform.detect().gpus]
    except Exception:  # doctor-level detail is not needed here
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "gpus": gpus}


def synthetic_clip(path: str, frames: int, width: int = 768, height: int = 576) -> str:
    """Write a ``frames``-long clip of moving shapes (PNG folder) for benchmarks without a video."""
    from PIL import Image

    os.makedirs(path, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(frames):
        img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, ((xx + yy) // 3) % 256], -1).astype(np.uint8)
        cx, cy = 200 + 5 * i, 250
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < 40 ** 2] = (220, 40, 40)
        Image.fromarray(img).save(os.path.join(path, f"{i:05d}.png"))
    return path


def spread_boxes(k: int, width: int, height: int) -> list[tuple[float, float, float, float]]:
    """``k`` boxes (corners, pixels) spread over the frame, for multi-object benchmarks."""
    boxes = []
    for i in range(k):
        cx = width * (i + 1) / (k + 1)
        boxes.append((cx - width / 16, height / 3, cx + width / 16, 2 * height / 3))
    return boxes


def run_bench(spec: ModelSpec, runners, video: str, frames: int, objects: int) -> dict:
    """Track ``objects`` boxes for ``frames`` frames of ``video``; return the measurements.

    Returns a dict with per-module ``{median_ms, p90_ms, calls}``, ``fps``,
    ``wall_s``, ``outside_inference_share`` (fraction of wall time not spent in
    module calls), ``peak_rss_mib`` and ``machine``.
    """
    info = probe(video)
    timed = ModuleRunners(**{m: TimedRunner(getattr(runners, m)) for m in MODULES}, backend=runners.backend)
    prompts = [ObjectPrompt(i + 1, 0, box=b) for i, b in enumerate(spread_boxes(objects, info.width, info.height))]
    with tempfile.TemporaryDirectory(prefix="sam2trt-bench-") as tmp:
        job = TrackJob(video=video, prompts=prompts, max_frames=frames, out=os.path.join(tmp, "o.mp4"),
                       masks_dir=os.path.join(tmp, "masks"), json=os.path.join(tmp, "t.jsonl"))
        t0 = time.perf_counter()
        summary = run_track(job, spec, timed)
        wall = time.perf_counter() - t0
    modules = {}
    busy = 0.0
    for m in MODULES:
        t = np.asarray(getattr(timed, m).times) * 1000
        busy += t.sum() / 1000
        modules[m] = {"median_ms": round(float(np.median(t)), 2) if t.size else None,
                      "p90_ms": round(float(np.percentile(t, 90)), 2) if t.size else None, "calls": int(t.size)}
    return {
        "backend": runners.backend,
        "frames": summary.frames,
        "objects": objects,
        "wall_s": round(wall, 3),
        "fps": round(summary.frames / wall, 4),
        "outside_inference_share": round(1 - busy / wall, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "modules": modules,
        "machine": machine_description(),
    }


def format_bench(r: dict) -> str:
    """Human-readable lines for a :func:`run_bench` result."""
    m = r["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {', '.join(m['gpus'])}" if m["gpus"] else ", no GPU"),
             f"backend: {r['backend']}, {r['objects']} object(s), {r['frames']} frames",
             f"{'module':18s} {'median ms':>10s} {'p90 ms':>10s} {'calls':>6s}"]
    for name, v in r["modules"].items():
        lines.append(f"{name:18s} {v['median_ms'] or 0:10.1f} {v['p90_ms'] or 0:10.1f} {v['calls']:6d}")
    lines += [f"end-to-end: {r['fps']:.3f} frames/s ({r['wall_s']:.1f} s wall)",
              f"outside model inference: {100 * r['outside_inference_share']:.1f}% of wall time",
              f"peak RSS: {r['peak_rss_mib']:.0f} MiB"]
    return "\n".join(lines)


def transcode_floor(video: str, frames: int | None = None, crf: int = 18, preset: str = "fast",
                    threads: int | None = None, out: str | None = None) -> dict:
    """Decode ``frames`` frames of ``video`` and re-encode them as the overlay writer does; time it.

    The floor under ``sam2trt track --out``: no model, no mask, only what any
    transcode of the same frames costs. Decoding mirrors the pipeline's reader
    (:mod:`sam2trt.video.reader`: PyAV, first video stream, ``thread_type``
    AUTO, each frame converted to an ``rgb24`` array); encoding mirrors
    :class:`sam2trt.video.writers.OverlayVideoWriter` (``rgb24`` ->
    ``yuv420p`` with the BT.709 matrix, limited range, tagged so; libx264 with
    ``crf`` / ``preset``; an MP4 in a temporary folder, deleted afterwards,
    unless ``out`` is given).

    Args:
        video: a video file (not a frame folder).
        frames: at most this many frames from the start (``None``: all).
        crf, preset: libx264 settings (the overlay writer's: 18, "fast").
        threads: decoder and encoder thread count (``None``: FFmpeg's automatic choice, as the pipeline).
        out: keep the re-encoded video at this path (e.g. to inspect it).
    Returns:
        ``{"frames", "width", "height", "wall_s", "cpu_s", "fps", "cpu_ms_per_frame"}``:
        ``wall_s`` wall-clock seconds from opening the input to closing the
        output; ``cpu_s`` CPU seconds of this process over the same span, all
        threads, user + system (``time.process_time``).
    Raises:
        InputError: a folder, an unreadable file, no video stream, odd width or
            height (libx264 yuv420p needs even sizes), or no frame decoded.
        EnvironmentMissing: this PyAV build has no libx264 encoder.
    """
    import av
    from av.video.reformatter import Colorspace

    if os.path.isdir(video):
        raise InputError(f"{video} is a folder: the transcode floor needs a video file")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        src = av.open(str(video))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{video} is not a readable video ({exc}): pass a video file") from exc
    n = 0
    try:
        if not src.streams.video:
            raise InputError(f"{video} has no video stream: pass a video file")
        stream = src.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        width, height = stream.codec_context.width, stream.codec_context.height
        if width % 2 or height % 2:
            raise InputError(f"{video} is {width}x{height}: the transcode floor needs an even width and height")
        rate = Fraction(stream.average_rate or stream.guessed_rate or 30).limit_denominator(1001)
        with tempfile.TemporaryDirectory(prefix="sam2trt-floor-") as tmp:
            dst = av.open(str(out) if out else os.path.join(tmp, "floor.mp4"), mode="w")
            try:
                try:
                    enc = dst.add_stream("libx264", rate=rate)
                except (av.FFmpegError, ValueError, av.codec.codec.UnknownCodecError) as exc:
                    raise EnvironmentMissing(f"this PyAV build has no libx264 encoder ({exc}): "
                                             "install the PyAV wheel from PyPI") from exc
                enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
                enc.options = {"crf": str(crf), "preset": preset, **({"threads": str(threads)} if threads else {})}
                cc = enc.codec_context
                cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709
                cc.color_range = 1  # limited
                cc.open()
                for frame in src.decode(stream):
                    if frames is not None and n >= frames:
                        break
                    rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                        format="yuv420p", dst_colorspace=Colorspace.ITU709)
                    yuv.pts, yuv.time_base = n, cc.time_base
                    dst.mux(enc.encode(yuv))
                    n += 1
                if n:
                    dst.mux(enc.encode(None))
            finally:
                dst.close()
    finally:
        src.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if n == 0:
        raise InputError(f"no frame of {video} decoded: pass a playable video")
    return {"frames": n, "width": width, "height": height, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
            "fps": round(n / wall, 3), "cpu_ms_per_frame": round(1000 * cpu / n, 2)}


HOST_OUTPUTS = ("out", "json", "masks_dir", "coco")


def run_host_only(spec: ModelSpec, video: str, frames: int, objects: int, outputs=("out", "json"), *,
                  crf: int = 18, preset: str = "fast", floor: bool = True, direction: str = "forward",
                  prompt_frame: int = 0) -> dict:
    """Measure the host side of ``track`` alone: the real pipeline with instant module runners.

    Runs :func:`sam2trt.pipeline.run_track` on ``video`` with the null backend
    (:mod:`sam2trt.runtime.null_backend`, whose preprocessing module stands for a
    device that resizes on the GPU), writing ``outputs`` to a temporary folder,
    then (``floor``) the same frames decoded and re-encoded by
    :func:`transcode_floor` at the same ``crf``/``preset``: the physical floor.

    Args:
        spec: the model (only ``model.json`` is read; see ``host_only_spec``).
        video: a video file (the floor needs one) or a frame folder (no floor).
        frames: frames to track in each direction from ``prompt_frame`` (``--max-frames``);
            ``objects``: boxes spread over the frame.
        outputs: any of :data:`HOST_OUTPUTS`.
        direction: ``forward``, ``backward`` or ``both`` (``track --direction``).
    Returns:
        ``{"frames", "objects", "outputs", "wall_s", "fps", "cpu_s", "cpu_ms_per_frame",
        "serial_ms_per_frame", "stages_cpu_ms_per_frame": {stage: ms}, "peak_rss_mib",
        "floor": {...transcode_floor...} | None, "wall_vs_floor", "cpu_vs_floor", "machine"}``.
        Stage times are per-thread CPU time (``decode``, ``preprocess``, ``postprocess``,
        ``sink:<output>``); codec worker threads (FFmpeg's decoder, libx264) are counted
        only in ``cpu_s``, and their share shows as ``codec threads and other``.
        ``serial_ms_per_frame`` is the inference thread's wall time per frame: the
        tracker core (``core_ms_per_frame``) plus the null module calls
        (``null_module_ms_per_frame``: checking feeds and drawing the stand-in masks,
        which a device backend would not spend on the host).
    """
    unknown = set(outputs) - set(HOST_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}: use {HOST_OUTPUTS}")
    info = probe(video)
    prompts = [ObjectPrompt(i + 1, prompt_frame, box=b)
               for i, b in enumerate(spread_boxes(objects, info.width, info.height))]
    stats: dict = {}
    with tempfile.TemporaryDirectory(prefix="sam2trt-host-") as tmp, open_null_runners(spec) as null:
        runners = ModuleRunners(**{m: TimedRunner(getattr(null, m)) for m in MODULES}, backend=null.backend,
                                preprocess=TimedRunner(null.preprocess))
        names = {"out": "o.mp4", "json": "t.jsonl", "masks_dir": "masks", "coco": "c.json"}
        job = TrackJob(video=video, prompts=prompts, max_frames=frames, crf=crf, preset=preset, direction=direction,
                       **{k: os.path.join(tmp, names[k]) for k in outputs})
        wall0, cpu0 = time.perf_counter(), time.process_time()
        summary = run_track(job, spec, runners, stats=stats)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = max(summary.frames, 1)
    module_s = sum(sum(getattr(runners, m).times) for m in (*MODULES, "preprocess"))
    stages = {k: v for k, v in stats.items() if k in ("decode", "preprocess", "postprocess") or k.startswith("sink:")}
    per_frame = {k: round(1000 * v / n, 2) for k, v in stages.items()}
    per_frame["codec threads and other"] = round(1000 * (cpu - sum(stages.values())) / n, 2)
    result = {
        "frames": summary.frames, "direction": direction, "prompt_frame": prompt_frame, "objects": objects, "outputs": list(outputs), "width": info.width,
        "height": info.height, "wall_s": round(wall, 3), "fps": round(summary.frames / wall, 2),
        "cpu_s": round(cpu, 3), "cpu_ms_per_frame": round(1000 * cpu / n, 2),
        "serial_ms_per_frame": round(1000 * stats.get("infer", 0.0) / n, 3),
        "core_ms_per_frame": round(1000 * (stats.get("infer", 0.0) - module_s) / n, 3),
        "null_module_ms_per_frame": round(1000 * module_s / n, 3),
        "stages_cpu_ms_per_frame": per_frame,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "floor": None, "machine": machine_description(),
    }
    if floor and not os.path.isdir(video):
        f = transcode_floor(video, frames=summary.frames, crf=crf, preset=preset)
        result["floor"] = f
        result["wall_vs_floor"] = round(wall / f["wall_s"], 2)
        result["cpu_vs_floor"] = round(cpu / f["cpu_s"], 2)
    return result


def format_host_only(r: dict) -> str:
    """Human-readable lines for a :func:`run_host_only` result."""
    m = r["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {', '.join(m['gpus'])}" if m["gpus"] else ", no GPU"),
             f"host only (instant modules): {r['frames']} frames of {r['width']}x{r['height']} "
             f"({r.get('direction', 'forward')} from frame {r.get('prompt_frame', 0)}), "
             f"{r['objects']} object(s), outputs {', '.join(r['outputs'])}",
             f"track:  {r['fps']:.1f} frames/s wall ({r['wall_s']:.2f} s), {r['cpu_ms_per_frame']:.1f} ms CPU per frame",
             f"inference thread (serial): {r['serial_ms_per_frame']:.2f} ms per frame = tracker core "
             f"{r['core_ms_per_frame']:.2f} + null modules {r['null_module_ms_per_frame']:.2f}",
             "CPU ms per frame by stage:"]
    lines += [f"  {k:24s} {v:8.2f}" for k, v in r["stages_cpu_ms_per_frame"].items()]
    f = r.get("floor")
    if f:
        lines += [f"floor (PyAV decode + libx264 re-encode): {f['fps']:.1f} frames/s wall ({f['wall_s']:.2f} s), "
                  f"{f['cpu_ms_per_frame']:.1f} ms CPU per frame",
                  f"track / floor: wall {r['wall_vs_floor']:.2f}x, CPU {r['cpu_vs_floor']:.2f}x"]
    lines.append(f"peak RSS: {r['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)
