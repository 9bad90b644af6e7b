"""sam2trt's TensorRT and cuda-python code against the real Python bindings, on CPU.

For each stack -- TensorRT 10.13 bindings with cuda-bindings 12.9, TensorRT
11.4 bindings with cuda-bindings 13.5 -- the pinned wheels are installed into
``.cache/trt-api`` with stub TensorRT libraries (:mod:`tests.real_api`, about
5 s the first time, cached after), and :mod:`tests.trt_api_probe` runs in a
subprocess of its own (about 1.5 s) and reports what it found. Skipped, with
the reason, where there is no C compiler or pip cannot reach PyPI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.real_api import STACKS, Unavailable, prepare


@pytest.fixture(scope="session")
def api_report():
    """``get(stack name) -> report dict`` of :mod:`tests.trt_api_probe` (cached per session)."""
    cache: dict = {}

    def get(name: str) -> dict:
        if name not in cache:
            try:
                env = prepare(STACKS[name], log=print)
            except Unavailable as e:
                cache[name] = e
            else:
                proc = subprocess.run([sys.executable, "-m", "tests.trt_api_probe"], capture_output=True, text=True,
                                      env={**os.environ, **env}, timeout=300)
                assert proc.returncode == 0, f"probe failed for {name}:\n{proc.stderr[-4000:]}"
                cache[name] = json.loads(proc.stdout)
        if isinstance(cache[name], Unavailable):
            pytest.skip(f"real {name} bindings unavailable here: {cache[name]}")
        return cache[name]

    return get


stacks = pytest.mark.parametrize("stack", sorted(STACKS))


@stacks
def test_the_real_bindings_import_and_fail_cleanly_without_the_library(api_report, stack):
    r = api_report(stack)
    major = STACKS[stack].trt_major
    assert r["tensorrt_version"].split(".")[0] == str(major)
    assert r["logger"] == "Logger"
    assert r["factories"] == {"Builder": "pybind11::init(): factory function returned nullptr",
                              "Runtime": "pybind11::init(): factory function returned nullptr"}
    # sam2trt turns the bare TypeError into a one-line RuntimeFailure (exit 4).
    for key in ("project_builder_error", "project_runtime_error"):
        assert "TensorRT could not create its" in r[key] and "sam2trt doctor" in r[key] and "\n" not in r[key]


@stacks
def test_every_tensorrt_use_exists_and_is_called_as_its_signature_allows(api_report, stack):
    r = api_report(stack)
    assert r["source_problems"] == []
    uses = set(r["trt_uses"])
    # The walk reached both the builder and the runner (a walk that found nothing would pass vacuously).
    for name in ("Builder.create_network", "OnnxParser.parse_from_file", "IBuilderConfig.set_timing_cache",
                 "IBuilderConfig.clear_flag", "BuilderFlag.TF32",
                 "IOptimizationProfile.set_shape", "Builder.build_serialized_network",
                 "Runtime.deserialize_cuda_engine", "ICudaEngine.get_tensor_profile_shape",
                 "IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
                 "IExecutionContext.execute_async_v3"):
        assert name in uses, name


@stacks
def test_the_checks_catch_broken_code(api_report, stack):
    """The walk flags every planted mistake (and nothing else); the stand-in check flags a bad fake."""
    s = api_report(stack)["self_check"]
    assert s["missed"] == [] and s["unexpected"] == [], s
    assert len(s["fake_problems"]) == 2, s["fake_problems"]


@stacks
def test_stand_ins_have_nothing_the_real_api_lacks(api_report, stack):
    r = api_report(stack)
    assert r["fake_trt_problems"] == []
    assert r["fake_cudart_problems"] == []


@stacks
def test_both_versions_build_strongly_typed_networks(api_report, stack):
    """TensorRT 10.13 has STRONGLY_TYPED (and still BuilderFlag.FP16); 11.4 has only STRONGLY_TYPED.

    So sam2trt builds strongly typed networks from the mixed-precision ONNX on
    both, with no builder precision flag: the only ``BuilderFlag`` the source
    walk above finds is ``TF32``, which both versions have (value 6) and which
    the preprocessing engines clear (``IBuilderConfig.clear_flag``) to keep
    PIL's rounding.
    """
    r = api_report(stack)
    assert r["has_strongly_typed"] is True
    assert r["has_fp16_flag"] is (STACKS[stack].trt_major == 10)
    assert r["strongly_typed_bit"] == (1 if STACKS[stack].trt_major == 10 else 0)  # renumbered in 11
    assert r["network_flags"] == 1 << r["strongly_typed_bit"]
    assert r["tf32_flag"] == 6 and r["has_clear_flag"] is True
    assert {u for u in r["trt_uses"] if u.startswith("BuilderFlag")} == {"BuilderFlag", "BuilderFlag.TF32"}


@stacks
def test_every_cudart_call_runs_against_the_real_module(api_report, stack):
    """Each cuda-python function the source calls was called for real with the project's arguments."""
    r = api_report(stack)
    run = r["cudart_run"]
    assert run["errors"] == []
    assert set(r["cudart_calls_in_source"]) <= set(run["calls"]), set(r["cudart_calls_in_source"]) - set(run["calls"])
    no_driver = "cudaErrorInsufficientDriver"  # error 35: the runtime found no driver
    for name, results in run["calls"].items():
        want = {"cudaSuccess"} if name in ("cudaRuntimeGetVersion", "cudaDriverGetVersion", "cudaGetErrorString") \
            else {no_driver}
        assert set(results) == want, (name, results)
    assert run["real_stream_error"] == ("CUDA cudaStreamCreate failed "
                                        "(CUDA driver version is insufficient for CUDA runtime version)")
    assert run["detect"]["gpus"] == 0 and run["detect"]["cuda_runtime_version"] == \
        ".".join(r["cuda_bindings_version"].split(".")[:2])
    assert run["detect_one_device_gpus"] == 0  # the device whose properties fail is skipped


@stacks
def test_the_preprocess_runner_runs_on_the_real_cuda_module(api_report, stack):
    """Both preprocessing variants ran (fake engines executing the ONNX graph) with every CUDA call made on
    the real module first; weights were uploaded once per frame size and the result matches NumPy."""
    from sam2trt.tracker.processing import pil_resizes_vertically_first

    pre = api_report(stack)["cudart_run"]["preprocess"]
    assert pre["20x30"]["vertical_first"] is False
    assert pre["40x12"]["vertical_first"] is pil_resizes_vertically_first(40, 12, 16, 16)  # True on Pillow >= 13
    for size in ("20x30", "40x12"):
        assert pre[size]["shape"] == [1, 3, 16, 16]
        assert pre[size]["max_units"] <= 1.0 + 1e-3, (size, pre[size])  # a float32 tie flip at most
    assert pre["cached_sizes"] == 2 and pre["uploads"] == 4  # 20x30 twice: its weights were reused
