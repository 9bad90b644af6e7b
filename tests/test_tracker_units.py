"""Unit tests of the tracker core that need neither torch nor ``sam2`` (those run against the official
functions, in PyTorch, are in ``test_tracker_official.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sam2trt.errors import UsageError
from sam2trt.tracker.memory_bank import FrameMemory, ObjectMemory, prune, select_memory
from sam2trt.tracker.processing import fill_holes, mask_box, masks_to_label_map
from sam2trt.tracker.prompts import parse_box, parse_point
from tests.helpers import SelectionSpec


# ---------------------------------------------------------------- memory selection
def test_prune_forward_keeps_what_the_backward_pass_reads():
    """Forward from frame 50 with keep_after=50 over 200 frames, then backward: the backward
    selection equals the one made with the full (unpruned) bank, and the bank stays flat."""
    def mem(t):
        return FrameMemory(np.full((64, 2, 2), t + 1, np.float32), np.full(256, t + 1, np.float32), 1.0)

    full, pruned = ObjectMemory(cond={50: mem(50)}), ObjectMemory(cond={50: mem(50)})
    for t in range(51, 250):
        for bank in (full, pruned):
            bank.non_cond[t] = mem(t)
        prune(pruned, t + 1, SelectionSpec, keep_after=50)
        assert len(pruned.non_cond) <= 32
    for t in range(49, 0, -1):
        a, b = select_memory(full, t, 250, SelectionSpec, reverse=True), select_memory(pruned, t, 250, SelectionSpec, reverse=True)
        assert a.layout == b.layout
        assert all(np.array_equal(x, y) for x, y in zip(a.features, b.features))
        assert all(np.array_equal(x, y) for x, y in zip(a.obj_ptrs, b.obj_ptrs))
        for bank in (full, pruned):
            bank.non_cond[t] = mem(t)
        prune(pruned, t - 1, SelectionSpec, reverse=True)
        assert len(pruned.non_cond) <= 32
    assert len(pruned.non_cond) <= 16


def test_prune_keeps_bank_flat_and_selection_unchanged():
    def mem(t):
        return FrameMemory(np.full((64, 2, 2), t + 1, np.float32), np.full(256, t + 1, np.float32), 1.0)

    full = ObjectMemory(cond={0: mem(0)})
    pruned = ObjectMemory(cond={0: mem(0)})
    for t in range(1, 200):
        for bank in (full, pruned):
            bank.non_cond[t] = mem(t)
        prune(pruned, t + 1, SelectionSpec)
        a, b = select_memory(full, t + 1, None, SelectionSpec), select_memory(pruned, t + 1, None, SelectionSpec)
        assert a.layout == b.layout
        assert all(np.array_equal(x, y) for x, y in zip(a.features, b.features))
        assert len(pruned.non_cond) <= 16
        assert sum(m.maskmem_features is not None for m in pruned.non_cond.values()) <= 8


def test_select_memory_needs_a_conditioning_frame():
    with pytest.raises(ValueError):
        select_memory(ObjectMemory(), 3, 10, SelectionSpec)


# ------------------------------------------------------------ numeric helpers
def test_label_map_and_boxes():
    logits = np.full((2, 4, 5), -1.0, np.float32)
    logits[0, 1:3, 1:4] = 2.0
    logits[1, 2:4, 3:5] = 3.0  # overlaps object 1 at (2, 3): higher logit wins
    lm = masks_to_label_map(logits, [1, 7])
    assert lm.dtype == np.uint8
    assert lm[1, 1] == 1 and lm[2, 3] == 7 and lm[0, 0] == 0
    assert mask_box(logits[0] > 0) == [1, 1, 3, 2]
    assert mask_box(np.zeros((3, 3), bool)) is None


# -------------------------------------------------------------------- prompts
@given(st.integers(-5000, 5000), st.integers(-5000, 5000), st.integers(1, 5000), st.integers(1, 5000))
@settings(max_examples=200, deadline=None)
def test_parse_box_roundtrip(x, y, w, h):
    assert parse_box(f"{x},{y},{w},{h}") == (x, y, x + w, y + h)
    assert parse_box(f" {x}, {y} ,{w},{h} ") == (x, y, x + w, y + h)


@given(st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_parse_box_rejects_or_parses_anything(text):
    try:
        x0, y0, x1, y1 = parse_box(text)
    except UsageError as e:
        assert "\n" not in str(e) and "box" in str(e)
    else:
        assert x1 > x0 and y1 > y0


@pytest.mark.parametrize("text", ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "1,2,0,4", "1,2,3,-4", "nan,1,2,3", "1,2,inf,3"])
def test_parse_box_errors(text):
    with pytest.raises(UsageError):
        parse_box(text)


@pytest.mark.parametrize("text,want", [("3,4", (3.0, 4.0, 1)), ("3,4,0", (3.0, 4.0, 0)), ("3.5,4,1", (3.5, 4.0, 1))])
def test_parse_point(text, want):
    assert parse_point(text) == want


@pytest.mark.parametrize("text", ["3", "3,4,2", "3,4,1,1", "x,4"])
def test_parse_point_errors(text):
    with pytest.raises(UsageError):
        parse_point(text)


def test_build_prompts_ids_frames_and_conflicts():
    from sam2trt.tracker.prompts import build_prompts

    ps = build_prompts(["250,215,36,97", "3@40:1,1,5,5", "10,10,4,4"], ["3:2,3,0"], [], prompt_frame=2)
    assert [(p.obj_id, p.frame_idx) for p in ps] == [(1, 2), (2, 2), (3, 40)]
    assert ps[2].points == ((2.0, 3.0, 0),) and ps[1].box == (10.0, 10.0, 14.0, 14.0)
    only_points = build_prompts([], ["3,4", "@5:5,6,0"], [], prompt_frame=0)
    assert len(only_points) == 1 and only_points[0].frame_idx == 5 and len(only_points[0].points) == 2
    masks = build_prompts([], [], ["2@7:m.png"], load_mask=lambda path: np.ones((2, 2), bool))
    assert masks[0].obj_id == 2 and masks[0].frame_idx == 7 and masks[0].mask.all()
    several = build_prompts(["1@0:1,1,5,5", "1@9:2,2,5,5"], ["1@4:5,5", "1@9:3,3,0", "2@4:1,1"], [],
                            load_mask=lambda path: np.ones((2, 2), bool))
    assert [(p.obj_id, p.frame_idx) for p in several] == [(1, 0), (1, 4), (1, 9), (2, 4)]
    assert several[2].box == (2.0, 2.0, 7.0, 7.0) and several[2].points == ((3.0, 3.0, 0),)
    mixed = build_prompts(["1@3:1,1,5,5"], ["1:2,2"], ["1@8:m.png"], load_mask=lambda path: np.ones((2, 2), bool))
    assert [(p.frame_idx, p.mask is not None) for p in mixed] == [(3, False), (8, True)]
    assert mixed[0].points == ((2.0, 2.0, 1),)  # no frame: the object's first named frame
    for boxes, points, mask_args, words in [
        (["1,1,2,2", "1,1,2,2"], ["5,5"], [], "names no object"),
        (["2:1,1,2,2", "2:1,1,3,3"], [], [], "two boxes"),
        (["300:1,1,2,2"], [], [], "out of range"),
        (["1,1,2,2"], [], ["m.png"], "a mask and a box"),
    ]:
        with pytest.raises(UsageError, match=words):
            build_prompts(boxes, points, mask_args, load_mask=lambda path: np.ones((2, 2), bool))


def _fill_holes_whole_mask(logits: np.ndarray, max_area: int) -> np.ndarray:
    """The plain formula on the whole mask (what fill_holes did before it labelled a crop)."""
    import cv2

    out = logits.copy()
    for k in range(out.shape[0]):
        n, labels, stats, _ = cv2.connectedComponentsWithStats((out[k] <= 0).astype(np.uint8), connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA].copy()
        areas[0] = max_area + 1
        out[k][areas[labels] <= max_area] = 0.1
    return out


def test_fill_holes_on_a_crop_equals_the_whole_mask():
    rng = np.random.default_rng(5)
    cases = []
    for _ in range(3000):
        h, w = rng.integers(2, 30, size=2)
        logits = -np.ones((1, h, w), np.float32)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
        logits[0, y0:y1, x0:x1] = np.where(rng.random((y1 - y0, x1 - x0)) < 0.8, 1.0, -1.0)
        cases.append((logits, int(rng.integers(1, 12))))
    cases.append((np.ones((1, 5, 5), np.float32), 8))
    cases.append((-np.ones((1, 2, 3), np.float32), 8))  # all background, smaller than max_area
    for logits, area in cases:
        np.testing.assert_array_equal(fill_holes(logits, area), _fill_holes_whole_mask(logits, area))
