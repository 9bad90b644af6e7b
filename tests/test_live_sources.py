"""Live sources (sam2trt/video/live_open.py, live.py) against real servers on 127.0.0.1, no mocks.

RTSP: GStreamer's RTSP server (tests/servers/rtsp_server.py); HTTP: ``ffmpeg -listen 1``;
UDP: an ffmpeg MPEG-TS sender; stdin: ``ffmpeg ... -f mpegts - | python``. Each test
streams a few seconds of tests/data/live_clip.mp4 (25 fps, 320x240) and stops by itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from sam2trt.errors import EnvironmentMissing, InputError, SourceUnavailable, StreamLost, UsageError
from sam2trt.video.live import open_live
from sam2trt.video.live_open import classify_source, is_live, open_spec
from tests.servers.live import (CLIP, CLIP_FPS, CLIP_FRAMES, CLIP_SIZE, Proc, ffmpeg_sender, free_port,
                                need_ffmpeg, need_rtsp_server, rtsp_server)

ROOT = CLIP.parents[2]


def take(src, n: int, *, delay_s: float = 0.0, deadline_s: float = 15.0) -> list:
    """Up to ``n`` frames from ``src``, sleeping ``delay_s`` after each (a slow consumer); bounded by ``deadline_s``."""
    frames, end = [], time.monotonic() + deadline_s
    for frame in src:
        frames.append(frame)
        if len(frames) >= n or time.monotonic() > end:
            break
        time.sleep(delay_s)
    return frames


def assert_ordered(frames) -> None:
    idx = [f.index for f in frames]
    ts = [f.time_s for f in frames]
    assert all(b > a for a, b in zip(idx, idx[1:])), idx
    assert all(b > a for a, b in zip(ts, ts[1:])), ts
    assert all(f.rgb.shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3) and f.rgb.dtype.name == "uint8" for f in frames)


@pytest.mark.parametrize("source, kind", [
    ("-", "stdin"), ("rtsp://cam/1", "url"), ("RTSP://cam/1", "url"), ("http://h/x.m3u8", "url"),
    ("udp://127.0.0.1:5000", "url"), ("srt://h:9000", "url"), ("tcp://h:9000", "url"), ("rtmp://h/app", "url"),
    ("/dev/video97", "v4l2"), ("/dev/null", "v4l2"), (str(CLIP), "file"), ("no/such/file.mp4", "file"),
    (str(CLIP.parent), "folder"),
])
def test_classify_source(source, kind):
    assert classify_source(source) == kind


def test_classify_rejects_other_schemes():
    with pytest.raises(UsageError, match="unsupported scheme 'ftp'"):
        classify_source("ftp://h/x.mp4")


def test_is_live(tmp_path):
    fifo = tmp_path / "in.ts"
    os.mkfifo(fifo)
    assert not is_live(str(CLIP)) and is_live(str(CLIP), realtime=True)
    assert not is_live(str(CLIP.parent)) and not is_live(str(CLIP.parent), realtime=True)
    assert is_live(str(fifo)) and is_live("-") and is_live("rtsp://h/x") and is_live("/dev/video0")


def test_open_spec_protocol_options():
    spec = open_spec("rtsp://h/x", read_timeout_s=2.5)
    assert spec.options == {"rtsp_transport": "tcp", "timeout": "2500000"} and spec.format is None
    assert open_spec("rtsp://h/x", rtsp_transport="udp").options["rtsp_transport"] == "udp"
    assert open_spec("udp://127.0.0.1:5000", read_timeout_s=1).options == {"timeout": "1000000",
                                                                           "overrun_nonfatal": "1"}
    assert open_spec("https://h/x.m3u8", read_timeout_s=3).options == {"rw_timeout": "3000000"}
    assert (open_spec("/dev/video0").format, open_spec("-").file) == ("v4l2", "pipe:0")
    with pytest.raises(UsageError, match="--rtsp-transport"):
        open_spec("rtsp://h/x", rtsp_transport="http")


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_frames_at_source_size(transport):
    need_rtsp_server()
    port = free_port()
    server = rtsp_server(port)
    try:
        with open_live(f"rtsp://127.0.0.1:{port}/clip", rtsp_transport=transport, open_timeout_s=5) as src:
            assert (src.width, src.height) == CLIP_SIZE and src.fps == CLIP_FPS
            frames = take(src, 30)
        assert len(frames) == 30 and frames[0].index == 0 and frames[0].time_s == 0.0
        assert_ordered(frames)
    finally:
        server.stop()


def test_stream_faster_than_consumer_counts_every_drop():
    need_rtsp_server()
    port = free_port()
    server = rtsp_server(port)
    try:
        src = open_live(f"rtsp://127.0.0.1:{port}/clip", open_timeout_s=5)
        frames = take(src, 20, delay_s=0.1)  # 10 frames/s taken from a 25 frames/s stream
        src.close()
    finally:
        server.stop()
    stats = src.stats
    assert stats.frames_dropped > 0 and stats.frames_taken == len(frames) == 20
    assert stats.frames_received == stats.frames_taken + stats.frames_dropped
    assert frames[-1].index < stats.frames_received  # numbers count received frames, dropped ones too
    assert_ordered(frames)


def test_realtime_file_is_paced_by_its_timestamps():
    t0 = time.monotonic()
    with open_live(str(CLIP), realtime=True) as src:
        frames = list(src)
    elapsed = time.monotonic() - t0
    assert len(frames) == CLIP_FRAMES and src.stats.frames_dropped == 0
    assert (CLIP_FRAMES - 1) / CLIP_FPS - 0.1 < elapsed < (CLIP_FRAMES - 1) / CLIP_FPS + 3.0
    assert [f.time_s for f in frames] == pytest.approx([i / CLIP_FPS for i in range(CLIP_FRAMES)], abs=1e-6)


def test_file_without_realtime_drops_for_a_slow_consumer():
    with open_live(str(CLIP)) as src:
        frames = take(src, CLIP_FRAMES, delay_s=0.02)
    stats = src.stats
    assert stats.frames_received == CLIP_FRAMES and stats.frames_dropped > 0
    assert stats.frames_taken + stats.frames_dropped == CLIP_FRAMES and frames[-1].index == CLIP_FRAMES - 1
    assert [f.time_s for f in frames] == pytest.approx([f.index / CLIP_FPS for f in frames], abs=1e-6)


def open_when_listening(url: str, deadline_s: float = 10.0, **kwargs):
    """``open_live(url)``, retried while the server is not listening yet (refused connections)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return open_live(url, **kwargs)
        except SourceUnavailable:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("fmt, codec", [("mpegts", ["-c", "copy"]), ("mpjpeg", ["-c:v", "mjpeg", "-q:v", "5"])])
def test_http_until_end_of_stream(fmt, codec):
    port = free_port()
    server = ffmpeg_sender(codec + ["-f", fmt, "-listen", "1", f"http://127.0.0.1:{port}"])
    try:
        with open_when_listening(f"http://127.0.0.1:{port}", open_timeout_s=5) as src:
            assert (src.width, src.height) == CLIP_SIZE
            frames = take(src, 1000, deadline_s=20)  # HTTP: the end of the stream ends iteration
            stats = src.stats
    finally:
        server.stop()
    assert stats.frames_received >= CLIP_FRAMES - 5 and stats.reconnect_attempts == 0
    assert stats.frames_received == stats.frames_taken + stats.frames_dropped
    assert_ordered(frames)


def test_hls_playlist_over_http(tmp_path):
    hls = tmp_path / "hls"
    hls.mkdir()
    port = free_port()
    segmenter = ffmpeg_sender(["-f", "hls", "-hls_time", "1", "-hls_list_size", "0", str(hls / "live.m3u8")])
    web = Proc([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(hls), str(port)])
    try:
        # until the playlist exists and the web server listens (404 / refused: SourceUnavailable)
        with open_when_listening(f"http://127.0.0.1:{port}/live.m3u8", open_timeout_s=5) as src:
            assert (src.width, src.height) == CLIP_SIZE
            frames = take(src, 20)
    finally:
        segmenter.stop()
        web.stop()
    assert len(frames) == 20
    assert_ordered(frames)


def test_udp_mpegts():
    port = free_port(socket.SOCK_DGRAM)
    sender = ffmpeg_sender(["-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"], loops=2)
    try:
        with open_live(f"udp://127.0.0.1:{port}", open_timeout_s=5, read_timeout_s=2) as src:
            assert (src.width, src.height) == CLIP_SIZE
            frames = take(src, 25)
    finally:
        sender.stop()
    assert len(frames) == 25
    assert_ordered(frames)


STDIN_READER = """
import json, sys, time
from sam2trt.video.live import open_live
with open_live("-") as src:
    idx = []
    for f in src:
        idx.append(f.index)
        time.sleep(0.1)
    s = src.stats
print(json.dumps({"size": [src.width, src.height], "idx": idx, "received": s.frames_received,
                  "taken": s.frames_taken, "dropped": s.frames_dropped}))
"""


def test_stdin_pipe_from_ffmpeg():
    ffmpeg = need_ffmpeg()
    feed = subprocess.Popen([ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(CLIP),
                             "-c", "copy", "-f", "mpegts", "-"], stdout=subprocess.PIPE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        reader = subprocess.run([sys.executable, "-c", STDIN_READER], stdin=feed.stdout, capture_output=True,
                                text=True, timeout=30, env=env)
    finally:
        feed.kill()
        feed.wait(5)
        feed.stdout.close()
    assert reader.returncode == 0, reader.stderr
    out = json.loads(reader.stdout)
    assert out["size"] == list(CLIP_SIZE) and out["received"] == CLIP_FRAMES
    assert out["dropped"] > 0 and out["taken"] + out["dropped"] == CLIP_FRAMES
    assert out["idx"] == sorted(set(out["idx"]))


def test_server_killed_and_restarted_reconnects_and_frames_go_on():
    need_rtsp_server()
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/clip"
    server = rtsp_server(port)
    try:
        src = open_live(url, open_timeout_s=3, read_timeout_s=2, reconnect=6, backoff_s=(0.2, 1.0))
        frames = take(src, 20)
        server.stop()  # SIGKILL mid-stream (frame ~20 of 100)
        time.sleep(0.5)
        server = rtsp_server(port)
        frames += take(src, 20, deadline_s=20)
        src.close()
    finally:
        server.stop()
    stats = src.stats
    assert stats.reconnects >= 1 and stats.reconnect_attempts >= stats.reconnects and stats.gap_s > 0
    assert len(frames) == 40 and stats.frames_received == stats.frames_taken + stats.frames_dropped
    assert_ordered(frames)  # numbers and timestamps go on across the gap


def test_server_never_back_gives_stream_lost_within_the_backoff_budget():
    need_rtsp_server()
    port = free_port()
    server = rtsp_server(port)
    try:
        src = open_live(f"rtsp://127.0.0.1:{port}/clip", open_timeout_s=1, read_timeout_s=1, reconnect=2,
                        backoff_s=(0.2, 0.3))
        frames = take(src, 10)
    finally:
        server.stop()
    t0 = time.monotonic()
    with pytest.raises(StreamLost) as err:
        for frame in src:  # the frames received before the loss are delivered, then the error
            frames.append(frame)
    budget = 1.0 + 0.2 + 0.3 + 2 * 1.0  # read timeout + both delays + both open timeouts
    assert time.monotonic() - t0 < budget + 2.0
    assert err.value.exit_code == 6 and "\n" not in str(err.value) and "2 reconnect attempts" in str(err.value)
    assert src.stats.reconnect_attempts == 2 and src.stats.reconnects == 0
    src.close()
    assert_ordered(frames)


def silent_listener() -> socket.socket:
    """A TCP socket on 127.0.0.1 that accepts connections (backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


@pytest.mark.parametrize("scheme", ["rtsp", "http", "tcp", "udp"])
def test_url_that_does_not_answer_fails_within_the_open_timeout(scheme):
    with silent_listener() as s:  # udp: nothing sends to the port
        port = free_port(socket.SOCK_DGRAM) if scheme == "udp" else s.getsockname()[1]
        url = f"{scheme}://127.0.0.1:{port}" + ("" if scheme == "udp" else "/x")
        t0 = time.monotonic()
        with pytest.raises(SourceUnavailable) as err:
            open_live(url, open_timeout_s=1.5, read_timeout_s=1.5)
        assert time.monotonic() - t0 < 1.5 + 1.0
    assert err.value.exit_code == 6 and "\n" not in str(err.value)
    assert f"{url} does not answer" in str(err.value) and "--open-timeout" in str(err.value)


def pyav_has_protocol(scheme: str) -> bool:
    import av

    try:
        av.open(f"{scheme}://127.0.0.1:{free_port()}", timeout=(0.5, 0.5)).close()
    except av.error.ProtocolNotFoundError:
        return False
    except Exception:  # noqa: BLE001 (refused, timed out: the protocol is there)
        pass
    return True


def test_srt_streams_or_names_the_missing_protocol():
    port = free_port(socket.SOCK_DGRAM)
    url = f"srt://127.0.0.1:{port}"
    if not pyav_has_protocol("srt"):  # PyPI's PyAV wheels are built without libsrt
        with pytest.raises(EnvironmentMissing, match="this FFmpeg build cannot read srt://") as err:
            open_live(url)
        assert err.value.exit_code == 5 and "\n" not in str(err.value)
        return
    sender = ffmpeg_sender(["-f", "mpegts", f"{url}?mode=listener"], loops=2)
    try:
        with open_when_listening(url, open_timeout_s=5) as src:
            frames = take(src, 20)
    finally:
        sender.stop()
    assert len(frames) == 20
    assert_ordered(frames)


def test_url_refused_fails_at_once_without_credentials_in_the_message():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match=f"rtsp://127.0.0.1:{port}/x does not answer") as err:
        open_live(f"rtsp://user:secret@127.0.0.1:{port}/x", open_timeout_s=3)
    assert time.monotonic() - t0 < 3 and "secret" not in str(err.value)


def test_v4l2_missing_device():
    with pytest.raises(InputError, match=r"camera /dev/video97 does not exist: list the cameras") as err:
        open_live("/dev/video97")
    assert err.value.exit_code == 3


def test_v4l2_device_that_is_not_a_camera():
    with pytest.raises(InputError, match=r"/dev/null is not a V4L2 camera \(") as err:
        open_live("/dev/null")
    assert err.value.exit_code == 3 and "\n" not in str(err.value)


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="folder of frames"):
        open_live(str(CLIP.parent))
    with pytest.raises(UsageError, match="--reconnect"):
        open_live(str(CLIP), reconnect=-1)
    with pytest.raises(UsageError, match="backoff"):
        open_live(str(CLIP), backoff_s=(2.0, 1.0))


def test_close_stops_the_reader_promptly():
    src = open_live(str(CLIP), realtime=True)
    take(src, 3)
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 0.5 and not src.running
    assert list(src) == []  # closed: iteration ends
    stats = src.stats
    assert stats.frames_received == stats.frames_taken + stats.frames_dropped


def test_named_pipe_is_read_live(tmp_path):
    fifo = tmp_path / "in.ts"
    os.mkfifo(fifo)
    feed = ffmpeg_sender(["-f", "mpegts", "-y", str(fifo)])  # blocks on open until the reader opens the FIFO
    try:
        assert classify_source(str(fifo)) == "file" and is_live(str(fifo))
        with open_live(str(fifo), open_timeout_s=5) as src:
            frames = take(src, 1000, deadline_s=20)  # a pipe ends at end of file
            stats = src.stats
    finally:
        feed.stop()
    assert stats.frames_received == CLIP_FRAMES and stats.frames_taken == len(frames)
    assert_ordered(frames)


def test_stdin_that_is_not_a_video_is_input_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 1000)
    code = ("from sam2trt.errors import Sam2TrtError\nfrom sam2trt.video.live import open_live\n"
            "try:\n    open_live('-', open_timeout_s=3)\nexcept Sam2TrtError as e:\n    print(e.exit_code, e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(text, "rb") as stdin:
        run = subprocess.run([sys.executable, "-c", code], stdin=stdin, capture_output=True, text=True,
                             timeout=30, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("3 stdin is not a readable video (") and run.stdout.count("\n") == 1
