"""Frame sources and output writers (sam2trt.video), on small synthetic data."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from sam2trt.errors import InputError, RuntimeFailure
from sam2trt.video import (
    JsonLinesWriter,
    MaskPngWriter,
    OverlayVideoWriter,
    VideoInfo,
    davis_palette,
    list_frame_files,
    open_frames,
    overlay_masks,
    probe,
)
from tests.helpers import gradient_frame, make_video

VTEST16 = Path(__file__).parent / "data" / "vtest16"


def _read_all(path) -> tuple[VideoInfo, list[tuple[int, np.ndarray]]]:
    with open_frames(path) as src:
        return src.info, list(src)


# -- reading videos -----------------------------------------------------------


def test_video_file_streams_rgb_frames_in_order(tmp_path):
    path = make_video(tmp_path / "v.mp4")
    info, frames = _read_all(path)
    assert info == VideoInfo(width=64, height=48, fps=25.0, num_frames=10)
    assert [i for i, _ in frames] == list(range(10))
    for i, rgb in frames:
        assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
        assert abs(float(rgb[..., 2].mean()) - 20 * i) < 8  # blue channel encodes the index
    assert probe(path) == info


def test_video_can_be_iterated_twice_and_fps_override(tmp_path):
    path = make_video(tmp_path / "v.mkv", n=3)
    with open_frames(path, fps=12.5) as src:
        assert src.info.fps == 12.5 and src.info.num_frames is None  # Matroska stores no count
        assert len(list(src)) == 3
        assert len(list(src)) == 3


def test_video_frame_size_change_is_runtime_failure(tmp_path):
    # MPEG-TS segments can be concatenated; the decoder follows the size change
    first = make_video(tmp_path / "a.ts", 64, 48, n=2, codec="mpeg2video").read_bytes()
    second = make_video(tmp_path / "b.ts", 32, 24, n=2, codec="mpeg2video").read_bytes()
    path = tmp_path / "ab.ts"
    path.write_bytes(first + second)
    with open_frames(path) as src, pytest.raises(RuntimeFailure, match=r"frame \d+ .* 32x24 .* 64x48"):
        list(src)


def test_bad_inputs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_frames(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no .jpg"):
        open_frames(tmp_path / "empty")
    text = tmp_path / "video.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(InputError, match="not a readable video"):
        open_frames(text)
    with pytest.raises(InputError):
        probe(text)


def test_container_without_video_stream_is_input_error(tmp_path):
    path = tmp_path / "audio.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    with pytest.raises(InputError, match="no video stream"):
        open_frames(path)


def test_video_with_zero_frames_is_input_error(tmp_path):
    path = make_video(tmp_path / "empty.avi", n=0)
    with pytest.raises(InputError, match="no decodable video frames"):
        probe(path)


def test_truncated_video_ends_or_fails_cleanly(tmp_path):
    data = make_video(tmp_path / "v.mkv", w=64, h=48, n=10).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 4 // 5])
    try:
        with open_frames(cut) as src:
            frames = list(src)
    except RuntimeFailure as exc:
        assert "after frame" in str(exc)
    else:
        assert 0 < len(frames) < 10


# -- reading frame folders ----------------------------------------------------


def test_folder_numeric_order_and_pil_pixels(tmp_path):
    for i, name in enumerate(["10.jpg", "0.jpg", "2.JPG"]):
        Image.fromarray(gradient_frame(i, 32, 24)).save(tmp_path / name, quality=90)
    (tmp_path / "readme.txt").write_text("ignored")
    (tmp_path / ".0.jpg").write_bytes(b"hidden, ignored")
    assert [p.name for p in list_frame_files(tmp_path)] == ["0.jpg", "2.JPG", "10.jpg"]
    info, frames = _read_all(tmp_path)
    assert info == VideoInfo(width=32, height=24, fps=30.0, num_frames=3)
    assert [i for i, _ in frames] == [0, 1, 2]
    for (_, rgb), name in zip(frames, ["0.jpg", "2.JPG", "10.jpg"]):
        with Image.open(tmp_path / name) as img:
            expected = np.asarray(img.convert("RGB"))  # bit-identical to PIL
        assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous and np.array_equal(rgb, expected)


def test_folder_non_numeric_names_sort_by_name(tmp_path):
    for name in ["b.png", "a10.png", "a2.png"]:
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    assert [p.name for p in list_frame_files(tmp_path)] == ["a10.png", "a2.png", "b.png"]


def test_folder_modes_converted_to_rgb8(tmp_path):
    gray = (np.arange(24 * 32).reshape(24, 32) % 256).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "00000.png")  # L
    g16 = (np.arange(24 * 32).reshape(24, 32) * 80).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "00001.png")  # 16-bit grayscale
    rgba = np.dstack([gradient_frame(0, 32, 24), np.full((24, 32), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "00002.png")  # RGBA
    pal = Image.fromarray((gray % 4).astype(np.uint8))
    pal.putpalette(davis_palette().tobytes())
    pal.save(tmp_path / "00003.png")  # P
    with Image.open(tmp_path / "00001.png") as img:
        assert img.mode.startswith("I")
    _, frames = _read_all(tmp_path)
    out = [rgb for _, rgb in frames]
    assert all(f.shape == (24, 32, 3) and f.dtype == np.uint8 for f in out)
    assert np.array_equal(out[0], np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(out[1][..., 0], (g16 >> 8).astype(np.uint8))  # high byte, not clipped
    assert np.array_equal(out[2], rgba[..., :3])
    assert np.array_equal(out[3], davis_palette()[gray % 4])


def test_folder_size_change_and_corrupt_frame(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "0.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "1.png")
    (tmp_path / "2.png").write_bytes(b"garbage")
    with open_frames(tmp_path) as src, pytest.raises(RuntimeFailure, match="after frame 1"):
        list(src)
    Image.new("RGB", (8, 16)).save(tmp_path / "2.png")
    with open_frames(tmp_path) as src, pytest.raises(RuntimeFailure, match="frame 2 .* 8x16"):
        list(src)
    (tmp_path / "0.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read frame"):
        open_frames(tmp_path)


def test_vtest16_fixture():
    info, frames = _read_all(VTEST16)
    assert (info.width, info.height, info.num_frames) == (768, 576, 16)
    assert len(frames) == 16 and all(f.shape == (576, 768, 3) for _, f in frames)
    assert sum(p.stat().st_size for p in VTEST16.iterdir()) < 2_000_000


# -- writers ------------------------------------------------------------------


def test_davis_palette():
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert pal[8].tolist() == [64, 0, 0] and pal[255].tolist() == [224, 224, 192]


def test_overlay_masks_tints_objects_only():
    rgb = np.full((40, 50, 3), 100, np.uint8)
    labels = np.zeros((40, 50), np.uint8)
    labels[10:30, 10:30] = 1
    labels[5:15, 35:45] = 3
    out = overlay_masks(rgb, labels, alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out is not rgb
    assert np.array_equal(rgb, np.full((40, 50, 3), 100, np.uint8))  # input untouched
    assert np.array_equal(out[labels == 0][:1], [[100, 100, 100]]) and (out[35:, :5] == 100).all()
    assert out[20, 20].tolist() == [114, 50, 50]  # interior: 0.5 * 100 + 0.5 * (128, 0, 0)
    assert out[10, 20].tolist() == [191, 0, 0]  # contour: brightened colour
    assert out[5, 40].tolist() == [191, 191, 0]


def test_overlay_writer_round_trip_same_size_and_count(tmp_path):
    for w, h in [(64, 48), (767, 575)]:
        target = tmp_path / f"overlay_{w}.mp4"
        with OverlayVideoWriter(target, w, h, fps=30000 / 1001) as writer:
            assert not target.exists()
            for i in range(4):
                writer.write(gradient_frame(i, w, h))
        assert target.exists() and not writer.tmp_path.exists()
        info, frames = _read_all(target)
        assert (info.width, info.height) == (w, h) and len(frames) == 4
        assert abs(info.fps - 30000 / 1001) < 1e-6
        assert all(f.shape == (h, w, 3) and f.flags.c_contiguous for _, f in frames)
        assert np.abs(frames[3][1].astype(int) - gradient_frame(3, w, h)).mean() < 3


def test_overlay_writer_finalises_on_exception_and_abort_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "partial.mp4"
    with pytest.raises(KeyError):
        with OverlayVideoWriter(target, 64, 48, 10) as writer:
            writer.write(gradient_frame(0, 64, 48))
            writer.write(gradient_frame(1, 64, 48))
            raise KeyError("stop")
    assert len(_read_all(target)[1]) == 2

    target2 = tmp_path / "aborted.mp4"
    writer = OverlayVideoWriter(target2, 64, 48, 10)
    writer.write(gradient_frame(0, 64, 48))
    writer.abort()
    assert list(tmp_path.glob("*aborted*")) == []
    with pytest.raises(ValueError):
        OverlayVideoWriter(tmp_path / "x.mp4", 64, 48, 10).write(np.zeros((48, 64), np.uint8))


def test_mask_png_writer(tmp_path):
    labels = np.zeros((24, 32), np.uint8)
    labels[2:10, 3:9] = 1
    labels[12:20, 15:30] = 2
    writer = MaskPngWriter(tmp_path / "masks")
    path = writer.write(7, labels)
    assert path == tmp_path / "masks" / "00007.png" and not path.exists()  # staged until close
    writer.close()
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["00007.png"]
    with Image.open(path) as img:
        assert img.mode == "P"
        assert np.array_equal(np.asarray(img), labels)
        pal = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)
        assert np.array_equal(pal[:3], davis_palette()[:3])


def test_jsonl_writer_renames_on_close_and_abort(tmp_path):
    target = tmp_path / "tracks.jsonl"
    with JsonLinesWriter(target) as writer:
        writer.write({"frame": 0, "score": np.float32(0.5), "box": np.array([1, 2, 3, 4])})
        writer.write({"frame": 1})
        assert not target.exists() and writer.tmp_path.exists()
    lines = target.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"frame": 0, "score": 0.5, "box": [1, 2, 3, 4]}, {"frame": 1}]

    with pytest.raises(RuntimeError):
        with JsonLinesWriter(tmp_path / "err.jsonl") as writer:
            writer.write({"frame": 0})
            raise RuntimeError("boom")
    assert (tmp_path / "err.jsonl").read_text() == '{"frame": 0}\n'

    writer = JsonLinesWriter(tmp_path / "gone.jsonl")
    writer.write({"frame": 0})
    writer.abort()
    assert list(tmp_path.glob("*gone*")) == []


def test_disk_full_is_runtime_failure(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    writer = MaskPngWriter(tmp_path / "m")
    with pytest.raises(RuntimeFailure, match="disk full while writing .*00000.png"):
        writer.write(0, np.zeros((4, 4), np.uint8))
    writer.close()  # nothing was written: no folder appears
    assert list(tmp_path.iterdir()) == []


def _overlay_reference(rgb, label_map, alpha):
    """overlay_masks as first written: the whole frame, boolean indexing (the slow, obvious version)."""
    import cv2

    palette = davis_palette()
    out = rgb.copy()
    fg = label_map > 0
    if not fg.any():
        return out
    tint = palette[label_map[fg]].astype(np.float32)
    out[fg] = (out[fg].astype(np.float32) * (1.0 - alpha) + tint * alpha + 0.5).astype(np.uint8)
    for k in np.unique(label_map[fg]):
        colour = palette[k].astype(np.int32)
        bright = np.where(colour > 0, colour + (255 - colour) // 2, 0)
        contours, _ = cv2.findContours((label_map == k).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in bright), thickness=2)
    return out


def test_overlay_on_the_objects_box_equals_the_whole_frame_version():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(2, 60, size=2)
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        labels = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(0, 4)):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            labels[y0:y0 + rng.integers(1, 25), x0:x0 + rng.integers(1, 25)] = rng.integers(1, 6)
        alpha = float(rng.choice([0.5, 0.3, 1.0, 0.0]))
        np.testing.assert_array_equal(overlay_masks(rgb, labels, alpha), _overlay_reference(rgb, labels, alpha))
