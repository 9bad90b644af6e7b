"""Stream outputs (sam2trt/video/stream_out.py) and fragmented MP4 (writers.py), read back with PyAV."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest

from sam2trt.errors import InputError, UsageError
from sam2trt.video.reader import open_frames
from sam2trt.video.sinks import VideoSink
from sam2trt.video.stream_out import StreamVideoWriter, check_output, classify_output, open_video_output
from sam2trt.video.writers import OverlayVideoWriter
from tests.servers.live import CLIP, CLIP_FPS, CLIP_FRAMES, CLIP_SIZE, Proc, free_port, need_ffmpeg

ROOT = CLIP.parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def clip_frames() -> list[np.ndarray]:
    with open_frames(CLIP) as src:
        return [rgb for _, rgb in src]


def decode_all(path_or_file) -> list[av.VideoFrame]:
    with av.open(path_or_file) as c:
        return list(c.decode(video=0))


def test_classify_and_check_output():
    assert [classify_output(t) for t in ("-", "udp://127.0.0.1:5000", "out/a.mp4")] == ["stdout", "url", "file"]
    check_output("srt://127.0.0.1:9000", 64, 48)
    with pytest.raises(UsageError, match="unsupported stream scheme 'ftp'"):
        check_output("ftp://h/x", 64, 48)
    with pytest.raises(UsageError, match="unsupported video extension"):
        check_output("out/a.xyz", 64, 48)


def test_udp_output_read_back_at_the_source_size():
    frames = clip_frames()[:50]
    port = free_port(socket.SOCK_DGRAM)
    decoded, errors = [], []

    def receive():
        try:
            with av.open(f"udp://127.0.0.1:{port}", timeout=(10, 1)) as c:
                for f in c.decode(video=0):
                    decoded.append((f.width, f.height))
        except av.error.ExitError:  # the read timeout once the sender stopped: the end here
            pass
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    receiver = threading.Thread(target=receive)
    receiver.start()
    time.sleep(0.3)  # the receiver binds the port
    with StreamVideoWriter(f"udp://127.0.0.1:{port}", *CLIP_SIZE, CLIP_FPS) as out:
        for rgb in frames:
            out.write(rgb)
            time.sleep(1 / CLIP_FPS)
    receiver.join(20)
    assert not receiver.is_alive() and not errors
    assert len(decoded) >= 40  # a receiver may join after the first keyframe
    assert set(decoded) == {CLIP_SIZE}


STDOUT_WRITER = """
import numpy as np
from sam2trt.video.stream_out import open_video_output
w = open_video_output("-", 96, 64, 25, live=True)
for i in range(50):
    img = np.zeros((64, 96, 3), np.uint8); img[:, i:] = 200
    w.write(img)
w.close()
"""


def test_stdout_output_is_mpegts(tmp_path):
    run = subprocess.run([sys.executable, "-c", STDOUT_WRITER], capture_output=True, timeout=60, env=ENV)
    assert run.returncode == 0, run.stderr.decode()
    (tmp_path / "out.ts").write_bytes(run.stdout)
    with av.open(str(tmp_path / "out.ts")) as c:
        assert c.format.name == "mpegts"
        frames = list(c.decode(video=0))
    assert len(frames) == 50 and (frames[0].width, frames[0].height) == (96, 64)


def test_rtsp_output_published_to_a_listening_server(tmp_path):
    ffmpeg = need_ffmpeg()
    port = free_port()
    received = tmp_path / "received.ts"
    server = Proc([ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-rtsp_flags", "listen", "-timeout", "15",
                   "-i", f"rtsp://127.0.0.1:{port}/live", "-c", "copy", "-f", "mpegts", str(received)])
    try:
        deadline = time.monotonic() + 10
        while True:  # until the server listens
            try:
                out = StreamVideoWriter(f"rtsp://127.0.0.1:{port}/live", 96, 64, 25, timeout_s=3)
                break
            except InputError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with out:
            for i in range(50):
                img = np.zeros((64, 96, 3), np.uint8)
                img[:, i:] = 200
                out.write(img)
                time.sleep(0.01)
        server.p.wait(15)  # the publisher's TEARDOWN ends the server's input
    finally:
        server.stop()
    frames = decode_all(str(received))
    assert len(frames) >= 45 and (frames[0].width, frames[0].height) == (96, 64)


def test_stream_to_a_server_that_is_not_there_is_input_error():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(InputError, match=f"cannot open output stream rtsp://127.0.0.1:{port}/live"):
        StreamVideoWriter(f"rtsp://127.0.0.1:{port}/live", 64, 48, 25, timeout_s=2)
    assert time.monotonic() - t0 < 4


KILLED_WRITER = """
import sys, time
import numpy as np
from sam2trt.video.stream_out import open_video_output
w = open_video_output(sys.argv[1], 320, 240, 25, live=True)
for i in range(100000):
    img = np.zeros((240, 320, 3), np.uint8); img[:, (4 * i) % 320:] = 200
    w.write(img)
    if i == 80:
        print("written", flush=True)
    time.sleep(0.002)
"""


def test_sigkilled_live_writer_leaves_a_playable_mp4(tmp_path):
    target = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "written"
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    frames = decode_all(str(target))  # written in place, never finalised
    assert len(frames) >= 50 and (frames[0].width, frames[0].height) == (320, 240)


def test_fragmented_file_closes_to_every_frame(tmp_path):
    frames = clip_frames()
    with OverlayVideoWriter(tmp_path / "f.mp4", *CLIP_SIZE, CLIP_FPS, fragmented=True) as w:
        for rgb in frames:
            w.write(rgb)
    data = (tmp_path / "f.mp4").read_bytes()
    assert b"moof" in data and len(decode_all(str(tmp_path / "f.mp4"))) == CLIP_FRAMES
    with OverlayVideoWriter(tmp_path / "plain.mp4", *CLIP_SIZE, CLIP_FPS) as w:
        w.write(frames[0])
    assert b"moof" not in (tmp_path / "plain.mp4").read_bytes()


def test_open_video_output_live_file_is_in_place_and_fragmented(tmp_path):
    (tmp_path / "elsewhere.mp4").write_bytes(b"keep")
    (tmp_path / "a.mp4").symlink_to(tmp_path / "elsewhere.mp4")  # replaced, never written through
    live = open_video_output(tmp_path / "a.mp4", 64, 48, 10, live=True)
    batch = open_video_output(tmp_path / "b.mp4", 64, 48, 10, live=False)
    try:
        assert live.in_place and live.fragmented and live.tmp_path == tmp_path / "a.mp4"
        assert not batch.in_place and batch.tmp_path != tmp_path / "b.mp4"
        sink = VideoSink.for_writer(live)
        sink.write(0, np.zeros((48, 64, 3), np.uint8), None)
        sink.close()
    finally:
        batch.abort()
    assert len(decode_all(str(tmp_path / "a.mp4"))) == 1 and not (tmp_path / "b.mp4").exists()
    assert not (tmp_path / "a.mp4").is_symlink() and (tmp_path / "elsewhere.mp4").read_bytes() == b"keep"
