"""Tracking in both directions and prompts on several frames, against the official predictor.

The reference for ``both`` is what the official demo does
(demo/backend/server/inference/predictor.py ``propagate_in_video``):
``SAM2VideoPredictor.propagate_in_video`` forward from the earliest prompt
frame, then ``propagate_in_video(reverse=True)`` from it, all prompts added
first. Ours is the whole ``track`` pipeline (:func:`sam2trt.pipeline.run_track`:
reader segments, backward chunks, results written in frame order), read back
from its PNG masks. Bar: mean IoU >= 0.999, no frame below 0.99 (per object).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sam2trt.pipeline import TrackJob, run_track
from sam2trt.tracker import ObjectPrompt
from sam2trt.video import open_frames
from tests.helpers import iou_table, run_cli, run_official_prompt, session_runners

BOX = (250, 215, 36, 97)
BOX2 = (636, 238, 50, 85)
LATE_FRAME, LATE_BOX = 11, (498.0, 155.0, 531.0, 233.0)  # corners


def _xyxy(b):
    x, y, w, h = b
    return (x, y, x + w, y + h)


def run_official_prompts(predictor, frames_dir, prompts, directions):
    """``{frame_idx: [K, H, W] logits}``: all prompts added first (one call per object and frame),
    then ``propagate_in_video`` in each of ``directions`` (``False`` forward, ``True`` reverse)."""
    import torch

    out = {}
    with torch.inference_mode():
        state = predictor.init_state(str(frames_dir))
        predictor.fill_hole_area = 0
        for p in prompts:
            pts = [(x, y) for x, y, _ in p.points] or None
            labels = [lab for _, _, lab in p.points] or None
            predictor.add_new_points_or_box(state, frame_idx=p.frame_idx, obj_id=p.obj_id, points=pts,
                                            labels=labels, box=list(p.box) if p.box else None)
        for reverse in directions:
            for idx, _, masks in predictor.propagate_in_video(state, reverse=reverse):
                out[idx] = masks[:, 0].numpy()
    predictor.fill_hole_area = 8
    return out


def run_pipeline(model_dir, frames_dir, prompts, direction, tmp_path):
    """``{frame_idx: label map}`` read back from the pipeline's PNG masks, and the JSON-lines frame order.

    The session's ONNX Runtime runners (:func:`tests.helpers.session_runners`: each frame encoded once).
    """
    spec, runners = session_runners(model_dir)
    job = TrackJob(video=str(frames_dir), prompts=prompts, direction=direction,
                   masks_dir=str(tmp_path / "masks"), json=str(tmp_path / "o.jsonl"), fill_hole_area=0)
    summary = run_track(job, spec, runners)
    labels = {int(p.stem): np.asarray(Image.open(p)) for p in sorted((tmp_path / "masks").iterdir())}
    order = [json.loads(line)["frame"] for line in open(tmp_path / "o.jsonl")]
    return labels, order, summary


def label_map(logits, ids):
    """The pipeline's label map from official ``[K, H, W]`` logits (argmax where the best logit > 0)."""
    best = np.argmax(logits, axis=0)
    fg = np.take_along_axis(logits, best[None], 0)[0] > 0
    return np.where(fg, np.asarray(ids)[best], 0)


def compare(ours, ref, ids, present=None):
    """Per-object IoU tables (:func:`tests.test_parity.iou_table`) of our label maps against the official logits.

    ``ref``: ``{frame: [K, H, W] logits}`` of objects ``ids``; ``present``: ``{frame: ids}`` where fewer objects
    are tracked (then ``ref[frame]`` holds those). An object is compared on the frames it is tracked on, and
    must be absent from ours elsewhere.
    """
    assert sorted(ours) == sorted(ref), f"frames differ: ours {sorted(ours)}, official {sorted(ref)}"
    present = present or {}
    labels = {f: label_map(v, present.get(f, ids)) for f, v in ref.items()}
    for oid in ids:
        frames = [f for f in sorted(ref) if oid in present.get(f, ids)]
        ref_k = {f: np.where(labels[f] == oid, 1.0, -1.0) for f in frames}
        ours_k = {f: np.where(ours[f] == oid, 1.0, -1.0) for f in frames}
        iou_table(ours_k, ref_k, f"object {oid}")
        assert all(not (ours[f] == oid).any() for f in ours if f not in frames), f"object {oid} where it is not tracked"


MID = [ObjectPrompt(1, 8, box=_xyxy(BOX)), ObjectPrompt(2, 8, box=_xyxy(BOX2))]


@pytest.fixture(scope="module")
def official_mid(official_predictor, vtest_frames):
    """The official reference of objects 1 and 2 boxed on frame 8: forward, then ``reverse=True``.

    Shared by the one-object and two-object cases: the official predictor runs
    each object on its own (its own memory, batch size 1, no constraint across
    objects), so object 1's logits here are those of a run holding object 1 alone.
    """
    return run_official_prompts(official_predictor, vtest_frames, MID, [False, True])


@pytest.mark.slow
@pytest.mark.parity
def test_both_one_object_prompted_mid_clip(tiny_model_dir, official_mid, vtest_frames, tmp_path):
    """One object boxed on frame 8 of 16, ``both``: every frame 0..15 against the official forward pass,
    then ``reverse=True`` (the official demo's order)."""
    ref = {f: v[:1] for f, v in official_mid.items()}
    ours, order, summary = run_pipeline(tiny_model_dir, vtest_frames, MID[:1], "both", tmp_path)
    assert sorted(ref) == list(range(16)) and order == list(range(16))
    assert summary.frames == 16 and summary.first_frame == 0 and summary.as_dict()["direction"] == "both"
    compare(ours, ref, [1])


@pytest.mark.slow
@pytest.mark.parity
def test_both_two_objects_and_a_late_one(tiny_model_dir, official_predictor, official_mid, vtest_frames, tmp_path):
    """Objects 1 and 2 boxed on frame 8, object 3 on frame 11 (a late object: it keeps its forward semantics,
    tracked from frame 11 on). Reference for 1 and 2: the official predictor holding both, forward then reverse;
    for 3: the official predictor tracking it alone from frame 11 (the official 1.1.0 predictor fails on CPU when
    objects start on different frames)."""
    late = ObjectPrompt(3, LATE_FRAME, box=LATE_BOX)
    ref = dict(official_mid)
    alone = run_official_prompt(official_predictor, vtest_frames, late, 16 - LATE_FRAME)
    assert sorted(alone) == list(range(LATE_FRAME, 16))
    for f, logits in alone.items():
        ref[f] = np.concatenate([ref[f], logits[None]])
    ours, order, summary = run_pipeline(tiny_model_dir, vtest_frames, MID + [late], "both", tmp_path)
    assert sorted(ref) == list(range(16)) and order == list(range(16)) and summary.objects == [1, 2, 3]
    assert summary.frames == 16 and summary.first_frame == 0 and summary.as_dict()["direction"] == "both"
    compare(ours, ref, [1, 2, 3], present={f: [1, 2] for f in range(LATE_FRAME)})


@pytest.mark.slow
@pytest.mark.parity
def test_forward_one_object_prompted_on_two_frames(tiny_model_dir, official_predictor, vtest_frames, tmp_path):
    """A box on frame 0, then the box and a correcting negative click on frame 12, ``forward`` over the 16
    frames: frames 13..15 hold both conditioning frames in memory attention and skip frame 12 among the
    recent memories, and frames 1..11 fill the memory bank past ``num_maskmem``."""
    x0, y0, x1, y1 = _xyxy(BOX)
    prompts = [ObjectPrompt(1, 0, box=(x0, y0, x1, y1)),
               ObjectPrompt(1, 12, box=(x0, y0, x1, y1), points=((x0 + 18, y1 - 6, 0),))]  # a correcting click
    ref = run_official_prompts(official_predictor, vtest_frames, prompts, [False])
    ours, order, _ = run_pipeline(tiny_model_dir, vtest_frames, prompts, "forward", tmp_path)
    assert sorted(ref) == list(range(16)) and order == list(range(16))
    compare(ours, ref, [1])


@pytest.mark.slow
@pytest.mark.parity
def test_backward_alone_from_the_last_frame(tiny_model_dir, official_predictor, vtest_frames, tmp_path):
    """A box on frame 15, ``backward`` alone: frames 15 down to 0 (the memory bank fills past ``num_maskmem``)
    against the official ``propagate_in_video(reverse=True)``."""
    prompts = [ObjectPrompt(1, 15, box=_xyxy(BOX))]
    ref = run_official_prompts(official_predictor, vtest_frames, prompts, [True])
    ours, order, summary = run_pipeline(tiny_model_dir, vtest_frames, prompts, "backward", tmp_path)
    assert sorted(ref) == list(range(16)) and order == list(range(16))
    assert summary.as_dict()["direction"] == "backward"
    compare(ours, ref, [1])


@pytest.mark.slow
def test_cli_both_writes_every_output_in_frame_order(tiny_model_dir, vtest_frames, tmp_path):
    """Box on frame 8, --max-frames 3: frames 5..10 (8..10 forward, 7..5 backward), in frame order;
    the overlay holds frames 0..10 (0..4 unmasked)."""
    import av

    out, masks, jl, coco = tmp_path / "o.mp4", tmp_path / "m", tmp_path / "o.jsonl", tmp_path / "c.json"
    proc = run_cli("track", vtest_frames, "--model", tiny_model_dir, "--box", "1@8:250,215,36,97", "--max-frames", 3,
                   "--out", out, "--masks-dir", masks, "--json", jl, "--coco", coco, "--json-summary", "-q", check=True)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["direction"] == "both" and summary["frames"] == 6 and summary["first_frame"] == 5
    assert sorted(p.name for p in masks.iterdir()) == [f"{i:05d}.png" for i in range(5, 11)]
    assert [json.loads(line)["frame"] for line in open(jl)] == list(range(5, 11))
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 11
    anns = json.load(open(coco))
    frames = [a["image_id"] if "image_id" in a else a.get("frame") for a in
              (anns["annotations"] if isinstance(anns, dict) else anns)]
    assert frames == sorted(frames)


def _bframe_video(path, n=60):
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.options = {"g": "12", "bf": "3", "keyint_min": "12", "sc_threshold": "0"}
        for i in range(n):
            img = np.zeros((64, 96, 3), np.uint8)
            img[:] = (i * 4) % 256
            img[5:15, i:i + 10] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.mark.parametrize("chunk_frames", [1, 5, 1000])
def test_backward_chunks_equal_forward_decode_with_b_frames(tmp_path, chunk_frames):
    path = tmp_path / "b.mp4"
    _bframe_video(path)
    with open_frames(path) as src:
        fwd = dict(src)
        assert len(fwd) == 60
        pts, keys = src.frame_index()
        assert keys == [0, 12, 24, 36, 48]
        rev = list(src.frames(3, 50, reverse=True, chunk_bytes=chunk_frames * 96 * 64 * 3))
        assert [i for i, _ in rev] == list(range(49, 2, -1))
        assert all(np.array_equal(fwd[i], rgb) for i, rgb in rev)
        part = list(src.frames(13, 40))
        assert [i for i, _ in part] == list(range(13, 40)) and all(np.array_equal(fwd[i], x) for i, x in part)


def test_frame_folder_read_backward(vtest_frames):
    with open_frames(vtest_frames) as src:
        fwd = dict(src)
        rev = list(src.frames(2, 9, reverse=True))
    assert [i for i, _ in rev] == list(range(8, 1, -1)) and all(np.array_equal(fwd[i], x) for i, x in rev)


@pytest.mark.parametrize("direction,prompts,objects,encodes", [
    # object 1: a box on frame 2, a correcting click on frame 6; object 2: a box on frame 4, a mask on frame 9.
    # Frames 6 and 9 are encoded ahead, and again when reached (the other object is tracked there).
    ("forward", [ObjectPrompt(1, 2, box=_xyxy(BOX)), ObjectPrompt(1, 6, points=((268.0, 260.0, 0),)),
                 ObjectPrompt(2, 4, box=_xyxy(BOX2)), ObjectPrompt(2, 9, mask="ellipse")],
     {**{f: [1] for f in (2, 3)}, **{f: [1, 2] for f in range(4, 16)}}, 2 + 14),
    # both objects first on frame 5 (a mask for object 2), later prompts on 9 and 12: tracked in both directions
    ("both", [ObjectPrompt(1, 5, box=_xyxy(BOX)), ObjectPrompt(1, 9, points=((268.0, 260.0, 1),)),
              ObjectPrompt(2, 5, mask="ellipse"), ObjectPrompt(2, 12, box=_xyxy(BOX2))],
     {f: [1, 2] for f in range(16)}, 2 + 16),
    # backward from frame 9 with a conditioning frame ahead of it (13), which the backward pass attends to
    ("backward", [ObjectPrompt(1, 9, box=_xyxy(BOX)), ObjectPrompt(1, 13, box=_xyxy(BOX2))],
     {f: [1] for f in range(10)}, 1 + 10),
])
def test_prompts_on_several_frames_through_the_pipeline(vtest_frames, tmp_path, direction, prompts, objects, encodes):
    """Null modules (instant): every direction runs with conditioning frames computed ahead and writes every
    processed frame once, in frame order, with the objects tracked there; a frame is encoded again only when
    an object not prompted there is tracked on it."""
    import dataclasses

    from sam2trt.model_spec import MODULES
    from sam2trt.runtime.base import ModuleRunners
    from sam2trt.runtime.null_backend import host_only_spec, open_null_runners, write_host_only_model
    from tests.test_parity_prompts import ellipse_mask

    prompts = [dataclasses.replace(p, mask=ellipse_mask()) if isinstance(p.mask, str) else p for p in prompts]
    spec = host_only_spec(write_host_only_model(tmp_path / "model"))
    job = TrackJob(video=str(vtest_frames), prompts=prompts, direction=direction, masks_dir=str(tmp_path / "m"),
                   json=str(tmp_path / "t.jsonl"))
    calls = []
    with open_null_runners(spec) as null:
        runners = {m: getattr(null, m) for m in MODULES}
        enc = runners["image_encoder"]

        class Count:
            name = enc.name

            def infer(self, feed, keep=()):
                calls.append(1)
                return enc.infer(feed, keep=keep)

        runners["image_encoder"] = Count()
        summary = run_track(job, spec, ModuleRunners(**runners, backend=null.backend, preprocess=null.preprocess))
    lines = [json.loads(line) for line in open(tmp_path / "t.jsonl")]
    assert {r["frame"]: [o["id"] for o in r["objects"]] for r in lines} == objects
    assert [r["frame"] for r in lines] == sorted(objects) and summary.frames == len(objects)
    assert sorted(int(p.stem) for p in (tmp_path / "m").iterdir()) == sorted(objects)
    assert len(calls) == encodes
