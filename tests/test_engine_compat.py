"""Whether engines fit this machine: ``engines.json`` checks, backend choice and its exit codes,
missing-environment errors, ``doctor`` and machine detection. Needs neither TensorRT nor a GPU:
the machine is a fake :class:`~sam2trt.platform.Environment` where it matters.
"""

from __future__ import annotations

import importlib
import json
import os

import pytest

from sam2trt import platform
from sam2trt.cli import doctor_lines
from sam2trt.engine.build import build_engines
from sam2trt.engine.compat import (ENGINES_JSON, EnginesState, check_engines_meta, engine_paths,
                                   engines_status)
from sam2trt.errors import EnvironmentMissing, ModelError, UsageError
from sam2trt.fileio import sha256_file
from sam2trt.model_spec import MODULES, load_model_spec
from sam2trt.platform import GpuInfo, detect, machine_lines
from sam2trt.runtime import tensorrt_backend
from sam2trt.runtime.select import choose_backend
from tests.helpers import engines_meta, fake_env, run_cli, trt_skip_reason


# ---------------------------------------------------------------------- engines.json
@pytest.fixture(scope="module")
def onnx_sha(tiny_model_dir) -> dict:
    spec = load_model_spec(tiny_model_dir)
    return {m: sha256_file(spec.path(m)) for m in MODULES}


@pytest.mark.slow
def test_check_engines_meta(model_copy, onnx_sha):
    spec = load_model_spec(model_copy)
    for p in engine_paths(spec).values():
        p.write_bytes(b"not really an engine")
    env = fake_env()
    assert check_engines_meta(spec, engines_meta(onnx_sha), env) is None
    wrong_sha = dict(onnx_sha, memory_attention="0" * 64)
    cases = {
        "other GPU": (engines_meta(onnx_sha), fake_env(gpu="NVIDIA H200"), ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]),
        "other compute capability": (engines_meta(onnx_sha, compute_capability="8.6", gpu="NVIDIA A10"), env,
                                     ["8.6", "9.0", "NVIDIA A10"]),
        "other TensorRT": (engines_meta(onnx_sha), fake_env(trt="10.4.0"), ["10.3.0", "10.4.0"]),
        "ONNX changed": (engines_meta(onnx_sha, onnx_sha256=wrong_sha), env, ["memory_attention.onnx changed"]),
        "incomplete": ({"tensorrt_version": "10.3.0"}, env, ["incomplete"]),
    }
    for label, (meta, e, words) in cases.items():
        msg = check_engines_meta(spec, meta, e)
        print(f"{label}: {msg}")
        assert msg and "\n" not in msg, label
        assert f"sam2trt build-engines {model_copy} --force" in msg, label
        assert all(w in msg for w in words), (label, msg)
    msg = check_engines_meta(spec, engines_meta(onnx_sha), fake_env(gpu=None))
    assert msg and "no CUDA GPU" in msg and "\n" not in msg
    engine_paths(spec)["mask_decoder"].unlink()
    msg = check_engines_meta(spec, engines_meta(onnx_sha), env)
    assert "mask_decoder.engine missing" in msg and "build-engines" in msg


@pytest.mark.slow
def test_auto_backend_follows_engines_json(model_copy, onnx_sha, monkeypatch):
    spec = load_model_spec(model_copy)
    monkeypatch.setattr(platform, "detect", lambda: fake_env())
    backend, reason = choose_backend(spec, "auto")  # no engines at all
    assert backend == "onnxruntime" and "build-engines" in reason
    assert engines_status(spec).state is EnginesState.NO_ENGINES
    for p in engine_paths(spec).values():
        p.write_bytes(b"x")
    (model_copy / ENGINES_JSON).write_text(json.dumps(engines_meta(onnx_sha)))
    status = engines_status(spec)
    assert status.usable and status.reason == "engines match this GPU and TensorRT" and status.error() is None
    assert choose_backend(spec, "auto") == ("tensorrt", "TensorRT engines built for this GPU were found")
    assert choose_backend(spec, "tensorrt") == ("tensorrt", "asked for with --backend tensorrt")
    monkeypatch.setattr(platform, "detect", lambda: fake_env(trt="11.0.0"))
    backend, reason = choose_backend(spec, "auto")
    assert backend == "onnxruntime" and "TensorRT 10.3.0" in reason and "build-engines" in reason
    lines = doctor_lines(model_copy, env=fake_env(trt="11.0.0"))
    assert any(line.startswith("engines: fp16 for NVIDIA H100") for line in lines), lines
    assert lines[-1].startswith("track --backend auto: onnxruntime (engines were built with TensorRT 10.3.0")
    (model_copy / ENGINES_JSON).write_text("{not json")
    assert engines_status(spec).state is EnginesState.UNREADABLE
    assert "engines.json is unreadable" in doctor_lines(model_copy, env=fake_env())[-2]


@pytest.mark.slow
def test_tensorrt_backend_errors_name_the_machine_or_the_engines(model_copy, onnx_sha, monkeypatch):
    """``--backend tensorrt`` where it cannot run: exit 5 for what the machine lacks, 3 for the engines."""
    spec = load_model_spec(model_copy)
    for p in engine_paths(spec).values():
        p.write_bytes(b"x")
    (model_copy / ENGINES_JSON).write_text(json.dumps(engines_meta(onnx_sha)))
    cases = [  # (machine, expected state, error class, words in the message)
        (fake_env(trt=None), EnginesState.TENSORRT_MISSING, EnvironmentMissing, "TensorRT is not installed"),
        (fake_env(cuda=None), EnginesState.CUDA_PYTHON_MISSING, EnvironmentMissing, "cuda-python is not installed"),
        (fake_env(gpu=None), EnginesState.NO_GPU, EnvironmentMissing, "no CUDA GPU"),
        (fake_env(gpu="NVIDIA H200"), EnginesState.STALE, ModelError, "NVIDIA H200"),
        (fake_env(trt="10.4.0"), EnginesState.STALE, ModelError, "TensorRT 10.3.0"),
    ]
    for env, state, error, words in cases:
        monkeypatch.setattr(platform, "detect", lambda env=env: env)
        assert engines_status(spec).state is state
        with pytest.raises(error) as e:
            choose_backend(spec, "tensorrt")
        assert type(e.value) is error and words in str(e.value) and "\n" not in str(e.value), (state, str(e.value))
        assert choose_backend(spec, "auto")[0] == "onnxruntime"
    # The machine is checked before the folder: without TensorRT, missing engines are not the point.
    (model_copy / ENGINES_JSON).unlink()
    monkeypatch.setattr(platform, "detect", lambda: fake_env(trt=None))
    with pytest.raises(EnvironmentMissing):
        choose_backend(spec, "tensorrt")
    monkeypatch.setattr(platform, "detect", lambda: fake_env())
    with pytest.raises(ModelError, match="no TensorRT engines"):
        choose_backend(spec, "tensorrt")
    with pytest.raises(UsageError):
        choose_backend(spec, "cuda")


@pytest.mark.slow
def test_track_with_tensorrt_backend_without_tensorrt_exits_5(tiny_model_dir, vtest_frames):
    if trt_skip_reason() is None or "TensorRT is not installed" not in trt_skip_reason():
        pytest.skip("TensorRT is installed here: the missing-TensorRT path cannot be exercised")
    proc = run_cli("track", vtest_frames, "--model", tiny_model_dir, "--box", "250,215,36,97",
                   "--backend", "tensorrt", "--max-frames", "1", timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    print(proc.stderr)
    assert proc.returncode == EnvironmentMissing.exit_code == 5, proc.stderr
    assert lines[-1].startswith("error: TensorRT is not installed: pip install 'sam2trt[trt]'"), lines


# ------------------------------------------------------------------ environment / CLI
@pytest.mark.slow
def test_build_engines_cli_without_tensorrt(tiny_model_dir):
    try:
        importlib.import_module("tensorrt")
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
    monkeypatch.setattr(platform, "detect", lambda: fake_env(gpu=None))  # TensorRT, no GPU
    with pytest.raises(EnvironmentMissing) as e:
        build_engines(model_copy, log=lambda s: None)
    assert str(e.value) == "no CUDA GPU found: build-engines must run on the target NVIDIA GPU"
    monkeypatch.setattr(platform, "detect", lambda: fake_env(gpu=None, trt=None))  # neither
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
    assert out[-1].startswith("track --backend auto: onnxruntime ("), out
    if trt_skip_reason() is not None and "TensorRT is not installed" in trt_skip_reason():
        assert out[-1].startswith("track --backend auto: onnxruntime (TensorRT is not installed: pip install"), out


def test_doctor_without_model_and_runner_import():
    lines = doctor_lines(None)
    machine = machine_lines()
    assert lines[:len(machine)] == machine and lines[len(machine)].startswith("OpenVINO"), lines
    assert lines[0].startswith("GPU") and any(line.startswith("TensorRT:") for line in lines)
    runner = tensorrt_backend.TensorRTRunner(tensorrt_backend.EngineFromPath("/nonexistent/image_encoder.engine"))
    assert runner.name == "image_encoder"
    if trt_skip_reason() and "TensorRT is not installed" in trt_skip_reason():
        with pytest.raises(EnvironmentMissing, match="TensorRT is not installed"):
            runner.__enter__()
    runner.__exit__(None, None, None)  # harmless when never entered


def test_detect_parses_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54.15'\n"
                    "echo 'NVIDIA A10, 8.6, 23028, 550.54.15'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(platform, "import_cudart", lambda: None)
    env = detect()
    assert env.gpus == [GpuInfo("NVIDIA H100 80GB HBM3", "9.0", 79.6), GpuInfo("NVIDIA A10", "8.6", 22.5)]
    assert env.driver_version == "550.54.15" and env.gpu_source == "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    env = detect()
    assert env.gpus == [] and env.driver_version is None
    assert machine_lines(env)[0].startswith("GPU: none found")

