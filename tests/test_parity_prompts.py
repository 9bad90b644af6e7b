"""Parity with the official predictor for every prompt kind, and for an object joining late.

One sam2trt run tracks four objects at once: a single click (multimask
output), several clicks (single mask with the stability fallback), a mask
prompt (``add_new_mask``), and a box given on a later frame. The official
predictor tracks objects independently (per-object memory, batch size 1), so
each object is compared with an official run that holds that object alone.

An object prompted on frame 3 joins the tracking there. The official 1.1.0
predictor cannot run two objects whose first prompts are on different frames
(on the earlier frames the late object has only bfloat16 memory and no
pointer, and attention fails with a dtype error on CPU), so its reference is
the official run of that object alone, starting at its prompt frame.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import iou_table, run_official_prompt, run_ours_prompts

pytestmark = [pytest.mark.slow, pytest.mark.parity]
FRAMES = 6


def ellipse_mask(h=576, w=768, cx=268, cy=262, rx=18, ry=48):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def test_parity_points_mask_and_late_object(tiny_model_dir, official_predictor, vtest_frames):
    from sam2trt.tracker import ObjectPrompt

    prompts = [
        ObjectPrompt(1, 0, points=((268.0, 260.0, 1),)),
        ObjectPrompt(2, 0, points=((660.0, 270.0, 1), (655.0, 300.0, 1), (700.0, 250.0, 0))),
        ObjectPrompt(3, 0, mask=ellipse_mask()),
        ObjectPrompt(4, 3, box=(498.0, 155.0, 531.0, 233.0)),
    ]
    ours = run_ours_prompts(tiny_model_dir, vtest_frames, prompts, FRAMES)
    assert sorted(ours) == list(range(FRAMES))
    assert [oid for oid in ours[0]] == [1, 2, 3] and [oid for oid in ours[3]] == [1, 2, 3, 4]
    for p in prompts:
        ref = run_official_prompt(official_predictor, vtest_frames, p, FRAMES - p.frame_idx)
        mine = {f: ours[f][p.obj_id] for f in ref}
        assert sorted(ref) == list(range(p.frame_idx, FRAMES))
        iou_table(mine, ref, f"object {p.obj_id}")
