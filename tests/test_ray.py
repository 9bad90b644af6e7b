"""``sam2trt track --ray``: the batch on Ray workers (sam2trt/cluster.py), against the single-process batch.

One local Ray instance with 2 CPUs serves the whole module (``ray_address``):
in-process runs use its connection, CLI subprocesses connect to its address.
Every clip is a few frames of tests/data/vtest16 in a frame folder; workers
have 1 core each (``--ray-cpus-per-worker 1``), so two jobs run at once.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from sam2trt.batch import plan_jobs
from sam2trt.fileio import PARTIAL
from sam2trt.video import probe
from tests.helpers import run_cli

ROOT = pathlib.Path(__file__).parent.parent
BOX = "250,215,36,97"
OUTS = {"out": "{stem}.mp4", "masks_dir": "{stem}_m", "json": "{stem}.jsonl", "coco": "{stem}.coco.json"}


@pytest.fixture(scope="session")
def ray_address():
    """A private Ray instance (2 CPUs, no GPU: CPU workers) for the session; yields its GCS address."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def make_clips(folder: pathlib.Path, frames: list[int], vtest: pathlib.Path) -> list[pathlib.Path]:
    """One frame folder per entry: clip k holds ``frames[k]`` frames of vtest16, starting at frame k."""
    files = sorted(os.listdir(vtest))
    clips = []
    for k, n in enumerate(frames):
        d = folder / f"clip{k}"
        d.mkdir(parents=True)
        for j in range(n):
            shutil.copy(vtest / files[k + j], d / f"{j:05d}.jpg")
        clips.append(d)
    return clips


def out_args(o: pathlib.Path) -> list[str]:
    return [a for k, p in OUTS.items() for a in (f"--{k.replace('_', '-')}", str(o / p))]


def summaries(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def staged_pngs(o: pathlib.Path, stem: str) -> int:
    """Frame PNGs in the staging folder of ``{stem}_m`` (frames tracked so far by a running job)."""
    n = 0
    for d in o.glob(f".{stem}_m{PARTIAL}*"):
        try:
            n += len(os.listdir(d))
        except OSError:  # moved into place meanwhile
            pass
    return n


@pytest.mark.slow
def test_plain_track_never_imports_ray_and_ray_options_need_ray(tiny_model_dir, vtest_frames, tmp_path):
    code = ("import sys; import sam2trt.cli as c; assert 'ray' not in sys.modules, 'import'; "
            "rc = c.main(sys.argv[1:]); assert 'ray' not in sys.modules, 'track'; sys.exit(rc)")
    clip = make_clips(tmp_path, [1], vtest_frames)[0]
    proc = subprocess.run([sys.executable, "-c", code, "track", str(clip), "--model", str(tiny_model_dir), "--box", BOX,
                           "--json", str(tmp_path / "o.jsonl"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1
    for extra, words in ((["--retries", "1"], "--retries applies to Ray runs only"),
                         (["--ray-cpus-per-worker", "1"], "--ray-cpus-per-worker applies to Ray runs only"),
                         (["--ray", "local", "--retries", "-1"], "--retries -1 must be >= 0"),
                         (["--ray", "local", "--ray-cpus-per-worker", "0"], "must be at least 1")):
        proc = run_cli("track", clip, "--model", tiny_model_dir, "--box", BOX, *extra)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert words in lines[0], proc.stderr


@pytest.mark.slow
def test_four_jobs_on_two_workers_match_the_single_process_batch(ray_address, tiny_model_dir, vtest_frames, tmp_path):
    clips = make_clips(tmp_path / "in", [2, 1, 2, 1], vtest_frames)
    common = ["--model", tiny_model_dir, "--box", BOX, "--json-summary", "--quiet"]
    one = run_cli("track", *clips, *common, "--threads", "1", *out_args(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    ray = run_cli("track", *clips, *common, "--ray", ray_address, "--ray-cpus-per-worker", "1",
                  *out_args(tmp_path / "ray"))
    assert ray.returncode == 0, ray.stderr
    a, b = summaries(one.stdout), summaries(ray.stdout)
    assert len(a) == len(b) == 4
    b_by_video = {s["video"]: s for s in b}
    assert set(b_by_video) == {str(c) for c in clips}
    assert {s["worker"]["pid"] for s in b} and len({s["worker"]["pid"] for s in b}) == 2  # both workers took jobs
    for s in a:
        r = b_by_video[s["video"]]
        assert r["attempts"] == 1 and r["worker"]["gpu"] is None and r["worker"]["node"]
        for k in ("status", "frames", "first_frame", "objects", "backend", "error", "exit_code"):
            assert r[k] == s[k], (k, r, s)
        assert r["outputs"] == {k: v.replace("/one/", "/ray/") for k, v in s["outputs"].items()}
    one_files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*"))
    assert one_files == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*"))
    assert len([p for p in one_files if p.suffix == ".png"]) == 6
    for rel in one_files:
        x, y = tmp_path / "one" / rel, tmp_path / "ray" / rel
        if rel.suffix in (".png", ".jsonl", ".json"):
            assert x.read_bytes() == y.read_bytes(), rel
        elif rel.suffix == ".mp4":
            assert probe(x).num_frames == probe(y).num_frames == len(os.listdir(x.parent / f"{x.stem}_m"))


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_job_retried(ray_address, tiny_model_dir, vtest_frames, tmp_path):
    from sam2trt.cluster import run_on_ray

    clips = make_clips(tmp_path / "in", [3, 1], vtest_frames)
    o = tmp_path / "o"
    specs = plan_jobs([str(c) for c in clips], None, boxes=[BOX], points=[], masks=[], prompt_frame=0,
                      max_frames=None, patterns={k: str(o / p) for k, p in OUTS.items()})
    finals = [o / "clip0.mp4", o / "clip0_m", o / "clip0.jsonl", o / "clip0.coco.json"]
    seen: dict = {}

    def kill_when_tracking(pid: int) -> None:
        deadline = time.monotonic() + 600
        while staged_pngs(o, "clip0") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)  # a real fault: no cleanup, no marker
        seen["killed"] = pid
        time.sleep(1.0)
        seen["finals_after_kill"] = [p.name for p in finals if os.path.lexists(p)]
        seen["temps_after_kill"] = sorted(p.name for p in o.glob(f".clip0*{PARTIAL}*"))

    def on_start(index, spec, worker):
        if index == 0 and "thread" not in seen:
            seen["thread"] = threading.Thread(target=kill_when_tracking, args=(worker["pid"],), daemon=True)
            seen["thread"].start()

    done = []
    result = run_on_ray(specs, tiny_model_dir, address="auto", cpus_per_worker=1, retries=2, on_start=on_start,
                        on_done=done.append)
    seen["thread"].join(60)
    assert "killed" in seen
    assert seen["finals_after_kill"] == [] and seen["temps_after_kill"], seen  # partial data only at temporaries
    assert [(s.status, s.frames, s.attempts) for s in result] == [("ok", 3, 2), ("ok", 1, 1)], result
    assert result[0].worker["pid"] != seen["killed"]
    assert sorted(s.video for s in done) == sorted(str(c) for c in clips)
    assert sorted(os.listdir(o / "clip0_m")) == ["00000.png", "00001.png", "00002.png"]
    assert len((o / "clip0.jsonl").read_text().splitlines()) == 3 and probe(o / "clip0.mp4").num_frames == 3
    assert not list(o.glob(".*")), list(o.glob(".*"))  # the killed attempt's temporaries are gone, no marker


@pytest.mark.slow
def test_a_missing_video_fails_alone(ray_address, tiny_model_dir, vtest_frames, tmp_path):
    clips = make_clips(tmp_path / "in", [1, 1], vtest_frames)
    missing = tmp_path / "in" / "missing.mp4"
    o = tmp_path / "o"
    proc = run_cli("track", clips[0], missing, clips[1], "--model", tiny_model_dir, "--box", BOX, "--json-summary",
                   "--ray", ray_address, "--ray-cpus-per-worker", "1", "--json", f"{o}/{{stem}}.jsonl")
    assert proc.returncode == 3, proc.stderr
    s = {x["video"]: x for x in summaries(proc.stdout)}
    assert [(s[str(v)]["status"], s[str(v)]["exit_code"], s[str(v)]["attempts"]) for v in (clips[0], missing, clips[1])] \
        == [("ok", 0, 1), ("error", 3, 1), ("ok", 0, 1)]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and str(missing) in errors[0], proc.stderr
    assert errors[1].startswith(f"error: 1 of 3 videos failed, first {missing}"), proc.stderr
    assert "3/3 videos" in proc.stderr  # the progress bar (not --quiet)
    assert sorted(os.listdir(o)) == ["clip0.jsonl", "clip1.jsonl"]


@pytest.mark.slow
def test_sigint_on_the_driver_then_skip_existing(ray_address, tiny_model_dir, vtest_frames, tmp_path):
    clips = make_clips(tmp_path / "in", [1, 3, 3], vtest_frames)
    o = tmp_path / "o"
    args = [sys.executable, "-m", "sam2trt.cli", "track", *map(str, clips), "--model", str(tiny_model_dir),
            "--box", BOX, "--json-summary", "--quiet", "--ray", ray_address, "--ray-cpus-per-worker", "1", *out_args(o)]
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while staged_pngs(o, "clip2") < 1 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # clip2 starts when clip0 (1 frame) is done, and has tracked a frame
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted: "), err
    s = {pathlib.Path(x["video"]).name: x for x in summaries(out)}
    assert s["clip0"]["status"] == "ok" and s["clip0"]["frames"] == 1
    assert s["clip2"]["status"] == "interrupted" and s["clip2"]["exit_code"] == 130, (s, err)
    for name in ("clip1", "clip2"):
        if s[name]["status"] == "interrupted" and s[name]["frames"]:  # outputs hold the frames done, marked
            n = s[name]["frames"]
            assert 1 <= n < 3
            assert len(os.listdir(o / f"{name}_m")) == n and len((o / f"{name}.jsonl").read_text().splitlines()) == n
            assert probe(o / f"{name}.mp4").num_frames == n
            assert (o / f".{name}.jsonl.incomplete").exists() and (o / f".{name}_m.incomplete").exists()
    assert not list(o.glob(f".*{PARTIAL}*"))

    again = subprocess.run(args + ["--skip-existing"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    t = {pathlib.Path(x["video"]).name: x for x in summaries(again.stdout)}
    assert t["clip0"]["status"] == "skipped"
    for name in ("clip1", "clip2"):
        assert t[name]["status"] == ("skipped" if s[name]["status"] == "ok" else "ok"), (s, t)
        assert len(os.listdir(o / f"{name}_m")) == 3
    assert not list(o.glob(".*"))


@pytest.mark.slow
def test_probe_refuses_an_unwritable_output_folder_before_any_job(ray_address, tiny_model_dir, vtest_frames, tmp_path,
                                                                 capsys):
    from sam2trt.cli import main

    clip = make_clips(tmp_path / "in", [1], vtest_frames)[0]
    if os.geteuid() == 0:
        bad = pathlib.Path("/sys/sam2trt-probe-test")  # sysfs: not writable, even for root
    else:
        bad = tmp_path / "ro"
        bad.mkdir()
        bad.chmod(0o555)
    rc = main(["track", str(clip), "--model", str(tiny_model_dir), "--box", BOX, "--json-summary", "--quiet",
               "--ray", "auto", "--json", str(tmp_path / "ok.jsonl"), "--out", str(bad / "o.mp4")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "", err
    line = err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: node ") and f"{bad}/o.mp4" in line, err
    assert "cannot write" in line and "storage all nodes share" in line, err
    assert not (tmp_path / "ok.jsonl").exists()



@pytest.mark.slow
def test_track_folder_script_runs_the_ray_path(ray_address, tiny_model_dir, vtest_frames, tmp_path):
    vids = tmp_path / "videos"
    a, b = make_clips(vids, [1, 2], vtest_frames)
    a.rename(vids / "a")
    b.rename(vids / "b")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text('video,box\na,"250,215,36,97"\nb,"1@1:250,215,36,97"\nnot_there.mp4,"1,1,5,5"\n')
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "track_folder.py"), vids, "--boxes", boxes,
                           "--model", tiny_model_dir, "--out", out, "--ray", ray_address, "--max-frames", "1",
                           "--direction", "forward", "--", "--ray-cpus-per-worker", "1", "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "warning: no box for" not in proc.stderr  # not_there.mp4 is not in the folder
    s = sorted(summaries(proc.stdout), key=lambda x: x["video"])
    assert [(pathlib.Path(x["video"]).name, x["status"], x["first_frame"], x["frames"], x["attempts"]) for x in s] == [
        ("a", "ok", 0, 1, 1), ("b", "ok", 1, 1, 1)]
    assert sorted(os.listdir(out)) == ["a.coco.json", "a.jsonl", "a.mp4", "a_masks", "b.coco.json", "b.jsonl",
                                       "b.mp4", "b_masks", "jobs.csv", "summary.jsonl"]
    assert len((out / "summary.jsonl").read_text().splitlines()) == 2



@pytest.mark.slow
def test_workers_honour_each_jobs_direction(ray_address, tiny_model_dir, vtest_frames, tmp_path):
    """A manifest row's direction, else the command line's, reaches the worker and its summary (box on frame 1)."""
    a, b, c = make_clips(tmp_path / "in", [2, 2, 2], vtest_frames)
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f'input,box,direction\n{a},"1@1:{BOX}",forward\n{b},"1@1:{BOX}",\n'
                        f'{c},"1@1:{BOX}",backward\n')
    o = tmp_path / "o"
    proc = run_cli("track", "--manifest", manifest, "--model", tiny_model_dir, "--direction", "both", "--json-summary",
                   "--quiet", "--ray", ray_address, "--ray-cpus-per-worker", "1", "--masks-dir", f"{o}/{{stem}}_m",
                   "--json", f"{o}/{{stem}}.jsonl")
    assert proc.returncode == 0, proc.stderr
    s = {pathlib.Path(x["video"]).name: x for x in summaries(proc.stdout)}
    assert [(s[k]["direction"], s[k]["first_frame"], s[k]["frames"]) for k in ("clip0", "clip1", "clip2")] == [
        ("forward", 1, 1), ("both", 0, 2), ("backward", 0, 2)]
    for stem, frames in (("clip0", [1]), ("clip1", [0, 1]), ("clip2", [0, 1])):
        assert sorted(int(p.stem) for p in (o / f"{stem}_m").iterdir()) == frames
        assert [json.loads(line)["frame"] for line in (o / f"{stem}.jsonl").read_text().splitlines()] == frames


@pytest.mark.slow
def test_workers_that_cannot_open_the_backend_are_retired_and_the_jobs_fail_with_its_error(ray_address, tiny_model_dir,
                                                                                      vtest_frames, tmp_path):
    clips = make_clips(tmp_path / "in", [1, 1, 1], vtest_frames)
    proc = run_cli("track", *clips, "--model", tiny_model_dir, "--box", BOX, "--json-summary", "--quiet",
                   "--backend", "tensorrt", "--ray", ray_address, "--ray-cpus-per-worker", "1",
                   "--json", f"{tmp_path}/o/{{stem}}.jsonl")
    one = run_cli("track", clips[0], "--model", tiny_model_dir, "--box", BOX, "--backend", "tensorrt", "--quiet")
    assert one.returncode in (3, 5) and one.stderr.startswith("error: "), one.stderr  # no TensorRT, or no engines
    assert proc.returncode == one.returncode, proc.stderr
    s = summaries(proc.stdout)
    assert sorted(x["video"] for x in s) == sorted(map(str, clips))
    assert {(x["status"], x["exit_code"], x["error"]) for x in s} == {("error", one.returncode, one.stderr.strip()[7:])}
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and all("no more jobs go to it" in w for w in warnings), proc.stderr
    assert not (tmp_path / "o").exists()



def test_plan_workers_one_per_gpu_else_per_cpus():
    from sam2trt.cluster import plan_workers
    from sam2trt.errors import UsageError

    nodes = [{"NodeID": "g" * 56, "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {"CPU": 16, "GPU": 2}},
             {"NodeID": "c" * 56, "NodeManagerAddress": "10.0.0.2", "Alive": True, "Resources": {"CPU": 8}},
             {"NodeID": "d" * 56, "NodeManagerAddress": "10.0.0.3", "Alive": False, "Resources": {"CPU": 64}}]
    slots = plan_workers(nodes, "auto", None, None)
    assert [(s.node, s.num_gpus, s.num_cpus, s.threads) for s in slots] == [
        ("10.0.0.1", 1, 1.0, None), ("10.0.0.2", 0, 8, 8), ("10.0.0.1", 1, 1.0, None)]  # interleaved across nodes
    slots = plan_workers(nodes, "onnxruntime", 4, None)
    assert [(s.node, s.num_gpus, s.num_cpus, s.threads) for s in slots] == [
        ("10.0.0.1", 0, 4, 4), ("10.0.0.2", 0, 4, 4), ("10.0.0.1", 0, 4, 4), ("10.0.0.2", 0, 4, 4),
        ("10.0.0.1", 0, 4, 4), ("10.0.0.1", 0, 4, 4)]
    assert [s.threads for s in plan_workers(nodes[1:], "auto", 3, 2)] == [2, 2]
    with pytest.raises(UsageError, match="--ray-cpus-per-worker 9 is more than any node has"):
        plan_workers(nodes[1:], "auto", 9, None)



def test_without_ray_installed_the_run_is_exit_5(monkeypatch):
    from sam2trt.cluster import connect
    from sam2trt.errors import EnvironmentMissing

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(EnvironmentMissing, match=r"pip install 'sam2trt\[ray\]'") as e:
        connect("auto")
    assert e.value.exit_code == 5
