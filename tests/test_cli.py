"""The sam2trt command: export output, a real track run, and every bad-input path."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from sam2trt.video import probe
from tests.helpers import run_cli

MODULES = ["image_encoder", "memory_attention", "mask_decoder", "memory_encoder"]


@pytest.fixture(scope="module")
def clip(vtest_clip6) -> pathlib.Path:
    """A 6-frame 768x576 mp4 made from the test frames."""
    return vtest_clip6


def listing(d: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def assert_one_line_error(proc, code, *words):
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


# ------------------------------------------------------------------------ export
@pytest.mark.slow
def test_export_writes_modules_and_verifies(tiny_export):
    model_dir, log = tiny_export
    for m in MODULES:
        assert (model_dir / f"{m}.onnx").stat().st_size > 1_000_000
        assert f"exported {m}.onnx" in log
    diffs = [line for line in log.splitlines() if "max|diff|=" in line]
    assert {line.split()[0] for line in diffs} == set(MODULES)
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["config"] == "sam2.1_hiera_t" and meta["image_size"] == 1024 and meta["num_maskmem"] == 7
    assert meta["feat_size"] == 64 and meta["hidden_dim"] == 256 and meta["mem_dim"] == 64
    assert meta["max_obj_ptrs_in_encoder"] == 16 and meta["opset"] == 17
    assert np.asarray(meta["constants"]["maskmem_tpos_enc"]).shape == (7, 64)
    assert len(meta["constants"]["no_obj_ptr"]) == 256
    assert meta["sigmoid_scale_for_mem_enc"] == 20.0 and meta["sigmoid_bias_for_mem_enc"] == -10.0
    assert len(meta["source"]["checkpoint_sha256"]) == 64
    for m in MODULES:
        assert len(meta["files"][m]["sha256"]) == 64
        assert max(meta["files"][m]["verify_max_abs_diff"].values()) < 1e-3


@pytest.mark.slow
def test_export_random_weights_says_so(tmp_path):
    proc = run_cli("export", "--config", "sam2.1_hiera_t", "--random-weights", "--seed", "3", "--no-verify",
                   "--out", tmp_path / "m", check=True)
    assert "RANDOM weights" in proc.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["source"] == {"random_weights": True, "seed": 3}
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary folder left behind


@pytest.mark.parametrize("args,code,words", [
    (["--config", "sam2.1_hiera_t", "--out", "OUT"], 2, ["--checkpoint", "--random-weights"]),
    (["--config", "nope", "--random-weights", "--out", "OUT"], 2, ["unknown config", "sam2.1_hiera_t"]),
    pytest.param(["--config", "sam2.1_hiera_t", "--checkpoint", "missing.pt", "--out", "OUT"], 3, ["missing.pt", "not found"],
                 marks=pytest.mark.slow),  # the checkpoint is looked for after torch and sam2 are imported
])
def test_export_errors(tmp_path, args, code, words):
    proc = run_cli("export", *[str(tmp_path / a) if a in ("OUT", "missing.pt") else a for a in args])
    assert_one_line_error(proc, code, *words)
    assert not (tmp_path / "OUT").exists()


@pytest.mark.slow
def test_export_rejects_checkpoint_of_wrong_shape(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"model": {"foo": torch.zeros(1)}}, tmp_path / "bad.pt")
    proc = run_cli("export", "--config", "sam2.1_hiera_t", "--checkpoint", tmp_path / "bad.pt", "--out", tmp_path / "o")
    assert_one_line_error(proc, 3, "does not match")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- track
@pytest.mark.slow
def test_track_writes_all_outputs(tiny_model_dir, clip, tmp_path):
    out, masks, js = tmp_path / "masked.mp4", tmp_path / "masks", tmp_path / "track.jsonl"
    proc = run_cli("track", clip, "--model", tiny_model_dir, "--box", "250,215,36,97", "--box", "636,238,50,85",
                   "--prompt-frame", "1", "--max-frames", "3", "--direction", "forward", "--out", out, "--masks-dir",
                   masks, "--json", js, "--backend", "auto", check=True)
    assert "backend: onnxruntime" in proc.stderr
    info = probe(out)
    # frame 0 (before the prompt frame) is in the overlay unmasked, then 3 tracked frames
    assert (info.width, info.height, info.num_frames) == (768, 576, 4)
    assert abs(info.fps - 10.0) < 1e-6
    assert listing(masks) == ["00001.png", "00002.png", "00003.png"]
    png = Image.open(masks / "00002.png")
    assert png.mode == "P" and png.size == (768, 576)
    assert set(np.unique(np.asarray(png))) <= {0, 1, 2} and (np.asarray(png) > 0).any()
    lines = [json.loads(line) for line in js.read_text().splitlines()]
    assert [r["frame"] for r in lines] == [1, 2, 3]
    for r in lines:
        assert [o["id"] for o in r["objects"]] == [1, 2]
        for o in r["objects"]:
            assert set(o) == {"id", "box", "area", "score", "present"}
            assert o["present"] == (o["score"] > 0)
            if o["area"]:
                x, y, w, h = o["box"]
                assert 0 <= x < 768 and 0 <= y < 576 and w > 0 and h > 0
    assert sorted(os.listdir(tmp_path)) == ["masked.mp4", "masks", "track.jsonl"]  # no temporaries left


BAD_TRACK = [
    # (arguments after the video, video kind, exit code, words in the message)
    (["--box", "10,10,20"], "clip", 2, ["malformed box", "x,y,w,h"]),
    (["--box", "10,10,0,20"], "clip", 2, ["empty box"]),
    (["--box", "700,500,100,100"], "clip", 3, ["outside the 768x576 frame"]),
    (["--box", "-5,10,20,20"], "clip", 3, ["outside"]),
    (["--box", "10,10,20,20", "--prompt-frame", "6"], "clip", 3, ["past the end", "6 frames"]),
    ([], "clip", 2, ["--box"]),
    (["--box", "10,10,20,20"], "missing", 3, ["does not exist"]),
    (["--box", "10,10,20,20"], "garbage", 3, []),
    (["--box", "10,10,20,20"], "empty_dir", 3, ["contains no"]),
    (["--box", "10,10,20,20", "--backend", "cuda"], "clip", 2, ["unknown backend"]),
    (["--box", "10,10,20,20", "--direction", "sideways"], "clip", 2, ["--direction 'sideways'", "both"]),
    (["--box", "1@3:250,215,36,97", "--box", "2@4:636,238,50,85", "--direction", "backward"], "clip", 2,
     ["object 2 is first prompted on frame 4", "--direction both"]),
    (["--box", "1@3:250,215,36,97", "--point", "1@5:260,250,0", "--max-frames", "2"], "clip", 2,
     ["prompt on frame 5 is not reached", "--max-frames 3"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,kind,code,words", BAD_TRACK)
def test_track_bad_input(tiny_model_dir, clip, tmp_path, args, kind, code, words):
    video = {"clip": clip, "missing": tmp_path / "nope.mp4", "garbage": tmp_path / "garbage.mp4",
             "empty_dir": tmp_path / "frames"}[kind]
    if kind == "garbage":
        video.write_bytes(b"this is not a video" * 100)
    if kind == "empty_dir":
        video.mkdir()
    outs = tmp_path / "outs"
    proc = run_cli("track", video, "--model", tiny_model_dir, *args, "--out", outs / "o.mp4",
                   "--masks-dir", outs / "m", "--json", outs / "t.jsonl")
    assert_one_line_error(proc, code, *words)
    assert not outs.exists()


@pytest.mark.slow
@pytest.mark.parametrize("breakage,words", [
    ("no_dir", ["not found", "sam2trt export"]),
    ("no_json", ["model.json is missing"]),
    ("no_onnx", ["memory_attention.onnx is missing"]),
    ("truncated_onnx", ["mask_decoder.onnx", "sha256 differs"]),
    ("bad_json", ["cannot read"]),
])
def test_track_bad_model_dir(tiny_model_dir, clip, tmp_path, breakage, words):
    model = tmp_path / "model"
    if breakage != "no_dir":
        model.mkdir()
        for f in tiny_model_dir.iterdir():
            (model / f.name).symlink_to(f)
    if breakage == "no_json":
        (model / "model.json").unlink()
    elif breakage == "no_onnx":
        (model / "memory_attention.onnx").unlink()
    elif breakage == "truncated_onnx":
        (model / "mask_decoder.onnx").unlink()
        (model / "mask_decoder.onnx").write_bytes((tiny_model_dir / "mask_decoder.onnx").read_bytes()[:100_000])
    elif breakage == "bad_json":
        (model / "model.json").unlink()
        (model / "model.json").write_text("{not json")
    outs = tmp_path / "outs"
    proc = run_cli("track", clip, "--model", model, "--box", "250,215,36,97", "--out", outs / "o.mp4",
                   "--json", outs / "t.jsonl", "--backend", "onnxruntime")
    assert_one_line_error(proc, 3, *words)
    assert not outs.exists()


def test_help_lists_commands():
    proc = run_cli("--help", check=True)
    for cmd in ("export", "track", "build-engines", "doctor", "download"):
        assert cmd in proc.stdout


@pytest.mark.slow
def test_bench_prints_measurements(tiny_model_dir):
    proc = run_cli("bench", "--model", tiny_model_dir, "--backend", "onnxruntime", "--frames", "2", "--json", check=True)
    r = json.loads(proc.stdout)
    assert r["frames"] == 2 and r["backend"] == "onnxruntime" and r["fps"] > 0
    assert 0 <= r["outside_inference_share"] < 1 and r["peak_rss_mib"] > 100
    assert r["modules"]["image_encoder"]["calls"] == 2 and r["modules"]["memory_attention"]["calls"] == 1
    for m in r["modules"].values():
        assert m["median_ms"] > 0 and m["p90_ms"] >= m["median_ms"]
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
