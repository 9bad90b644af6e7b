#!/bin/sh
# What tests/test_live_sources.py and tests/test_stream_out.py need besides the venv (Debian/Ubuntu, as root):
# the ffmpeg program (HTTP/UDP/stdin senders) and GStreamer's RTSP server for the SYSTEM python
# (/usr/bin/python3 tests/servers/rtsp_server.py). Without them those tests skip, naming this script.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav ffmpeg
