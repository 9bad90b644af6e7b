"""What a bad-input probe found (issue "No traceback, no lost file"), one test group per numbered item.

Every test uses real files (the vtest frames, clips made from them, the
exported tiny model). Tracking runs in-process on one shared set of runners
where it can, and for 1-3 frames; command-line behaviour runs the real CLI.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib

import numpy as np
import pytest
from PIL import Image

from sam2trt import cli
from sam2trt.batch import expand
from sam2trt.errors import Interrupted, ModelError, RuntimeFailure, UsageError
from sam2trt.fileio import PARTIAL, create_temp, write_marker
from sam2trt.model_spec import load_model_spec
from sam2trt.pipeline import TrackJob, run_track
from sam2trt.runtime import ModuleRunners
from sam2trt.tracker.prompts import ObjectPrompt
from sam2trt.validation import validate_job
from sam2trt.video import probe
from tests.helpers import check_partial, decodable, run_cli

ROOT = pathlib.Path(__file__).parent.parent
BOX = (250.0, 215.0, 286.0, 312.0)  # corners of 250,215,36,97


def one_line(proc, code, *words):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def tree(d: pathlib.Path) -> dict:
    """``{relative path: sha256 or 'dir' or 'link->target'}`` of everything below ``d``."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            out[rel] = f"link->{os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def model(tiny_runners):
    """``(spec, runners)``: the tiny model opened once for the in-process runs."""
    return tiny_runners


@pytest.fixture()
def clip(vtest_clip6) -> pathlib.Path:
    """A 6-frame 768x576 mp4 of the test frames."""
    return vtest_clip6


def job_in(d: pathlib.Path, video, **kw) -> TrackJob:
    return TrackJob(video=str(video), prompts=kw.pop("prompts", [ObjectPrompt(1, 0, box=BOX)]),
                    out=str(d / "o.mp4"), masks_dir=str(d / "m"), json=str(d / "t.jsonl"), coco=str(d / "c.json"),
                    **kw)


# ------------------------------------------------------------------- 1. usage errors
@pytest.mark.parametrize("args,words", [
    ([], ["no command given", "sam2trt --help"]),
    (["track"], ["missing option '--model'"]),
    (["track", "x.mp4", "--box", "1,1,5,5"], ["missing option '--model'"]),
    (["track", "x.mp4", "--model", "M", "--box", "1,1,5,5", "--max-frames", "abc"], ["--max-frames"]),
    (["track", "x.mp4", "--model", "M", "--nope"], ["no such option", "--nope"]),
    (["nope"], ["no such command", "nope"]),
    (["track", "x.mp4", "--model", "M", "--box", "1,1,5,5", "--threads", "0"], ["--threads 0", "1.."]),
    (["track", "x.mp4", "--model", "M", "--box", "1,1,5,5", "--threads", "-1"], ["--threads -1"]),
    (["track", "x.mp4", "--model", "M", "--box", "1,1,5,5", "--threads", "1000"], ["--threads 1000", "1.."]),
    (["track", "x.mp4", "--model", "M", "--box", "1,1,5,5", "--crf", "99"], ["--crf 99"]),
    (["track", "x.mp4", "--model", "M", "--box", "1,1,5,5", "--preset", "warp"], ["--preset", "veryslow"]),
])
def test_usage_errors_are_one_line_exit_2(args, words):
    one_line(run_cli(*args), 2, *words)


def _imported_distributions() -> set[str]:
    """Top-level third-party modules imported anywhere in the sam2trt package."""
    names = set()
    for path in (ROOT / "sam2trt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("sam2trt", "__future__")}


# import name -> distribution name, where they differ
DIST = {"cv2": "opencv-python-headless", "PIL": "pillow", "av": "av", "cuda": "cuda-python",
        "sam2": "sam2", "tensorrt": "tensorrt", "yaml": "pyyaml", "hydra": "hydra-core"}


def test_every_imported_dependency_is_declared():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!\[ ;]", d)[0].lower() for d in meta["dependencies"]}
    for extra in meta["optional-dependencies"].values():
        declared |= {re.split(r"[<>=!\[ ;]", d)[0].lower() for d in extra}
    declared.add("sam2")  # installed by hand with --no-deps (README), imported only by `export`
    missing = sorted(n for n in _imported_distributions() if DIST.get(n, n).lower() not in declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert "click" not in _imported_distributions()  # typer bundles its own click


# ------------------------------------------------------------------- 2. inputs are sacred
@pytest.mark.slow
def test_output_onto_the_input_video_is_refused(tiny_model_dir, clip, tmp_path):
    video = tmp_path / "c.mp4"
    shutil.copy(clip, video)
    (tmp_path / "link.mp4").symlink_to(video)
    os.link(video, tmp_path / "hard.mp4")
    before = tree(tmp_path)
    for out in (video, tmp_path / "link.mp4", tmp_path / "hard.mp4"):
        proc = run_cli("track", video, "--model", tiny_model_dir, "--box", "10,10,50,50", "--max-frames", "2",
                       "--out", out)
        one_line(proc, 2, "is an input")
    proc = run_cli("track", video, "--model", tiny_model_dir, "--box", "10,10,50,50", "--json", video)
    one_line(proc, 2, "is an input")
    assert tree(tmp_path) == before


def test_outputs_among_input_frames_are_refused(vtest_frames, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(vtest_frames, frames)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.ones((10, 10), np.uint8), ((100, 466), (100, 658)))).save(mask)
    before = tree(tmp_path)
    prompt = [ObjectPrompt(1, 0, box=BOX)]
    for kw, words in [({"masks_dir": str(frames)}, "replace the input frame folder"),
                      ({"masks_dir": str(tmp_path)}, "replace the input frame folder"),
                      ({"json": str(frames / "t.jsonl")}, "among the input frames"),
                      ({"out": str(frames / "o.mp4")}, "among the input frames"),
                      ({"coco": str(mask)}, "is an input"),
                      ({"masks_dir": str(tmp_path / "m"), "json": str(tmp_path / "m" / "t.jsonl")}, "inside --masks-dir")]:
        job = TrackJob(str(frames), prompt, max_frames=1, input_files=(str(mask),), **kw)
        with pytest.raises(UsageError, match=words):
            validate_job(job)
    # a subfolder of the input folder is allowed: the reader does not look into it
    validate_job(TrackJob(str(frames), prompt, masks_dir=str(frames / "masks"), json=str(frames / "sub" / "t.jsonl")))
    assert tree(tmp_path) == before


# ------------------------------------------------------------------- 3. earlier results are sacred
class FailingDecoder:
    """Wraps the mask decoder runner and fails every call (a backend error on frame 0)."""

    name = "mask_decoder"

    def infer(self, feed, keep=()):
        raise RuntimeError("mask decoder exploded")


@pytest.mark.slow
def test_failing_run_leaves_earlier_outputs_untouched(model, tiny_model_dir, vtest_frames, tmp_path):
    spec, runners = model
    d = tmp_path / "o"
    run_track(job_in(d, vtest_frames, max_frames=3), spec, runners)
    before = tree(d)
    assert sorted(p.name for p in (d / "m").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    # the case: a module file swapped for another is caught before anything runs
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "mask_decoder.onnx").unlink()
    (broken / "mask_decoder.onnx").symlink_to(tiny_model_dir / "memory_encoder.onnx")
    proc = run_cli("track", vtest_frames, "--model", broken, "--box", "250,215,36,97", "--out", d / "o.mp4",
                   "--masks-dir", d / "m", "--json", d / "t.jsonl", "--coco", d / "c.json", "--quiet")
    one_line(proc, 3, "mask_decoder.onnx", "sha256")
    # a backend failing on the first frame: nothing is replaced
    bad = ModuleRunners(runners.image_encoder, runners.memory_attention, FailingDecoder(), runners.memory_encoder,
                        backend="onnxruntime")
    with pytest.raises(RuntimeFailure, match="mask decoder exploded"):
        run_track(job_in(d, vtest_frames, max_frames=3), spec, bad)
    assert tree(d) == before


@pytest.mark.slow
def test_failure_mid_video_replaces_the_mask_folder_whole(model, vtest_frames, tmp_path):
    spec, runners = model
    d = tmp_path / "o"
    run_track(job_in(d, vtest_frames, max_frames=3), spec, runners)  # frames 0, 1, 2
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(sorted(vtest_frames.iterdir())[:3]):
        img = Image.open(f)
        (img.resize((640, 480)) if i == 2 else img).save(frames / f"{i:05d}.jpg")
    with pytest.raises(RuntimeFailure, match="frame 2"):
        run_track(job_in(d, frames), spec, runners)
    check_partial(d, 0, 2, 0)  # exactly this run's two frames, no PNG of the earlier run
    assert sorted(p.name for p in d.glob(".*.incomplete")) == [".c.json.incomplete", ".m.incomplete",
                                                               ".o.mp4.incomplete", ".t.jsonl.incomplete"]


# ------------------------------------------------------------------- 4. temporary names
@pytest.mark.slow
def test_planted_symlinks_are_never_followed(model, vtest_frames, tmp_path):
    spec, runners = model
    d = tmp_path / "o"
    d.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    pid = os.getpid()
    for name in (f".t.partial-{pid}.jsonl", f".o.partial-{pid}.mp4", f".c.partial-{pid}.json", ".t.jsonl.incomplete",
                 ".o.mp4.incomplete", ".m.incomplete", ".c.json.incomplete"):
        (d / name).symlink_to(victim)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(sorted(vtest_frames.iterdir())[:2]):
        img = Image.open(f)
        (img.resize((640, 480)) if i == 1 else img).save(frames / f"{i:05d}.jpg")
    with pytest.raises(RuntimeFailure):  # fails on frame 1: partial outputs and markers are written
        run_track(job_in(d, frames), spec, runners)
    assert victim.read_text() == "precious"
    for name in ("o.mp4", "t.jsonl", "c.json", "m", ".t.jsonl.incomplete", ".m.incomplete"):
        assert not (d / name).is_symlink() and (d / name).exists(), name


def test_temporaries_are_exclusive_and_private(tmp_path):
    fd, path = create_temp(tmp_path / "t.jsonl")
    os.close(fd)
    assert path.parent == tmp_path and path.name.startswith(f".t{PARTIAL}") and path.suffix == ".jsonl"
    assert path.stat().st_mode & 0o777 == 0o600
    fd2, path2 = create_temp(tmp_path / "t.jsonl")
    os.close(fd2)
    assert path2 != path
    victim = tmp_path / "victim"
    victim.write_text("x")
    (tmp_path / ".m.incomplete").symlink_to(victim)
    write_marker(tmp_path / ".m.incomplete")
    assert victim.read_text() == "x" and not (tmp_path / ".m.incomplete").is_symlink()


# ------------------------------------------------------------------- 5. threads and signals
class BlockingEncoder:
    """An image encoder whose call never returns unless cancelled (a very long module call)."""

    name = "image_encoder"

    def __init__(self, honour_cancel: bool):
        self.honour_cancel = honour_cancel
        self.started = threading.Event()
        self.stop = threading.Event()

    def cancel(self, flag=True):
        if flag and self.honour_cancel:
            self.stop.set()

    def infer(self, feed, keep=()):
        self.started.set()
        self.stop.wait(300)
        raise RuntimeError("cancelled")


@pytest.mark.slow
@pytest.mark.parametrize("honour_cancel", [True, False], ids=["cancellable", "stuck"])
def test_signal_during_a_long_module_call_stops_promptly(model, vtest_frames, tmp_path, monkeypatch, honour_cancel):
    import sam2trt.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CANCEL_GRACE_S", 1.0)
    spec, runners = model
    enc = BlockingEncoder(honour_cancel)
    slow = ModuleRunners(enc, runners.memory_attention, runners.mask_decoder, runners.memory_encoder,
                         backend="onnxruntime")
    threading.Thread(target=lambda: (enc.started.wait(60), os.kill(os.getpid(), signal.SIGTERM)), daemon=True).start()
    d = tmp_path / "o"
    t0 = time.monotonic()
    with pytest.raises(Interrupted, match="after 0 frames"):
        run_track(job_in(d, vtest_frames, max_frames=2), spec, slow)
    assert time.monotonic() - t0 < 30
    enc.stop.set()
    assert not d.exists() or not [p for p in d.rglob("*") if PARTIAL in p.name]
    assert not (d / "o.mp4").exists()  # nothing tracked: nothing moved into place


@pytest.mark.slow
def test_sigint_then_sigterm_is_130_with_one_line(tiny_model_dir, vtest_frames, tmp_path):
    d = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "sam2trt.cli", "track", str(vtest_frames), "--model",
                             str(tiny_model_dir), "--box", "250,215,36,97", "--json", str(d / "t.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(d.glob(f".t{PARTIAL}*.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [err.strip().splitlines()[-1]]
    assert "interrupted" in err and "Traceback" not in err
    assert not [p for p in d.rglob("*") if PARTIAL in p.name]


# ------------------------------------------------------------------- 6. the last decodable frames
@pytest.mark.slow
def test_last_decodable_frames_of_a_truncated_video_track_cleanly(model, clip16, tmp_path):

    spec, runners = model
    data = clip16  # the index up front (faststart), so a cut file still opens
    video = tmp_path / "cut.mp4"
    for keep in (0.9, 0.8, 0.7, 0.6):  # cut until the container lists more frames than decode
        video.write_bytes(data[: int(len(data) * keep)])
        n = decodable(video)
        listed = probe(video).num_frames
        if 2 <= n and listed and n < listed - 1:
            break
    else:
        pytest.skip("could not make a truncated clip with at least two decodable frames")
    d = tmp_path / "o"
    s = run_track(job_in(d, video, prompts=[ObjectPrompt(1, n - 2, box=BOX)], max_frames=2), spec, runners)
    assert s.frames == 2 and s.status == "ok"
    check_partial(d, n - 2, 2, n - 2)
    assert not list(d.glob(".*.incomplete"))


# ------------------------------------------------------------------- 7. caught up front
@pytest.mark.slow
@pytest.mark.parametrize("extra,code,words", [
    (["--box", "250,215,36,97", "--box", "2@3:636,238,50,85", "--max-frames", "2"], 2, ["frame 3", "--max-frames 4"]),
    (["--box", "250,215,36,97", "--out", "OUT/o.gif"], 2, [".gif", ".mp4"]),
    (["--box", "250,215,36,97", "--out", "OUT/o.webm"], 2, [".webm"]),
    (["--box", "250,215,36,97", "--out", "OUT/o"], 2, ["(none)"]),
    (["--box", "250,215,36,97", "--json", "/sys/sam2trt-test/t.jsonl"], 3, ["cannot write in /sys"]),
    (["--box", "250,215,36,97", "--masks-dir", "/sys/sam2trt-test/m"], 3, ["cannot write in /sys"]),
    (["--box", "250,215,36,97", "--out", "/sys/sam2trt-test/o.mp4"], 3, ["cannot write in /sys"]),
    (["--box", "250,215,36,97", "--out", "FILE/o.mp4"], 3, ["is a file, not a folder"]),
])
def test_bad_outputs_are_caught_before_anything_runs(tiny_model_dir, vtest_frames, tmp_path, extra, code, words):
    (tmp_path / "f").write_text("a file")
    outs = tmp_path / "outs"
    extra = [a.replace("OUT", str(outs)).replace("FILE", str(tmp_path / "f")) for a in extra]
    proc = run_cli("track", vtest_frames, "--model", tiny_model_dir, "--masks-dir", outs / "m", *extra)
    one_line(proc, code, *words)
    assert not outs.exists() and sorted(os.listdir(tmp_path)) == ["f"]


# ------------------------------------------------------------------- 8. model.json structure and module files
@pytest.mark.slow
@pytest.mark.parametrize("edit,words", [
    (lambda m: [1, 2, 3], ["not a JSON object"]),
    (lambda m: {k: v for k, v in m.items() if k != "constants"}, ["'constants'"]),
    (lambda m: {**m, "image_size": "big"}, ["'image_size' must be an int"]),
    (lambda m: {**m, "constants": {**m["constants"], "no_mem_embed": [1.0, 2.0]}}, ["no_mem_embed", "shape"]),
    (lambda m: {**m, "files": {}}, ["files.image_encoder"]),
])
def test_malformed_model_json_is_one_line_exit_3(tiny_model_dir, vtest_frames, model_copy, tmp_path, edit, words):
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    (model_copy / "model.json").unlink()
    (model_copy / "model.json").write_text(json.dumps(edit(meta)))
    proc = run_cli("track", vtest_frames, "--model", model_copy, "--box", "250,215,36,97", "--json",
                   tmp_path / "o" / "t.jsonl")
    one_line(proc, 3, *words)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_module_names_are_checked_at_load(tiny_model_dir, model_copy):
    """A swapped file whose sha256 model.json was edited to match still fails at load, on its names."""
    from sam2trt.runtime import open_runners

    meta = json.loads((tiny_model_dir / "model.json").read_text())
    meta["files"]["mask_decoder"]["sha256"] = meta["files"]["memory_encoder"]["sha256"]
    (model_copy / "model.json").unlink()
    (model_copy / "model.json").write_text(json.dumps(meta))
    (model_copy / "mask_decoder.onnx").unlink()
    (model_copy / "mask_decoder.onnx").symlink_to(tiny_model_dir / "memory_encoder.onnx")
    spec = load_model_spec(model_copy)
    with pytest.raises(ModelError, match="mask_decoder.onnx has inputs"):
        with open_runners(spec, "onnxruntime"):
            pass


# ------------------------------------------------------------------- 9. exit codes (the README's table, row by row)
@pytest.mark.slow
def test_exit_0_ok_and_2_usage(tiny_model_dir, clip, tmp_path):
    proc = run_cli("track", clip, "--model", tiny_model_dir, "--box", "250,215,36,97", "--prompt-frame", "3",
                   "--max-frames", "1", "--json", tmp_path / "t.jsonl", "--quiet")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for bad in (["--max-frames", "0"], ["--prompt-frame", "-1"]):
        one_line(run_cli("track", clip, "--model", tiny_model_dir, "--box", "250,215,36,97", *bad), 2, bad[0])


def test_exit_1_unexpected_error_is_one_line(monkeypatch, capsys):
    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "plan_jobs", boom)  # the name the CLI calls (sam2trt.batch.plan_jobs)
    assert cli.main(["track", "x.mp4", "--model", "M", "--box", "1,1,5,5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unexpected ZeroDivisionError: a bug")


@pytest.mark.slow
def test_exit_3_input_and_4_runtime(tiny_model_dir, vtest_frames, tmp_path):
    one_line(run_cli("track", tmp_path / "nope.mp4", "--model", tiny_model_dir, "--box", "1,1,5,5"), 3, "does not exist")
    one_line(run_cli("doctor", "--model", tmp_path / "nope"), 3, "not found")
    frames = tmp_path / "frames"  # frame 2 has another size: decoding stops there
    frames.mkdir()
    for i, f in enumerate(sorted(vtest_frames.iterdir())[:3]):
        img = Image.open(f)
        (img.resize((640, 480)) if i == 2 else img).save(frames / f"{i:05d}.jpg")
    proc = run_cli("track", frames, "--model", tiny_model_dir, "--box", "250,215,36,97", "--prompt-frame", "1",
                   "--json", tmp_path / "t.jsonl", "--quiet")
    one_line(proc, 4, "frame 2")


@pytest.mark.slow
def test_exit_5_backend_tensorrt_without_tensorrt(tiny_model_dir, clip, tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        importlib.import_module("tensorrt")
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    proc = run_cli("track", clip, "--model", tiny_model_dir, "--box", "250,215,36,97", "--backend", "tensorrt",
                   "--json", tmp_path / "t.jsonl")
    one_line(proc, 5, "TensorRT")
    assert not (tmp_path / "t.jsonl").exists()


@pytest.mark.slow
def test_closed_stdout_under_json_summary_is_one_line(tiny_model_dir, clip, tmp_path):
    r, w = os.pipe()
    os.close(r)  # `sam2trt track ... --json-summary | true`: the reader is gone
    proc = subprocess.run([sys.executable, "-m", "sam2trt.cli", "track", str(clip), "--model", str(tiny_model_dir),
                           "--box", "250,215,36,97", "--prompt-frame", "3", "--max-frames", "1",
                           "--direction", "forward", "--json", str(tmp_path / "t.jsonl"),
                           "--json-summary", "--quiet"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=600)
    os.close(w)
    one_line(proc, 4, "standard output was closed")
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 1  # the job itself completed


# ------------------------------------------------------------------- 10. smaller ones
@pytest.mark.slow
def test_all_zero_mask_is_refused(tiny_model_dir, clip, tmp_path):
    Image.fromarray(np.zeros((576, 768), np.uint8)).save(tmp_path / "zero.png")
    proc = run_cli("track", clip, "--model", tiny_model_dir, "--mask", tmp_path / "zero.png", "--json", tmp_path / "t.jsonl")
    one_line(proc, 3, "zero.png is empty")


def test_output_patterns_are_names_only(tmp_path):
    with pytest.raises(UsageError, match="bad output pattern"):
        expand("out/{stem.__class__}.mp4", "a.mp4", 0)
    with pytest.raises(UsageError, match="bad output pattern"):
        expand("out/{stem!r}.mp4", "a.mp4", 0)
    (tmp_path / "a" / "sub").mkdir(parents=True)
    tricky = str(tmp_path / "a" / "sub" / "..")
    assert expand(str(tmp_path / "out" / "{stem}"), tricky, 0) == str(tmp_path / "out" / "a")
    assert expand("out/{index:03d}_{name}", "v/clip.mp4", 7) == "out/007_clip.mp4"
