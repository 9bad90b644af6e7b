"""Real servers on 127.0.0.1 for the live tests: GStreamer RTSP, ``ffmpeg -listen`` HTTP, ffmpeg UDP senders.

Each is a subprocess the test stops itself (``stop()``: SIGKILL, bounded wait).
The tests skip, naming what to install, when ``ffmpeg`` or the system Python's
GStreamer RTSP server is missing (``scripts/install_live_test_deps.sh``).
"""

from __future__ import annotations

import functools
import pathlib
import selectors
import shutil
import signal
import socket
import subprocess
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CLIP = HERE.parent / "data" / "live_clip.mp4"
"""4 s, 25 fps, 320x240 H.264 (keyframe every 10 frames), 100 frames: see tests/data/README.md."""
CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 100, 25, (320, 240)
SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_HINT = "run scripts/install_live_test_deps.sh"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 free right now (TCP by default, ``socket.SOCK_DGRAM`` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache
def rtsp_server_missing() -> str | None:
    """Why the GStreamer RTSP server cannot run here, or ``None``."""
    if not pathlib.Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON}"
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer; "
             "from gi.repository import Gst; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in ('qtdemux', 'h264parse', 'rtph264pay'))")
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else f"GStreamer RTSP server unavailable ({r.stderr.strip().splitlines()[-1:]})"


def need_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.skip(f"the ffmpeg program is missing: {INSTALL_HINT}")
    return path


def need_rtsp_server() -> None:
    why = rtsp_server_missing()
    if why:
        pytest.skip(f"{why}: {INSTALL_HINT}")


class Proc:
    """A server subprocess; ``stop()`` kills it (SIGKILL) and waits at most 5 s."""

    def __init__(self, args: list[str], ready_line: str | None = None, timeout_s: float = 15.0):
        self.args = args
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if ready_line is not None:
            self._wait_for(ready_line, timeout_s)

    def _wait_for(self, line: str, timeout_s: float) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())) and self.p.stdout.readline().strip() == line:
                return
            if self.p.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{self.args[:3]} did not print {line!r} within {timeout_s} s")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(5)
        if self.p.stdout:
            self.p.stdout.close()


def rtsp_server(port: int) -> Proc:
    """``rtsp://127.0.0.1:PORT/clip``: :data:`CLIP` at real-time pace (tests/servers/rtsp_server.py)."""
    return Proc([SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), str(CLIP), str(port)], ready_line="ready")


def ffmpeg_sender(output_args: list[str], *, realtime: bool = True, loops: int = 0) -> Proc:
    """``ffmpeg [-re] -stream_loop LOOPS -i CLIP -c copy OUTPUT_ARGS...`` (no re-encoding)."""
    args = [need_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin"]
    args += (["-re"] if realtime else []) + ["-stream_loop", str(loops), "-i", str(CLIP), "-c", "copy"]
    return Proc(args + output_args)
