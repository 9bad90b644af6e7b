"""TensorRT support: mixed-precision fp16 ONNX, engine profiles, engines.json checks,
missing-environment errors, ``doctor``; and, where TensorRT and a GPU exist, real
engines tracked against ONNX Runtime.

What runs where:

- everywhere (CPU): the fp16 ONNX is checked structurally (fp16 weights and
  compute, fp32 LayerNorm/softmax/reductions, fp32 I/O) and tracked in ONNX
  Runtime against the fp32 export on a real clip; profiles are checked against
  the ONNX inputs and the shapes the tracker feeds; ``engines.json`` checks use
  a fake environment; ``build-engines`` / ``doctor`` run for real; the control
  flow of ``build_engines`` (TensorRT 10 and 11 paths) and the buffer handling
  of ``TensorRTRunner`` run against small fake ``tensorrt`` / cuda-python modules.
- ``@pytest.mark.gpu`` (skipped without TensorRT + cuda-python + a CUDA GPU):
  build fp16 engines of the tiny model, track all 16 frames with the TensorRT
  backend, IoU against ONNX Runtime fp32, frames per second.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import sys
import time

import numpy as np
import pytest

from sam2trt.engine.build import META_FORMAT, build_engines, check_engines_meta, engine_paths, profile_shapes
from sam2trt.engine.compat import ENGINES_JSON, engines_status
from sam2trt.engine.environment import Environment, GpuInfo, detect, doctor_lines
from sam2trt.engine.fp16 import FP32_OPS, fp16_paths, fp16_source_sha256, write_all_fp16
from sam2trt.errors import EnvironmentMissing, ModelError, RuntimeFailure, UsageError
from sam2trt.model_spec import MODULES, load_model_spec
from sam2trt.runtime.base import ModuleRunners, choose_backend, to_host
from sam2trt.tracker import FrameStepper, ObjectPrompt, track_frames
from sam2trt.tracker.processing import upsample_logits
from sam2trt.video import open_frames
from tests.conftest import run_cli

PROMPT = ObjectPrompt(obj_id=1, frame_idx=0, box=(250, 215, 286, 312))  # --box 250,215,36,97
VIDEO_HW = (576, 768)
NUM_FRAMES = 16
GPU_FRAMES = 30  # the gpu tests track the 16-frame excerpt forward and back
# ONNX Runtime CPU needs ~5 s per frame for the image encoder plus ~1.5 s per memory
# frame in memory attention (2 cores); 6 frames keep the fp16 parity test near 1.5 min.
FP16_PARITY_FRAMES = 6
MIN_MEAN_IOU = 0.98


# ----------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def trt_skip_reason() -> str | None:
    """Why the TensorRT tests cannot run here, or None when TensorRT, cuda-python and a GPU exist."""
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return "TensorRT is not installed (pip install 'sam2trt[trt]')"
    from sam2trt.engine.environment import import_cudart

    if import_cudart() is None:
        return "cuda-python is not installed"
    if not detect().gpus:
        return "no CUDA GPU is visible"
    return None


def needs_tensorrt_gpu(test):
    """Mark ``test`` as a GPU test, skipped (before any fixture runs) without TensorRT + cuda-python + a GPU."""
    reason = trt_skip_reason()
    return pytest.mark.gpu(pytest.mark.skipif(reason is not None, reason=reason or "")(test))


def require_tensorrt_gpu() -> None:
    """Skip the calling test unless TensorRT, cuda-python and a CUDA GPU are present."""
    reason = trt_skip_reason()
    if reason:
        pytest.skip(reason)


def link_model(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """A model folder of symlinks to ``src``'s files (new files written there stay there)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix in (".onnx", ".json") and not f.name.endswith(".fp16.onnx") and f.name != ENGINES_JSON:
            (dst / f.name).symlink_to(f)
    return dst


class ShapeRecorder:
    """Wraps a runner and records the shape of every input it is fed."""

    def __init__(self, runner, shapes: dict):
        self.runner, self.shapes, self.name = runner, shapes, runner.name

    def infer(self, feed, keep=()):
        for k, v in feed.items():
            self.shapes.setdefault((self.name, k), set()).add(to_host(v).shape)
        return self.runner.infer(feed, keep=keep)


def track_masks(spec, runners: dict, backend: str, frames_dir: pathlib.Path, max_frames: int,
                shapes: dict | None = None, num_frames: int = NUM_FRAMES,
                banks: dict | None = None) -> tuple[list[np.ndarray], float]:
    """Track PROMPT; returns (per-frame ``[1, H, W]`` bool masks at video resolution, seconds).

    ``banks``: a dict to receive the memory banks (by object id).
    """
    with contextlib.ExitStack() as stack:
        active = {name: stack.enter_context(runners[name]) for name in MODULES}
        if shapes is not None:
            active = {k: ShapeRecorder(v, shapes) for k, v in active.items()}
        stepper = FrameStepper(spec, ModuleRunners(**active, backend=backend))
        masks = []
        t0 = time.perf_counter()
        with open_frames(frames_dir) as frames:
            for out in track_frames(stepper, frames, [PROMPT], num_frames=num_frames, max_frames=max_frames,
                                    banks=banks):
                masks.append(upsample_logits(out.mask_logits, *VIDEO_HW) > 0)
        return masks, time.perf_counter() - t0


def mean_iou(a: list[np.ndarray], b: list[np.ndarray], label: str) -> float:
    ious = []
    for x, y in zip(a, b, strict=True):
        union = np.logical_or(x, y).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
    print(f"{label}: per-frame IoU " + " ".join(f"{v:.4f}" for v in ious) + f"; mean {np.mean(ious):.4f}")
    return float(np.mean(ious))


def fake_env(gpu="NVIDIA H100 80GB HBM3", cc="9.0", trt="10.3.0") -> Environment:
    return Environment(gpus=[GpuInfo(gpu, cc, 79.6)] if gpu else [], driver_version="550.54.15",
                       cuda_runtime_version="12.4", tensorrt_version=trt,
                       tensorrt_major=int(trt.split(".")[0]) if trt else None,
                       onnxruntime_version="1.31.1", onnxruntime_providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def fp16_model_dir(tiny_model_dir, tmp_path_factory) -> pathlib.Path:
    """A symlinked copy of the tiny model with the four ``.fp16.onnx`` files written into it."""
    d = link_model(tiny_model_dir, tmp_path_factory.mktemp("fp16") / "model")
    t0 = time.perf_counter()
    write_all_fp16(load_model_spec(d), log=print)
    print(f"fp16 conversion of four modules: {time.perf_counter() - t0:.1f} s")
    return d


@pytest.fixture(scope="module")
def ort_fp32_masks(tiny_model_dir, vtest_frames):
    """``get(n) -> (masks, shapes)``: ONNX Runtime fp32 tracking of the first n frames, cached."""
    cache: dict[int, tuple] = {}

    def get(n: int):
        for k, (masks, shapes) in cache.items():
            if k >= n:
                return masks[:n], shapes
        from sam2trt.runtime.onnxruntime_backend import make_runners

        spec = load_model_spec(tiny_model_dir)
        shapes: dict = {}
        masks, secs = track_masks(spec, make_runners(spec), "onnxruntime", vtest_frames, n, shapes)
        print(f"ONNX Runtime fp32: {n} frames in {secs:.1f} s ({n / secs:.2f} fps)")
        cache[n] = (masks, shapes)
        return masks, shapes

    return get


# ------------------------------------------------------------------------ fp16 ONNX
@pytest.mark.slow
def test_fp16_onnx_is_mixed_precision_with_fp32_islands(tiny_model_dir, fp16_model_dir):
    import onnx
    from onnx import TensorProto

    from sam2trt.export.exporter import sha256_file

    spec = load_model_spec(fp16_model_dir)
    for module, path in fp16_paths(spec).items():
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)  # strict type inference: every op is consistently typed
        ref = onnx.load(str(spec.path(module)), load_external_data=False)
        io = lambda g: [(v.name, v.type.tensor_type.elem_type) for v in g]  # noqa: E731
        assert io(model.graph.input) == io(ref.graph.input), module   # fp32 in (point_labels int32)
        assert io(model.graph.output) == io(ref.graph.output), module  # fp32 out
        assert fp16_source_sha256(path) == sha256_file(spec.path(module))

        # Weights: nearly all float parameters are stored as float16.
        sizes = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
        for t in model.graph.initializer:
            if t.data_type in sizes:
                sizes[t.data_type] += int(np.prod(t.dims, dtype=np.int64))
        frac = sizes[TensorProto.FLOAT16] / max(1, sum(sizes.values()))
        assert frac > 0.9, (module, sizes)

        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        types = {v.name: v.type.tensor_type.elem_type
                 for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
        types.update({t.name: t.data_type for t in model.graph.initializer})
        fp16_compute = [n for n in model.graph.node if n.op_type in ("MatMul", "Conv", "Gemm", "Add", "Mul")
                        and types.get(n.output[0]) == TensorProto.FLOAT16]
        assert fp16_compute, f"{module}: no fp16 compute ops"
        islands = []
        for node in model.graph.node:
            floats = [types[x] for x in list(node.input) + list(node.output)
                      if x and types.get(x) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
            if node.op_type in FP32_OPS and floats:  # (Range on int64 shapes has none)
                assert all(t == TensorProto.FLOAT for t in floats), (module, node.op_type, node.name)
                islands.append(node)
        ops = {n.op_type for n in islands}
        if module in ("image_encoder", "memory_attention", "mask_decoder"):
            assert {"LayerNormalization", "Softmax"} <= ops, (module, ops)
        if module == "memory_encoder":
            assert {"ReduceMean", "Pow", "Sqrt", "Resize"} <= ops, ops
    print("fp16 files: " + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in fp16_paths(spec).values()))


@pytest.mark.slow
def test_fp16_files_are_kept_when_current(fp16_model_dir):
    lines = []
    write_all_fp16(load_model_spec(fp16_model_dir), log=lines.append)
    assert lines == [f"{m}.fp16.onnx is up to date" for m in MODULES]


@pytest.mark.slow
def test_fp16_tracking_matches_fp32_in_onnxruntime(fp16_model_dir, vtest_frames, ort_fp32_masks):
    from sam2trt.runtime.onnxruntime_backend import make_runners

    spec = load_model_spec(fp16_model_dir)
    ref, _ = ort_fp32_masks(FP16_PARITY_FRAMES)
    masks, secs = track_masks(spec, make_runners(spec, precision="fp16"), "onnxruntime", vtest_frames,
                              FP16_PARITY_FRAMES)
    print(f"ONNX Runtime fp16 (CPU, casts around ops without fp16 kernels): {len(masks)} frames in {secs:.1f} s")
    assert len(masks) == FP16_PARITY_FRAMES
    assert all(0 < m.sum() < m.size for m in ref), "reference masks are empty or full: the test would prove nothing"
    assert mean_iou(masks, ref, "fp16 vs fp32 (ONNX Runtime)") >= MIN_MEAN_IOU


@pytest.mark.slow
def test_onnxruntime_precision_errors(tiny_model_dir, model_copy):
    from sam2trt.runtime.onnxruntime_backend import make_runners

    spec = load_model_spec(model_copy)
    with pytest.raises(ModelError) as e:
        make_runners(spec, precision="fp16")
    msg = str(e.value)
    assert "\n" not in msg and "image_encoder.fp16.onnx" in msg and f"python -m sam2trt.engine.fp16 {model_copy}" in msg
    with pytest.raises(UsageError):
        make_runners(spec, precision="bf16")
    runners = make_runners(spec)  # default unchanged: the fp32 export
    assert {n: r.path.name for n, r in runners.items()} == {m: f"{m}.onnx" for m in MODULES}


# --------------------------------------------------------------------------- profiles
@pytest.mark.slow
def test_profile_shapes_cover_the_onnx_inputs_and_the_tracker(tiny_model_dir, ort_fp32_masks):
    import onnx

    spec = load_model_spec(tiny_model_dir)
    prof = profile_shapes(spec, max_objects=4)
    ma, md, me = prof["memory_attention"], prof["mask_decoder"], prof["memory_encoder"]
    assert prof["image_encoder"] == {"image": ((1, 3, 1024, 1024),) * 3}
    assert ma["maskmem_features"] == ((1, 1, 64, 64, 64), (1, 7, 64, 64, 64), (4, 7, 64, 64, 64))
    assert ma["memory_tpos_enc"] == ((1, 64), (7, 64), (7, 64))
    assert ma["obj_ptrs"] == ((1, 1, 256), (1, 16, 256), (4, 16, 256))
    assert ma["obj_ptr_tpos"] == ((1,), (16,), (16,))
    assert ma["vision_feat"] == ((1, 256, 64, 64),) * 3
    assert md["point_coords"] == ((1, 1, 2), (1, 1, 2), (4, 16, 2))
    assert md["point_labels"] == ((1, 1), (1, 1), (4, 16))
    assert md["high_res_feat0"] == ((1, 32, 256, 256),) * 3 and md["high_res_feat1"] == ((1, 64, 128, 128),) * 3
    assert me["mask_logits"] == ((1, 1, 256, 256), (1, 1, 256, 256), (4, 1, 256, 256))

    for module in MODULES:
        graph = onnx.load(str(spec.path(module)), load_external_data=False).graph
        assert list(prof[module]) == [i.name for i in graph.input], module
        by_symbol: dict[str, set] = {}
        for inp in graph.input:
            lo, opt, hi = prof[module][inp.name]
            dims = inp.type.tensor_type.shape.dim
            assert len(lo) == len(opt) == len(hi) == len(dims), (module, inp.name)
            for k, d in enumerate(dims):
                if d.dim_param:
                    assert 1 <= lo[k] <= opt[k] <= hi[k], (module, inp.name, k)
                    by_symbol.setdefault(d.dim_param, set()).add((lo[k], opt[k], hi[k]))
                else:
                    assert lo[k] == opt[k] == hi[k] == d.dim_value, (module, inp.name, k)
        for symbol, ranges in by_symbol.items():  # one range per named dimension (num_objects, ...)
            assert len(ranges) == 1, (module, symbol, ranges)

    # Every shape the tracker fed (one object, up to FP16_PARITY_FRAMES frames) is inside the max_objects=1 profile.
    _, fed = ort_fp32_masks(FP16_PARITY_FRAMES)
    prof1 = profile_shapes(spec, max_objects=1)
    assert fed
    for (module, name), shapes in fed.items():
        lo, _, hi = prof1[module][name]
        for s in shapes:
            assert all(a <= b <= c for a, b, c in zip(lo, s, hi)), (module, name, s)
    with pytest.raises(UsageError):
        profile_shapes(spec, max_objects=0)


# ---------------------------------------------------------------------- engines.json
@pytest.fixture(scope="module")
def onnx_sha(tiny_model_dir) -> dict:
    from sam2trt.export.exporter import sha256_file

    spec = load_model_spec(tiny_model_dir)
    return {m: sha256_file(spec.path(m)) for m in MODULES}


def _meta(onnx_sha: dict, **over) -> dict:
    meta = {"format_version": META_FORMAT, "tensorrt_version": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0", "precision": "fp16", "max_objects": 8, "onnx_sha256": dict(onnx_sha)}
    meta.update(over)
    return meta


@pytest.mark.slow
def test_check_engines_meta(model_copy, onnx_sha):
    spec = load_model_spec(model_copy)
    for p in engine_paths(spec).values():
        p.write_bytes(b"not really an engine")
    env = fake_env()
    assert check_engines_meta(spec, _meta(onnx_sha), env) is None
    wrong_sha = dict(onnx_sha, memory_attention="0" * 64)
    cases = {
        "other GPU": (_meta(onnx_sha), fake_env(gpu="NVIDIA H200"), ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]),
        "other compute capability": (_meta(onnx_sha, compute_capability="8.6", gpu="NVIDIA A10"), env,
                                     ["8.6", "9.0", "NVIDIA A10"]),
        "other TensorRT": (_meta(onnx_sha), fake_env(trt="10.4.0"), ["10.3.0", "10.4.0"]),
        "ONNX changed": (_meta(onnx_sha, onnx_sha256=wrong_sha), env, ["memory_attention.onnx changed"]),
        "incomplete": ({"tensorrt_version": "10.3.0"}, env, ["incomplete"]),
    }
    for label, (meta, e, words) in cases.items():
        msg = check_engines_meta(spec, meta, e)
        print(f"{label}: {msg}")
        assert msg and "\n" not in msg, label
        assert f"sam2trt build-engines {model_copy} --force" in msg, label
        assert all(w in msg for w in words), (label, msg)
    msg = check_engines_meta(spec, _meta(onnx_sha), fake_env(gpu=None))
    assert msg and "no CUDA GPU" in msg and "\n" not in msg
    engine_paths(spec)["mask_decoder"].unlink()
    msg = check_engines_meta(spec, _meta(onnx_sha), env)
    assert "mask_decoder.engine missing" in msg and "build-engines" in msg


@pytest.mark.slow
def test_auto_backend_follows_engines_json(model_copy, onnx_sha, monkeypatch):
    import sam2trt.engine.environment as environment

    spec = load_model_spec(model_copy)
    backend, reason = choose_backend(spec, "auto")  # no engines at all
    assert backend == "onnxruntime" and "build-engines" in reason
    for p in engine_paths(spec).values():
        p.write_bytes(b"x")
    (model_copy / ENGINES_JSON).write_text(json.dumps(_meta(onnx_sha)))
    if trt_skip_reason() is not None:  # the real machine: engines.json alone does not make TensorRT usable
        backend, reason = choose_backend(spec, "auto")
        assert backend == "onnxruntime" and reason, reason
        with pytest.raises(ModelError):
            choose_backend(spec, "tensorrt")
    monkeypatch.setattr(environment, "detect", lambda: fake_env())
    assert engines_status(spec)[0] is True
    assert choose_backend(spec, "auto") == ("tensorrt", "TensorRT engines built for this GPU were found")
    monkeypatch.setattr(environment, "detect", lambda: fake_env(trt="11.0.0"))
    backend, reason = choose_backend(spec, "auto")
    assert backend == "onnxruntime" and "TensorRT 10.3.0" in reason and "build-engines" in reason
    lines = doctor_lines(model_copy, env=fake_env(trt="11.0.0"))
    assert any(line.startswith("engines: fp16 for NVIDIA H100") for line in lines), lines
    assert lines[-1].startswith("track --backend auto: onnxruntime (engines were built with TensorRT 10.3.0")


# ------------------------------------------------------------------ environment / CLI
@pytest.mark.slow
def test_build_engines_cli_without_tensorrt(tiny_model_dir):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: the missing-TensorRT path cannot be exercised")
    except ImportError:
        pass
    proc = run_cli("build-engines", tiny_model_dir, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    print(proc.stderr)
    assert proc.returncode == EnvironmentMissing.exit_code == 5
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT is not installed"), lines
    for words in ("pip install 'sam2trt[trt]'", "--extra-index-url https://pypi.nvidia.com tensorrt"):
        assert words in lines[0]
    assert not (tiny_model_dir / ENGINES_JSON).exists()


@pytest.mark.slow
def test_build_engines_names_what_is_missing(model_copy, monkeypatch):
    import sam2trt.engine.environment as environment

    monkeypatch.setattr(environment, "detect", lambda: fake_env(gpu=None))  # TensorRT, no GPU
    with pytest.raises(EnvironmentMissing) as e:
        build_engines(model_copy, log=lambda s: None)
    assert str(e.value) == "no CUDA GPU found: build-engines must run on the target NVIDIA GPU"
    monkeypatch.setattr(environment, "detect", lambda: fake_env(gpu=None, trt=None))  # neither
    with pytest.raises(EnvironmentMissing) as e:
        build_engines(model_copy, log=lambda s: None)
    assert str(e.value).startswith("TensorRT is not installed: pip install 'sam2trt[trt]'") and "no CUDA GPU" in str(e.value)
    with pytest.raises(UsageError):
        build_engines(model_copy, precision="int8")
    with pytest.raises(ModelError):
        build_engines(model_copy / "nope")


@pytest.mark.slow
def test_doctor_cli(tiny_model_dir):
    proc = run_cli("doctor", "--model", tiny_model_dir, timeout=120)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    import onnxruntime

    assert f"ONNX Runtime: {onnxruntime.__version__} (providers: " in proc.stdout and "CPUExecutionProvider" in proc.stdout
    assert any(line.startswith(("GPU", "NVIDIA driver", "CUDA runtime")) for line in out)
    if trt_skip_reason() is not None and "TensorRT is not installed" in trt_skip_reason():
        assert any(line.startswith("TensorRT: not installed: pip install 'sam2trt[trt]'") for line in out), out
    assert out[-1].startswith("track --backend auto: onnxruntime (no TensorRT engines in"), out


def test_doctor_without_model_and_runner_import():
    lines = doctor_lines(None)
    assert lines[0].startswith("GPU") and any(line.startswith("TensorRT:") for line in lines)
    import sam2trt.runtime.tensorrt_backend as trt_backend  # imports without TensorRT / cuda-python

    runner = trt_backend.TensorRTRunner("/nonexistent/image_encoder.engine")
    if trt_skip_reason() and "TensorRT is not installed" in trt_skip_reason():
        with pytest.raises(EnvironmentMissing, match="TensorRT is not installed"):
            runner.__enter__()
    runner.__exit__(None, None, None)  # harmless when never entered


def test_detect_parses_nvidia_smi(tmp_path, monkeypatch):
    import sam2trt.engine.environment as environment

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54.15'\n"
                    "echo 'NVIDIA A10, 8.6, 23028, 550.54.15'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(environment, "import_cudart", lambda: None)
    env = detect()
    assert env.gpus == [GpuInfo("NVIDIA H100 80GB HBM3", "9.0", 79.6), GpuInfo("NVIDIA A10", "8.6", 22.5)]
    assert env.driver_version == "550.54.15" and env.gpu_source == "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    env = detect()
    assert env.gpus == [] and env.driver_version is None
    assert doctor_lines(None, env=env)[0].startswith("GPU: none found")


# ---------------------------------------------------------------------- GPU (TensorRT)
@pytest.fixture(scope="module")
def trt_model_dir(request, tmp_path_factory) -> pathlib.Path:
    """A symlinked copy of the tiny model with fp16 engines (max 2 objects) built for this GPU."""
    require_tensorrt_gpu()  # before exporting the model: skip fast
    d = link_model(request.getfixturevalue("tiny_model_dir"), tmp_path_factory.mktemp("trt") / "model")
    t0 = time.perf_counter()
    build_engines(d, precision="fp16", max_objects=2, log=print)
    print(f"build-engines (fp16, 4 engines): {time.perf_counter() - t0:.1f} s")
    return d


@pytest.fixture(scope="module")
def pingpong_frames(vtest_frames, tmp_path_factory) -> pathlib.Path:
    """GPU_FRAMES real frames: the 16-frame excerpt forward, then back (frames 14..1), as symlinks."""
    d = tmp_path_factory.mktemp("pingpong")
    files = sorted(vtest_frames.glob("*.jpg"))
    for i, f in enumerate((files + files[-2:0:-1])[:GPU_FRAMES]):
        (d / f"{i:05d}.jpg").symlink_to(f)
    return d


@needs_tensorrt_gpu
@pytest.mark.slow
def test_tensorrt_fp16_engines_track_like_onnxruntime(trt_model_dir, pingpong_frames):
    from sam2trt.runtime.base import open_runners
    from sam2trt.runtime.onnxruntime_backend import make_runners as ort_runners
    from sam2trt.runtime.tensorrt_backend import CudaTensor, make_runners

    spec = load_model_spec(trt_model_dir)
    meta = json.loads((trt_model_dir / ENGINES_JSON).read_text())
    assert meta["precision"] == "fp16" and meta["max_objects"] == 2
    assert engines_status(spec) == (True, "engines match this GPU and TensorRT")
    lines = []
    build_engines(trt_model_dir, precision="fp16", max_objects=2, log=lines.append)
    assert lines and "up to date" in lines[0]

    n, banks = GPU_FRAMES, {}
    masks, secs = track_masks(spec, make_runners(spec), "tensorrt", pingpong_frames, n, num_frames=n, banks=banks)
    masks2, secs2 = track_masks(spec, make_runners(spec), "tensorrt", pingpong_frames, n, num_frames=n)  # warm
    print(f"TensorRT fp16: {n} frames in {secs:.2f} s cold, {secs2:.2f} s warm "
          f"({n / secs2:.1f} frames per second, 1 object, tracker + host copies included)")
    # The memory bank's spatial features stayed on the GPU.
    kept = [m.maskmem_features for m in list(banks[PROMPT.obj_id].cond.values())
            + list(banks[PROMPT.obj_id].non_cond.values()) if m.maskmem_features is not None]
    assert kept and all(isinstance(f, CudaTensor) for f in kept)
    ref, _ = track_masks(spec, ort_runners(spec), "onnxruntime", pingpong_frames, n, num_frames=n)
    assert mean_iou(masks, ref, "TensorRT fp16 vs ONNX Runtime fp32") >= MIN_MEAN_IOU
    assert mean_iou(masks2, masks, "TensorRT fp16, second run vs first") >= 0.999
    with open_runners(spec, "auto") as runners:
        assert runners.backend == "tensorrt"
        # Outside the profile (3 objects > max_objects=2): one-line error naming the fix.
        with pytest.raises(RuntimeFailure, match="--max-objects"):
            runners.memory_encoder.infer({
                "vision_feat": np.zeros((1, 256, 64, 64), np.float32),
                "mask_logits": np.zeros((3, 1, 256, 256), np.float32),
                "object_score_logits": np.zeros((3, 1), np.float32),
                "binarize_mask": np.zeros((3,), np.float32)})


@needs_tensorrt_gpu
@pytest.mark.slow
def test_tensorrt_runner_matches_onnxruntime_per_module(trt_model_dir):
    from sam2trt.runtime.onnxruntime_backend import make_runners as ort_runners
    from sam2trt.runtime.tensorrt_backend import make_runners as trt_runners

    spec = load_model_spec(trt_model_dir)
    rng = np.random.default_rng(0)
    feed = {"vision_feat": rng.standard_normal((1, 256, 64, 64), np.float32),
            "mask_logits": 8 * rng.standard_normal((2, 1, 256, 256), np.float32),
            "object_score_logits": np.array([[1.0], [-1.0]], np.float32),
            "binarize_mask": np.array([1.0, 0.0], np.float32)}
    with trt_runners(spec)["memory_encoder"] as t, ort_runners(spec)["memory_encoder"] as o:
        got, want = t.infer(feed)["maskmem_features"], o.infer(feed)["maskmem_features"]
        again = t.infer(feed)["maskmem_features"]
        kept = t.infer(feed, keep=("maskmem_features",))["maskmem_features"]  # stays on the GPU
        np.testing.assert_array_equal(np.asarray(kept), got)
        np.testing.assert_array_equal(np.asarray(kept[1]), got[1])
        t.infer(dict(feed, mask_logits=feed["mask_logits"][:1], object_score_logits=feed["object_score_logits"][:1],
                     binarize_mask=feed["binarize_mask"][:1]))
    assert got.shape == want.shape == (2, 64, 64, 64)
    np.testing.assert_array_equal(got, again)  # outputs are copies, not views of the pinned buffers
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    print(f"memory encoder, TensorRT fp16 vs ONNX Runtime fp32: relative L2 error {rel:.2e}")
    assert rel < 2e-2


# ------------------------------------------------- fake TensorRT / CUDA (CPU-only logic)
# Stand-ins with the TensorRT and cuda-python call signatures the code uses, so the
# control flow of build_engines and the buffer handling of TensorRTRunner run on
# any machine. They prove nothing about TensorRT itself: the gpu tests above do.
class FakeCudart:
    """cuda-python runtime look-alike: 'device' memory is host memory, copies are memmove."""

    class cudaError_t:  # noqa: N801
        cudaSuccess = 0

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice = 1, 2, 3

    def __init__(self):
        import ctypes

        self.ctypes, self.blocks, self.copies, self.syncs = ctypes, {}, 0, 0
        self.kinds: list[int] = []

    def _alloc(self, n):
        buf = self.ctypes.create_string_buffer(n + 256)  # cudaMalloc aligns to 256 bytes
        ptr = -(-self.ctypes.addressof(buf) // 256) * 256
        self.blocks[ptr] = buf
        return 0, ptr

    def _free(self, ptr):
        self.blocks.pop(ptr)
        return (0,)

    cudaMalloc = cudaMallocHost = _alloc
    cudaFree = cudaFreeHost = _free

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamDestroy(self, s):
        return (0,)

    def cudaStreamSynchronize(self, s):
        self.syncs += 1
        return (0,)

    def cudaGetErrorString(self, err):
        return 0, b"fake"

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        self.ctypes.memmove(dst, src, n)
        self.copies += 1
        self.kinds.append(kind)
        return (0,)


def make_fake_trt(version: str):
    """A ``tensorrt`` module look-alike (10.x has BuilderFlag.FP16, 11.x does not)."""
    import ctypes
    import types

    import onnx

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16, trt.int32 = "float32", "float16", "int32"
    trt.nptype = lambda t: {"float32": np.float32, "int32": np.int32}[t]
    flags = {"OBEY_PRECISION_CONSTRAINTS": "obey", "FP16": "fp16"} if version.startswith("10.") else {}
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.LayerType = types.SimpleNamespace(NORMALIZATION=1, SOFTMAX=2, REDUCE=3, RESIZE=4, ELEMENTWISE=5, UNARY=6, CONV=7)
    trt.UnaryOperation = types.SimpleNamespace(SQRT=1, EXP=2, SIN=3, COS=4, ABS=5)
    trt.ElementWiseOperation = types.SimpleNamespace(POW=1, SUM=2)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.built = []

    class Tensor:
        def __init__(self, name, shape, dtype="float32"):
            self.name, self.shape, self.dtype = name, shape, dtype

    class Layer:
        def __init__(self, kind, op=None):
            self.type, self.op, self.num_outputs, self.precision, self.out_types = kind, op, 1, None, {}

        def get_output(self, j):
            return Tensor("out", (1,))

        def set_output_type(self, j, t):
            self.out_types[j] = t

    trt.IElementWiseLayer = type("IElementWiseLayer", (Layer,), {})
    trt.IUnaryLayer = type("IUnaryLayer", (Layer,), {})
    L = trt.LayerType

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.source = flags, [], None
            self.layers = [Layer(L.NORMALIZATION), Layer(L.CONV), Layer(L.ELEMENTWISE, 1), Layer(L.ELEMENTWISE, 2),
                           Layer(L.UNARY, 1), Layer(L.UNARY, 5)]
            self.num_layers = len(self.layers)

        num_inputs = property(lambda self: len(self.inputs))
        get_input = lambda self, i: self.inputs[i]  # noqa: E731
        get_layer = lambda self, i: self.layers[i]  # noqa: E731

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            self.network.source = pathlib.Path(path).name
            for v in onnx.load(path, load_external_data=False).graph.input:
                dims = tuple(d.dim_value if not d.dim_param else -1 for d in v.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(v.name, dims))
            return True

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pool, self.cache = set(), [], None, None

        def set_flag(self, f):
            self.flags.add(f)

        def set_memory_pool_limit(self, kind, n):
            self.pool = (kind, n)

        def create_timing_cache(self, data):
            return types.SimpleNamespace(serialize=lambda: b"cache:" + bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def add_optimization_profile(self, p):
            self.profiles.append(p)

    class Profile(dict):
        def set_shape(self, name, lo, opt, hi):
            self[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        create_network = lambda self, flags=0: Network(flags)  # noqa: E731
        create_builder_config = lambda self: Config()  # noqa: E731
        create_optimization_profile = lambda self: Profile()  # noqa: E731

        def build_serialized_network(self, network, config):
            trt.built.append((network, config))
            return f"engine from {network.source}".encode()

    trt.Builder, trt.OnnxParser = Builder, Parser

    # Runtime side: an engine computing y = 2 * x + 1 on x of shape [-1, 3], profile 1..4 rows.
    class Context:
        def __init__(self):
            self.shapes, self.addr = {}, {}

        def set_input_shape(self, name, shape):
            ok = len(shape) == 2 and shape[1] == 3 and 1 <= shape[0] <= 4
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def get_tensor_shape(self, name):
            return self.shapes["x"]

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            n = int(np.prod(self.shapes["x"])) * 4
            x = np.frombuffer((ctypes.c_uint8 * n).from_address(self.addr["x"]), np.float32)
            y = np.frombuffer((ctypes.c_uint8 * n).from_address(self.addr["y"]), np.float32)
            y[:] = 2 * x + 1
            return True

    class Engine:
        num_io_tensors = 2
        get_tensor_name = lambda self, i: "xy"[i]  # noqa: E731
        get_tensor_mode = lambda self, n: "in" if n == "x" else "out"  # noqa: E731
        get_tensor_dtype = lambda self, n: "float32"  # noqa: E731
        get_tensor_shape = lambda self, n: (-1, 3)  # noqa: E731
        get_tensor_profile_shape = lambda self, n, p: ((1, 3), (2, 3), (4, 3))  # noqa: E731
        create_execution_context = lambda self: Context()  # noqa: E731

    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                       "deserialize_cuda_engine": lambda self, data: Engine() if data else None})
    return trt


@pytest.fixture()
def fake_engine(tmp_path, monkeypatch) -> tuple[FakeCudart, pathlib.Path]:
    """``(cuda, engine path)``: the fake TensorRT 10 and cuda-python installed, and an engine file."""
    import sam2trt.engine.environment as environment

    cuda = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.3.0"))
    monkeypatch.setattr(environment, "import_cudart", lambda: cuda)
    path = tmp_path / "fake.engine"
    path.write_bytes(b"serialized")
    return cuda, path


def test_tensorrt_runner_buffers_with_fake_cuda(tmp_path, fake_engine):
    from sam2trt.runtime.tensorrt_backend import TensorRTRunner

    cuda, path = fake_engine
    with TensorRTRunner(path) as r:
        assert r.max_shapes == {"x": (4, 3), "y": (4, 3)} and len(cuda.blocks) == 4  # device + pinned host each
        x = np.arange(6, dtype=np.float64).reshape(2, 3)  # converted to the engine's float32
        y1 = r.infer({"x": x})["y"]
        y2 = r.infer({"x": np.ones((1, 3), np.float32)})["y"]
        np.testing.assert_array_equal(y1, 2 * x + 1)  # the first result survives the second call
        assert y1.dtype == np.float32 and y2.shape == (1, 3) and (y2 == 3).all()
        with pytest.raises(RuntimeFailure, match="outside the engine profile") as e:
            r.infer({"x": np.zeros((5, 3), np.float32)})
        assert "--max-objects" in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(RuntimeFailure, match="missing"):
            r.infer({})
    assert cuda.blocks == {} and r.context is None  # everything freed
    with pytest.raises(RuntimeFailure, match="outside its `with` block"):
        r.infer({"x": x})
    with pytest.raises(ModelError, match="build-engines"):
        TensorRTRunner(tmp_path / "missing.engine").__enter__()


def test_tensorrt_runners_keep_tensors_on_the_device_with_fake_cuda(fake_engine):
    """Kept outputs live in the shared pool, feed other runners by address or by gather, and are recycled."""
    import gc

    from sam2trt.runtime.tensorrt_backend import CudaMemory, CudaTensor, TensorRTRunner

    cuda, path = fake_engine
    H2D, D2H, D2D = 1, 2, 3
    memory = CudaMemory()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with TensorRTRunner(path, "a", memory) as a, TensorRTRunner(path, "b", memory) as b:
        assert memory.users == 2 and a.memory.stream == b.memory.stream
        cuda.kinds.clear()
        syncs = cuda.syncs
        t = a.infer({"x": x}, keep=("y",))["y"]
        assert isinstance(t, CudaTensor) and t.shape == (2, 3) and t.ptr % 256 == 0
        assert cuda.kinds == [H2D] and cuda.syncs == syncs  # the frame went up, nothing came down, no wait
        assert a.context.addr["y"] == t.ptr  # the engine wrote the kept output in place
        u = b.infer({"x": t})["y"]  # another runner, fed by address
        assert b.context.addr["x"] == t.ptr and cuda.kinds == [H2D, D2H]
        np.testing.assert_array_equal(u, 2 * (2 * x + 1) + 1)
        cuda.kinds.clear()
        v = b.infer({"x": [t[1], t[0], t[1]]})["y"]  # rows gathered on the device
        assert cuda.kinds == [D2D, D2D, D2D, D2H] and b.context.addr["x"] == b._device["x"]
        np.testing.assert_array_equal(v, 2 * (2 * x[[1, 0, 1]] + 1) + 1)
        np.testing.assert_array_equal(np.asarray(t[1]), 2 * x[1] + 1)  # download of a row view
        w = b.infer({"x": [t[0], np.full(3, 5, np.float32)]})["y"]  # mixed: through the host
        np.testing.assert_array_equal(w, [2 * (2 * x[0] + 1) + 1, [11, 11, 11]])
        with pytest.raises(RuntimeFailure, match="different shapes"):
            b.infer({"x": [t, t[0]]})
        with pytest.raises(RuntimeFailure, match="outside the engine profile"):
            b.infer({"x": [t[0]] * 5})
        with pytest.raises(TypeError, match="one row"):
            t[0:1]
        # The pool recycles a block once its last view is gone.
        row, ptr = t[1], t.ptr
        del t
        gc.collect()
        assert memory._free == {}
        del row
        gc.collect()
        assert memory._free == {256: [ptr]}
        assert a.infer({"x": x}, keep=("y",))["y"].ptr == ptr
        leftover = a.infer({"x": x}, keep=("y",))["y"]
    assert memory.users == 0 and memory.stream is None
    assert cuda.blocks == {}  # engines' buffers, pinned buffers and the pool: all freed
    del leftover
    gc.collect()
    assert memory._free == {}  # a block outliving its pool does not come back


@pytest.mark.slow
@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_build_engines_flow_with_fake_tensorrt(model_copy, monkeypatch, version):
    import sam2trt.engine.environment as environment

    trt = make_fake_trt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(environment, "detect", lambda: fake_env(trt=version))
    lines = []
    build_engines(model_copy, max_objects=3, workspace_gib=2.0, log=lines.append)
    print("\n".join(lines))
    spec = load_model_spec(model_copy)
    meta = json.loads((model_copy / ENGINES_JSON).read_text())
    weak = version.startswith("10.")
    assert meta["typing"] == ("weak" if weak else "strong") and meta["precision"] == "fp16"
    assert meta["tensorrt_version"] == version and meta["gpu"] == "NVIDIA H100 80GB HBM3" and meta["max_objects"] == 3
    assert meta["built_from"]["memory_attention"] == ("memory_attention.onnx" if weak else "memory_attention.fp16.onnx")
    assert (model_copy / "timing.cache").read_bytes() == b"cache:"
    prof = profile_shapes(spec, 3)
    for (network, config), module in zip(trt.built, MODULES, strict=True):
        assert network.source == meta["built_from"][module]
        assert network.flags == (0 if weak else 1 << 5)
        assert config.pool == ("workspace", 2 << 30)
        assert config.flags == ({"fp16", "obey"} if weak else set())
        dynamic = {k: v for k, v in prof[module].items() if v[0] != v[2]}
        assert (config.profiles[0] if config.profiles else {}) == dynamic, module
        pinned = [layer.type for layer in network.layers if layer.precision == "float32"]
        assert pinned == ([1, 5, 6] if weak else []), pinned  # normalization, POW, SQRT; not conv/sum/abs
    for module, path in engine_paths(spec).items():
        assert path.read_bytes() == f"engine from {meta['built_from'][module]}".encode()
    assert engines_status(spec) == (True, "engines match this GPU and TensorRT")
    trt.built.clear()
    build_engines(model_copy, max_objects=3, log=lines.append)  # up to date: nothing rebuilt
    assert trt.built == [] and "up to date" in lines[-1]
    build_engines(model_copy, max_objects=4, log=lines.append)  # another profile: rebuilt
    assert len(trt.built) == 4
