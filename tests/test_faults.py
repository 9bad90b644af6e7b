"""Faults during tracking, on real files: what was processed before the fault stays valid.

Each run tracks 1-3 frames (CPU tracking costs seconds per frame): faults are
placed just after a late ``prompt_frame`` (frames before it are decoded and
copied to the overlay, not tracked). In-process runs share one set of runners;
SIGINT/SIGTERM run the real CLI in a subprocess. Also: property tests of the
prompt syntax.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sam2trt.errors import RuntimeFailure, UsageError
from sam2trt.pipeline import TrackJob, run_track
from sam2trt.tracker.prompts import ObjectPrompt, build_prompts, parse_box, split_prompt_prefix
from sam2trt.video import probe
from tests.helpers import check_coco, check_partial, decodable

BOX = (250.0, 215.0, 286.0, 312.0)  # corners of 250,215,36,97


@pytest.fixture()
def model(tiny_runners):
    """``(spec, runners)``: the tiny model opened once for the in-process runs."""
    return tiny_runners


def outputs_of(d: pathlib.Path) -> TrackJob:
    return TrackJob(video="", prompts=[], out=str(d / "o.mp4"), masks_dir=str(d / "m"), json=str(d / "t.jsonl"),
                    coco=str(d / "c.json"))


def run(model, job, d):
    spec, runners = model
    j = outputs_of(d)
    job.out, job.masks_dir, job.json, job.coco = j.out, j.masks_dir, j.json, j.coco
    return run_track(job, spec, runners)


# --------------------------------------------------------------------- decoding
@pytest.mark.slow
def test_truncated_video_keeps_frames_before_the_cut(model, clip16, tmp_path):
    video = tmp_path / "trunc.mp4"
    video.write_bytes(clip16[: int(len(clip16) * 0.9)])
    n = decodable(video)
    assert 3 <= n < 16 and probe(video).num_frames == 16
    first = n - 2  # track the last two decodable frames, then the stream ends early
    with pytest.raises(RuntimeFailure, match="truncated") as e:
        run(model, TrackJob(str(video), [ObjectPrompt(1, first, box=BOX)]), tmp_path / "o")
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    check_partial(tmp_path / "o", first, 2, first)


@pytest.mark.slow
def test_corrupt_packet_stops_with_frames_before_it(model, clip16, tmp_path):
    video = tmp_path / "corrupt.mp4"
    data = bytearray(clip16)
    at = int(len(data) * 0.8)  # inside mdat, a few frames in
    data[at:at + 4000] = random.Random(0).randbytes(4000)
    video.write_bytes(bytes(data))
    n = decodable(video)
    assert 1 <= n < 16, n
    first = n - 1
    with pytest.raises(RuntimeFailure, match="decoding .* failed after frame") as e:
        run(model, TrackJob(str(video), [ObjectPrompt(1, first, box=BOX)]), tmp_path / "o")
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    check_partial(tmp_path / "o", first, 1, first)


@pytest.mark.slow
def test_frame_of_another_size_stops_with_frames_before_it(model, vtest_frames, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        im = Image.open(vtest_frames / sorted(os.listdir(vtest_frames))[i])
        (im.resize((640, 480)) if i == 2 else im).save(frames / f"{i:05d}.jpg")
    with pytest.raises(RuntimeFailure, match="640x480") as e:
        run(model, TrackJob(str(frames), [ObjectPrompt(1, 1, box=BOX)]), tmp_path / "o")
    assert e.value.exit_code == 4
    check_partial(tmp_path / "o", 1, 1, 1)


@pytest.mark.slow
def test_grayscale_and_16bit_frames_just_work(model, vtest_frames, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    files = sorted(os.listdir(vtest_frames))
    gray = np.asarray(Image.open(vtest_frames / files[0]).convert("L"))
    Image.fromarray(gray).save(frames / "00000.png")  # 8-bit grayscale
    g16 = np.asarray(Image.open(vtest_frames / files[1]).convert("L")).astype(np.uint16) * 257
    Image.fromarray(g16).save(frames / "00001.png")  # 16-bit grayscale
    with Image.open(frames / "00001.png") as im:
        assert im.mode.startswith("I")
    summary = run(model, TrackJob(str(frames), [ObjectPrompt(1, 0, box=BOX)]), tmp_path / "o")
    assert summary.status == "ok" and summary.frames == 2
    check_partial(tmp_path / "o", 0, 2, 0)


# --------------------------------------------------------------------- disk full
@pytest.fixture()
def small_disk(tmp_path):
    """A 64 KiB tmpfs (needs root / CAP_SYS_ADMIN; skipped where mounting is not allowed)."""
    d = tmp_path / "small"
    d.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.mark.slow
def test_full_disk_gives_exit_4_and_no_corrupt_output(model, vtest_frames, small_disk):
    with pytest.raises(RuntimeFailure, match="disk full") as e:
        run(model, TrackJob(str(vtest_frames), [ObjectPrompt(1, 0, box=BOX)], max_frames=3), small_disk)
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    check_partial(small_disk, 0, 3, 0, full_disk=True)


# ----------------------------------------------------------------- SIGINT / SIGTERM
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_with_valid_outputs(tiny_model_dir, vtest_frames, tmp_path, sig):
    d = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "sam2trt.cli", "track", str(vtest_frames), "--model",
                             str(tiny_model_dir), "--box", "250,215,36,97", "--quiet", "--out", str(d / "o.mp4"),
                             "--masks-dir", str(d / "m"), "--json", str(d / "t.jsonl"), "--coco", str(d / "c.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        tmp = glob.glob(str(d / ".t.partial-*.jsonl"))
        if tmp and pathlib.Path(tmp[0]).read_text().count("\n") >= 1:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted after"), err
    frames = int(lines[0].split("interrupted after ")[1].split()[0])
    assert 1 <= frames < 16
    check_partial(d, 0, frames, 0)
    assert sorted(p.name for p in d.glob(".*.incomplete")) == [".c.json.incomplete", ".m.incomplete",
                                                               ".o.mp4.incomplete", ".t.jsonl.incomplete"]


# ------------------------------------------------ faults with a backward pass (null backend: instant modules)
class FailOn:
    """A runner that raises on its ``n``-th call (from 1), or calls ``hook`` then; otherwise passes calls through."""

    def __init__(self, runner, n: int, hook=None):
        self.runner, self.name, self.n, self.hook, self.calls = runner, runner.name, n, hook, 0

    def infer(self, feed, keep=()):
        self.calls += 1
        if self.calls == self.n:
            if self.hook is None:
                raise RuntimeError("injected backend failure")
            self.hook()
        return self.runner.infer(feed, keep=keep)


@pytest.fixture(scope="module")
def null_spec(tmp_path_factory):
    from sam2trt.runtime.null_backend import host_only_spec, write_host_only_model

    return host_only_spec(write_host_only_model(tmp_path_factory.mktemp("null") / "model"))


def run_null(spec, job, d, n, hook=None, outputs=TrackJob.OUTPUTS):
    """Run ``job`` on null runners whose image encoder fails (or calls ``hook``) on its ``n``-th call,
    writing ``outputs`` (names of :class:`TrackJob` fields) into ``d``."""
    from sam2trt.model_spec import MODULES
    from sam2trt.runtime.base import ModuleRunners
    from sam2trt.runtime.null_backend import open_null_runners

    j = outputs_of(d)
    for k in outputs:
        setattr(job, k, getattr(j, k))
    with open_null_runners(spec) as null:
        runners = {m: getattr(null, m) for m in MODULES}
        runners["image_encoder"] = FailOn(null.image_encoder, n, hook)
        return run_track(job, spec, ModuleRunners(**runners, backend=null.backend, preprocess=null.preprocess))


MARKERS = [".c.json.incomplete", ".m.incomplete", ".o.mp4.incomplete", ".t.jsonl.incomplete"]


# (direction, image-encoder call that fails, first and last frame the outputs hold): the box is on frame 8,
# --max-frames 3. `both` tracks 8, 9, 10 forward, then 7, 6, 5 backward; `backward` tracks 8, 7, 6, 5.
@pytest.mark.parametrize("direction,fail_at,first,last", [
    ("both", 5, 7, 10),      # in the backward pass, after frame 7: the forward frames and frame 7
    ("both", 3, 8, 9),       # in the forward frames tracked before the backward pass
    ("backward", 3, 7, 8),   # backward alone, after frames 8 and 7
])
def test_backend_failure_with_a_backward_pass_keeps_the_processed_frames(null_spec, vtest_frames, tmp_path,
                                                                         direction, fail_at, first, last):
    d = tmp_path / "o"
    job = TrackJob(str(vtest_frames), [ObjectPrompt(1, 8, box=BOX)], max_frames=3, direction=direction)
    with pytest.raises(RuntimeFailure, match="injected backend failure") as e:
        run_null(null_spec, job, d, fail_at)
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    check_partial(d, first, last - first + 1, first)
    assert sorted(p.name for p in d.glob(".*.incomplete")) == MARKERS
    # the backward results' folder is gone; a run that finishes removes the markers
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == ["c.json", "m", "o.mp4", "t.jsonl"]
    run_null(null_spec, TrackJob(str(vtest_frames), [ObjectPrompt(1, 8, box=BOX)], max_frames=3,
                                 direction=direction), d, 0)
    check_partial(d, 5, 6 if direction == "both" else 4, 5)
    assert not list(d.glob(".*.incomplete"))


def test_backend_failure_in_the_backward_pass_without_an_overlay(null_spec, vtest_frames, tmp_path, monkeypatch):
    """Without --out nothing needs the pictures: the waiting results are written without decoding again."""
    from sam2trt.video.reader import FrameSource

    d = tmp_path / "o"
    job = TrackJob(str(vtest_frames), [ObjectPrompt(1, 8, box=BOX)], max_frames=3, direction="both")
    ranges = []
    real = FrameSource.frames

    def frames(self, start, stop=None, **kw):
        ranges.append((start, stop, kw.get("reverse", False)))
        return real(self, start, stop, **kw)

    monkeypatch.setattr(FrameSource, "frames", frames)
    with pytest.raises(RuntimeFailure, match="injected"):
        run_null(null_spec, job, d, 5, outputs=("masks_dir", "json"))
    assert ranges == [(8, 11, False), (5, 8, True)]  # the forward head and the backward pass only
    assert sorted(int(p.stem) for p in (d / "m").glob("*.png")) == [7, 8, 9, 10]
    assert [json.loads(line)["frame"] for line in (d / "t.jsonl").read_text().splitlines()] == [7, 8, 9, 10]
    assert sorted(p.name for p in d.glob(".*.incomplete")) == [".m.incomplete", ".t.jsonl.incomplete"]


def test_undecodable_frame_in_the_backward_pass(null_spec, vtest_frames, tmp_path):
    """Frame 6 is broken: the backward pass stops there; the per-frame outputs hold 7..10, and the overlay,
    which needs the pictures again, ends before frame 6."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted(os.listdir(vtest_frames)):
        (frames / f).write_bytes((vtest_frames / f).read_bytes())
    broken = frames / sorted(os.listdir(frames))[6]
    broken.write_bytes(broken.read_bytes()[:200])
    d = tmp_path / "o"
    job = TrackJob(str(frames), [ObjectPrompt(1, 8, box=BOX)], max_frames=3, direction="both")
    with pytest.raises(RuntimeFailure, match="decoding .*00006") as e:
        run_null(null_spec, job, d, 0)
    assert e.value.exit_code == 4
    assert sorted(int(p.stem) for p in (d / "m").glob("*.png")) == [7, 8, 9, 10]
    assert [json.loads(line)["frame"] for line in (d / "t.jsonl").read_text().splitlines()] == [7, 8, 9, 10]
    assert check_coco(d / "c.json", d / "m") == [7, 8, 9, 10]
    assert probe(d / "o.mp4").num_frames == 6 and decodable(d / "o.mp4") == 6
    assert sorted(p.name for p in d.glob(".*.incomplete")) == MARKERS
    assert not [p for p in d.rglob("*") if ".partial-" in p.name]


def test_signal_in_the_backward_pass_keeps_the_processed_frames(null_spec, vtest_frames, tmp_path):
    """SIGINT arrives during a backward frame's module call: the outputs hold exactly the frames tracked."""
    from sam2trt.errors import Interrupted

    d = tmp_path / "o"
    job = TrackJob(str(vtest_frames), [ObjectPrompt(1, 8, box=BOX)], max_frames=3, direction="both")
    with pytest.raises(Interrupted) as e:
        run_null(null_spec, job, d, 5, hook=lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.5)))
    frames = int(str(e.value).split("interrupted after ")[1].split()[0])
    pngs = sorted(int(p.stem) for p in (d / "m").glob("*.png"))
    assert pngs and pngs[-1] == 10 and len(pngs) == frames and 4 <= frames <= 6, (pngs, str(e.value))
    check_partial(d, pngs[0], frames, pngs[0])
    assert sorted(p.name for p in d.glob(".*.incomplete")) == MARKERS


# ----------------------------------------------------------------- prompt syntax
ids = st.one_of(st.none(), st.integers(1, 255))
frames_ = st.one_of(st.none(), st.integers(0, 10_000))
num = st.integers(0, 2000)


@settings(max_examples=200, deadline=None)
@given(ids, frames_, st.text(alphabet="0123456789,.-eE xyz", max_size=20))
def test_split_prompt_prefix_round_trip(oid, frame, value):
    prefix = ("" if oid is None else str(oid)) + ("" if frame is None else f"@{frame}")
    text = f"{prefix}:{value}" if prefix else value
    got = split_prompt_prefix(text)
    if prefix:
        assert got == (oid, frame, value)
    elif ":" not in value:
        assert got == (None, None, value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(num, num, st.integers(1, 500), st.integers(1, 500)), min_size=1, max_size=5),
       st.integers(0, 50), st.lists(frames_, min_size=5, max_size=5))
def test_build_prompts_boxes_round_trip(boxes, prompt_frame, frames):
    texts = [(f"@{f}:" if f is not None else "") + ",".join(map(str, b)) for b, f in zip(boxes, frames)]
    prompts = build_prompts(texts, [], [], prompt_frame)
    assert [p.obj_id for p in prompts] == list(range(1, len(boxes) + 1))
    for p, (x, y, w, h), f in zip(prompts, boxes, frames):
        assert p.box == (x, y, x + w, y + h) and p.points == ()
        assert p.frame_idx == (prompt_frame if f is None else f)
        assert parse_box(",".join(map(str, (x, y, w, h)))) == p.box


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_malformed_prompt_text_is_a_one_line_usage_error(text):
    for kind in ("box", "point"):
        try:
            build_prompts([text] if kind == "box" else [], [text] if kind == "point" else [], [], 0)
        except UsageError as e:
            assert "\n" not in str(e) and e.exit_code == 2
        # anything accepted must be well-formed
        else:
            _, _, value = split_prompt_prefix(text)
            parts = value.split(",")
            assert len(parts) in ((4,) if kind == "box" else (2, 3))


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,3,4,5", "2@x:1,2,3,4", "0:1,2,3,4", "256:1,2,3,4",
                                  "1,2,0,4", "1,2,nan,4", "1,2,inf,4", ""])
def test_malformed_box_examples(text):
    with pytest.raises(UsageError) as e:
        build_prompts([text], [], [], 0)
    assert "\n" not in str(e.value)
