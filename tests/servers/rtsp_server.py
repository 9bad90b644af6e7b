"""A real RTSP server for the live-source tests: GStreamer's gst-rtsp-server serving an MP4 clip at real-time pace.

Run with the SYSTEM Python that has PyGObject (``/usr/bin/python3``; Debian packages
``python3-gi gir1.2-gst-rtsp-server-1.0`` and the GStreamer plugins, see
``scripts/install_live_test_deps.sh``)::

    /usr/bin/python3 tests/servers/rtsp_server.py CLIP.mp4 PORT [MOUNT]

It serves ``rtsp://127.0.0.1:PORT/MOUNT`` (default mount ``clip``), the clip's H.264
track re-packetised (no re-encoding) and paced by the pipeline clock, prints
``ready`` on stdout once listening, and runs until killed. Every client gets
the clip from its start; at the clip's end the server sends end-of-stream.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    clip, port = sys.argv[1], sys.argv[2]
    mount = sys.argv[3] if len(sys.argv) > 3 else "clip"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{clip}" ! qtdemux ! h264parse ! '
                       "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)
    server.get_mount_points().add_factory(f"/{mount}", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
