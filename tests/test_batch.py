"""Batch ``track``: output patterns, manifests, --json-summary, --skip-existing, --coco (the folder script: test_ray.py).

Every tracked video is a 2-frame clip tracked for 1 frame (CPU tracking costs seconds per frame).
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from sam2trt.batch import plan_jobs, read_manifest
from sam2trt.errors import UsageError
from sam2trt.video import OverlayVideoWriter, open_frames, probe
from tests.helpers import check_coco, run_cli



@pytest.fixture(scope="module")
def clips(tmp_path_factory, vtest_frames) -> pathlib.Path:
    """A folder with two 2-frame mp4 clips (a.mp4, b.mp4) and a 2-frame frame folder (c/)."""
    d = tmp_path_factory.mktemp("clips")
    for name, first in (("a", 0), ("b", 4)):
        with open_frames(vtest_frames) as src, OverlayVideoWriter(d / f"{name}.mp4", 768, 576, 10.0) as w:
            for idx, rgb in src:
                if first <= idx < first + 2:
                    w.write(rgb)
    (d / "c").mkdir()
    for i, f in enumerate(sorted(os.listdir(vtest_frames))[:2]):
        (d / "c" / f"{i:05d}.jpg").write_bytes((vtest_frames / f).read_bytes())
    return d


def summaries(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.slow
def test_batch_patterns_summary_coco_failure_and_skip(tiny_model_dir, clips, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    o = tmp_path / "o"
    args = ["track", clips / "a.mp4", tmp_path / "broken.mp4", clips / "c", "--model", tiny_model_dir,
            "--box", "250,215,36,97", "--max-frames", "1", "--json-summary", "--quiet",
            "--out", f"{o}/{{stem}}.mp4", "--masks-dir", f"{o}/{{stem}}_m", "--json", f"{o}/{{index}}.jsonl",
            "--coco", f"{o}/{{name}}.coco.json"]
    proc = run_cli(*args)
    assert proc.returncode == 3, proc.stderr  # the first failing video's code; the batch went on
    s = summaries(proc.stdout)
    assert [x["status"] for x in s] == ["ok", "error", "ok"]
    assert [x["exit_code"] for x in s] == [0, 3, 0] and s[0]["frames"] == 1 and s[2]["frames"] == 1
    assert "broken.mp4" in s[1]["error"] and s[1]["outputs"] == {}
    assert s[0]["outputs"] == {"out": f"{o}/a.mp4", "masks_dir": f"{o}/a_m", "json": f"{o}/0.jsonl",
                               "coco": f"{o}/a.mp4.coco.json"}
    errs = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errs) == 2 and errs[0].startswith("error: ") and "broken.mp4" in errs[0], proc.stderr
    assert errs[1].startswith("error: 1 of 3 videos failed"), proc.stderr
    assert sorted(os.listdir(o)) == ["0.jsonl", "2.jsonl", "a.mp4", "a.mp4.coco.json", "a_m", "c.coco.json", "c.mp4", "c_m"]
    assert probe(o / "c.mp4").num_frames == 1 and os.listdir(o / "c_m") == ["00000.png"]
    assert check_coco(o / "c.coco.json", o / "c_m") == [0]
    assert check_coco(o / "a.mp4.coco.json", o / "a_m") == [0]

    # again with --skip-existing: nothing is tracked, the broken video still fails
    proc = run_cli(*args, "--skip-existing")
    assert proc.returncode == 3, proc.stderr
    assert [x["status"] for x in summaries(proc.stdout)] == ["skipped", "error", "skipped"]
    # an output marked incomplete (a run cut short) is tracked again
    (o / ".c_m.incomplete").touch()
    proc = run_cli(*args, "--skip-existing")
    assert proc.returncode == 3, proc.stderr
    assert [x["status"] for x in summaries(proc.stdout)] == ["skipped", "error", "ok"]
    assert not list(o.glob(".*"))


@pytest.mark.slow
def test_manifest_csv_resolves_paths_and_per_row_prompts(tiny_model_dir, clips, tmp_path):
    man = clips / "jobs.csv"
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((576, 768), np.uint8)).save(mask)
    man.write_text("input,box,point,prompt_frame,max_frames,out,json,coco\n"
                   f'a.mp4,"250,215,36,97;2:636,238,50,85",,,1,res/a.mp4,res/a.jsonl,\n'
                   f'b.mp4,,"1@1:260,250,1",,,,res/{{stem}}.jsonl,{tmp_path}/b.coco.json\n')
    proc = run_cli("track", "--manifest", man, "--model", tiny_model_dir, "--json-summary", "--quiet",
                   "--direction", "forward")
    assert proc.returncode == 0, proc.stderr
    s = summaries(proc.stdout)
    assert [(x["status"], x["objects"], x["first_frame"], x["frames"], x["direction"]) for x in s] == [
        ("ok", [1, 2], 0, 1, "forward"), ("ok", [1], 1, 1, "forward")]
    assert sorted(os.listdir(clips / "res")) == ["a.jsonl", "a.mp4", "b.jsonl"]
    assert [json.loads(line)["frame"] for line in (clips / "res" / "b.jsonl").read_text().splitlines()] == [1]
    assert check_coco(tmp_path / "b.coco.json", None) == [1]
    assert proc.stderr.strip() == ""


def test_manifest_jsonl_and_defaults_from_the_command_line(tmp_path):
    man = tmp_path / "jobs.jsonl"
    man.write_text('{"input": "x.mp4", "box": ["1,2,3,4", "5,6,7,8"], "max_frames": 3}\n'
                   "# a comment\n\n"
                   '{"input": "/abs/y", "mask": "2@4:y.png", "out": "o/{stem}.mp4", "direction": "backward"}\n')
    specs = plan_jobs(["z.mp4"], man, boxes=["9,9,9,9"], points=[], masks=[], prompt_frame=2, max_frames=5,
                      patterns={"json": "j/{index:02d}_{stem}.jsonl", "out": None}, direction="forward")
    assert [s.direction for s in specs] == ["forward", "backward", "forward"]
    assert [s.to_track_job().direction for s in specs if not s.masks] == ["forward", "forward"]
    assert [s.video for s in specs] == [str(tmp_path / "x.mp4"), "/abs/y", "z.mp4"]
    assert [(s.boxes, s.masks, s.prompt_frame, s.max_frames) for s in specs] == [
        (["1,2,3,4", "5,6,7,8"], [], 2, 3), ([], ["2@4:y.png"], 2, 5), (["9,9,9,9"], [], 2, 5)]
    assert specs[0].outputs == {"json": "j/00_x.jsonl"}
    assert specs[1].outputs == {"out": str(tmp_path / "o" / "y.mp4"), "json": "j/01_y.jsonl"}
    assert specs[1].base == str(tmp_path) and specs[2].outputs == {"json": "j/02_z.jsonl"}


@pytest.mark.parametrize("content,words", [
    ("input,boxes\na.mp4,1\n", ["unknown column", "boxes"]),
    ("input,box\na.mp4,1,2,3,4\n", ["more cells", "quote"]),
    ("input,box\n,\"1,2,3,4\"\n", ["line 2", "no input"]),
    ("input,box\n", ["no jobs"]),
    ("input,box\na.mp4,\"1,2,3\"\n", ["malformed box", "jobs.csv line 2"]),
    ("input,box,max_frames\na.mp4,\"1,2,3,4\",x\n", ["max_frames", "not an integer"]),
    ("input\na.mp4\n", ["no objects"]),
    ("input,box,out\na.mp4,\"1,2,3,4\",o.mp4\nb.mp4,\"1,2,3,4\",o.mp4\n", ["would both write"]),
    ("input,box,direction\na.mp4,\"1,2,3,4\",sideways\n", ["direction 'sideways'", "jobs.csv line 2"]),
])
def test_bad_manifest_is_a_usage_error(tmp_path, content, words):
    man = tmp_path / "jobs.csv"
    man.write_text(content)
    with pytest.raises(UsageError) as e:
        plan_jobs(["b.mp4"] if "no objects" in words else [], man, boxes=[], points=[], masks=[], prompt_frame=0,
                  max_frames=None, patterns={})
    for w in words:
        assert w in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_read_manifest_rejects_bad_json(tmp_path):
    (tmp_path / "j.jsonl").write_text('{"input": "a"}\n{oops\n')
    with pytest.raises(UsageError, match="line 2 is not JSON"):
        read_manifest(tmp_path / "j.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("extra,code,words", [
    (["--box", "1,1,5,5", "--out", "same.mp4"], 2, ["same file for every video", "{stem}"]),
    (["--box", "1,1,5,5", "--out", "o/{stem}.mp4", "--json", "o/{bad}.jsonl"], 2, ["bad output pattern"]),
    (["--mask", "missing.png"], 3, ["cannot read mask"]),
])
def test_batch_usage_errors_leave_nothing(tiny_model_dir, clips, tmp_path, monkeypatch, extra, code, words):
    monkeypatch.chdir(tmp_path)
    proc = run_cli("track", clips / "a.mp4", clips / "b.mp4", "--model", tiny_model_dir, *extra)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr
    assert lines[0].startswith("error: ") and all(w in proc.stderr for w in words), proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_track_mask_and_point_options_reach_validation(tiny_model_dir, clips, tmp_path):
    Image.fromarray(np.ones((10, 10), np.uint8)).save(tmp_path / "small.png")
    proc = run_cli("track", clips / "a.mp4", "--model", tiny_model_dir, "--mask", f"2@0:{tmp_path / 'small.png'}",
                   "--out", tmp_path / "o.mp4")
    assert proc.returncode == 3 and "mask of object 2 is 10x10" in proc.stderr, proc.stderr
    proc = run_cli("track", clips / "a.mp4", "--model", tiny_model_dir, "--point", "900,10", "--out", tmp_path / "o.mp4")
    assert proc.returncode == 3 and "point 900,10 of object 1 is outside" in proc.stderr, proc.stderr
    proc = run_cli("track", clips / "a.mp4", "--model", tiny_model_dir, "--box", "1,1,5,5", "--box", "9,9,5,5",
                   "--point", "3,4")
    assert proc.returncode == 2 and "names no object" in proc.stderr, proc.stderr
    assert not (tmp_path / "o.mp4").exists()
