"""``sam2trt bench --host-only``: the real pipeline with instant modules, next to a decode + re-encode floor.

Runs without torch and without ONNX files (the null backend and the built-in
sam2.1_hiera_t shapes); the numbers are printed, never asserted as speeds.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli


@pytest.fixture(scope="module")
def clip(vtest_clip6):
    return vtest_clip6


@pytest.mark.parametrize("outputs,objects", [("out,json", 1), ("out,json,masks_dir,coco", 2)])
def test_host_only_report_fields(clip, outputs, objects):
    proc = run_cli("bench", "--host-only", "--video", clip, "--frames", "5", "--objects", objects,
                   "--outputs", outputs, "--json", check=True)
    r = json.loads(proc.stdout)
    assert r["frames"] == 5 and r["objects"] == objects and r["outputs"] == outputs.split(",")
    assert (r["width"], r["height"]) == (768, 576)
    assert r["fps"] > 0 and r["wall_s"] > 0 and r["cpu_ms_per_frame"] > 0 and r["peak_rss_mib"] > 50
    assert 0 < r["core_ms_per_frame"] <= r["serial_ms_per_frame"]
    assert r["null_module_ms_per_frame"] >= 0
    stages = r["stages_cpu_ms_per_frame"]
    for stage in ("decode", "postprocess", *(f"sink:{o}" for o in outputs.split(",")), "codec threads and other"):
        assert stage in stages, stages
    assert stages["sink:out"] > 0
    floor = r["floor"]
    assert floor["frames"] == 5 and floor["wall_s"] > 0 and floor["cpu_s"] > 0
    assert r["wall_vs_floor"] > 0 and r["cpu_vs_floor"] > 0
    human = run_cli("bench", "--host-only", "--video", clip, "--frames", "2", check=True).stdout
    assert "track / floor" in human and "tracker core" in human


def test_host_only_usage_errors(clip):
    for args, words in ([["--host-only", "--video", clip, "--outputs", "out,gif"], "--outputs"],
                        [["--host-only"], "--video"], [["--frames", "2"], "--model"]):
        proc = run_cli("bench", *args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and words in proc.stderr, proc.stderr
