"""The transcode floor: decode + re-encode with the overlay writer's settings, timed."""

from __future__ import annotations

import av
import pytest

from sam2trt.bench import transcode_floor
from sam2trt.errors import InputError
from tests.helpers import make_video


@pytest.fixture(scope="module")
def clip(vtest_clip6):
    """A 6-frame 768x576 mp4 of the test frames, written by the overlay writer."""
    return vtest_clip6


def test_transcode_floor_reencodes_like_the_overlay_writer(clip, tmp_path):
    kept = tmp_path / "floor.mp4"
    r = transcode_floor(str(clip), frames=4, threads=1, out=str(kept))
    assert (r["frames"], r["width"], r["height"]) == (4, 768, 576)
    assert r["wall_s"] > 0 and r["cpu_s"] > 0
    assert r["cpu_ms_per_frame"] == pytest.approx(1000 * r["cpu_s"] / 4, rel=0.01)
    with av.open(str(kept)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert (s.codec_context.width, s.codec_context.height) == (768, 576)
        assert s.codec_context.colorspace == 1 and s.codec_context.color_range == 1  # BT.709, limited
        assert sum(1 for _ in c.decode(s)) == 4
    assert transcode_floor(str(clip))["frames"] == 6  # all frames, automatic threads


def test_transcode_floor_rejects_what_it_cannot_time(tmp_path, vtest_frames):
    with pytest.raises(InputError, match="folder"):
        transcode_floor(str(vtest_frames))
    with pytest.raises(InputError, match="even width"):
        transcode_floor(str(make_video(tmp_path / "odd.mp4", w=65, h=48, n=2)))
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="not a readable video"):
        transcode_floor(str(tmp_path / "junk.mp4"))
