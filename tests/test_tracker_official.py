"""The tracker core against the official functions it mirrors, run side by side in PyTorch.

Needs torch and the official ``sam2`` package (marked ``slow``); the tracker
units that need neither are in ``test_tracker_units.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam2trt.tracker.memory_bank import FrameMemory, ObjectMemory, round_to_bfloat16, select_memory
from sam2trt.tracker.processing import fill_holes, preprocess_frame, stability_scores, upsample_logits
from sam2trt.tracker.prompts import ObjectPrompt
from tests.helpers import SelectionSpec, scipy_connected_components

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")


def _official_selection(model, cond, non_cond, frame_idx, num_frames, reverse=False):
    """Run the official _prepare_memory_conditioned_features and read back what it selected.

    Each frame's memory features and pointer are filled with ``frame + 1`` so the
    captured memory tokens name their frame; position encodings are zero so the
    captured memory_pos of a spatial memory is its ``maskmem_tpos_enc`` row.
    """
    import sam2.modeling.sam2_base as base

    C, Cm, hw = model.hidden_dim, model.mem_dim, 2
    captured = {}

    def entry(t):
        return {"maskmem_features": torch.full((1, Cm, hw, hw), float(t + 1)),
                "maskmem_pos_enc": [torch.zeros(1, Cm, hw, hw)],
                "obj_ptr": torch.full((1, C), float(t + 1))}

    output_dict = {"cond_frame_outputs": {t: entry(t) for t in cond},
                   "non_cond_frame_outputs": {t: entry(t) for t in non_cond}}

    def fake_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens):
        captured.update(memory=memory, memory_pos=memory_pos, n_ptr=num_obj_ptr_tokens)
        return curr[0]

    orig_pe = base.get_1d_sine_pe

    def spy_pe(pos, dim, temperature=10000):
        captured["ptr_tpos"] = pos.clone()
        return orig_pe(pos, dim, temperature)

    model.memory_attention.forward = fake_attention  # instance attribute shadows the method
    base.get_1d_sine_pe = spy_pe
    try:
        with torch.no_grad():
            model._prepare_memory_conditioned_features(
                frame_idx=frame_idx, is_init_cond_frame=False,
                current_vision_feats=[torch.zeros(hw * hw, 1, C)], current_vision_pos_embeds=[torch.zeros(hw * hw, 1, C)],
                feat_sizes=[(hw, hw)], output_dict=output_dict, num_frames=num_frames,
                track_in_reverse=reverse)
    finally:
        del model.memory_attention.forward
        base.get_1d_sine_pe = orig_pe
    n_ptr_tokens = captured["n_ptr"]
    mem, pos = captured["memory"][:, 0], captured["memory_pos"][:, 0]
    spatial = mem[: len(mem) - n_ptr_tokens].reshape(-1, hw * hw, Cm)
    spatial_pos = pos[: len(pos) - n_ptr_tokens].reshape(-1, hw * hw, Cm)
    tpos_table = model.maskmem_tpos_enc[:, 0, 0]
    frames = [int(s[0, 0].item()) - 1 for s in spatial]
    tpos = [int(torch.argmin((tpos_table - p[0]).abs().sum(-1)).item()) for p in spatial_pos]
    ptr_frames = [int(v.item()) - 1 for v in mem[len(mem) - n_ptr_tokens:: C // Cm, 0]]
    return frames, tpos, ptr_frames, captured["ptr_tpos"].numpy()


SCENARIOS = [
    # (cond frames, non-cond frames, frame_idx, num_frames)
    ([0], [], 1, 100),
    ([0], [1, 2], 3, 100),
    ([0], list(range(1, 20)), 20, 100),
    ([0], list(range(1, 20)), 20, 10),       # short video: fewer pointers, other t_diff_max
    ([0], [1, 2, 4, 7, 8, 11], 12, 100),     # gaps are skipped, not padded
    ([3], list(range(4, 12)), 12, 40),       # prompt after frame 0
    ([0, 5], [1, 2, 3], 4, 100),             # a future conditioning frame: memory yes, pointer no
    ([0, 9], list(range(1, 9)) + list(range(10, 30)), 30, 100),
]


@pytest.mark.parametrize("cond,non_cond,frame_idx,num_frames", SCENARIOS)
def test_select_memory_matches_official(official_predictor, cond, non_cond, frame_idx, num_frames):
    frames, tpos, ptr_frames, ptr_tpos = _official_selection(official_predictor, cond, non_cond, frame_idx, num_frames)

    def mem(t):
        return FrameMemory(np.full((64, 2, 2), t + 1, np.float32), np.full(256, t + 1, np.float32), 1.0)

    bank = ObjectMemory(cond={t: mem(t) for t in cond}, non_cond={t: mem(t) for t in non_cond})
    sel = select_memory(bank, frame_idx, num_frames, SelectionSpec)
    assert [int(f[0, 0, 0]) - 1 for f in sel.features] == frames
    assert sel.tpos_index == tpos
    assert [int(p[0]) - 1 for p in sel.obj_ptrs] == ptr_frames
    np.testing.assert_array_equal(sel.obj_ptr_tpos(), ptr_tpos)


REVERSE_SCENARIOS = [
    # (cond frames, non-cond frames, frame_idx, num_frames): tracking backward (track_in_reverse=True)
    ([8], [], 7, 16),                                   # first backward frame, nothing inherited
    ([8], list(range(9, 16)), 7, 16),                   # the forward pass's memories after the prompt frame
    ([8], list(range(9, 16)) + [7, 6, 5], 4, 16),       # mixed: backward frames then inherited ones
    ([50], list(range(51, 80)) + list(range(40, 50)), 39, 100),  # pointers capped at max_obj_ptrs - 1
    ([30], list(range(31, 40)), 29, 10),                # short video: fewer pointers, other t_diff_max
    ([10, 20], list(range(11, 20)) + [9, 8], 7, 100),   # a cond frame ahead of the direction: memory and pointer
    ([0, 12], list(range(1, 12)) + list(range(13, 20)), 5, 100),  # a cond frame behind: memory yes, pointer no
    ([5], [6, 8, 11, 12], 4, 100),                      # gaps are skipped, not padded
    ([3], [], 0, 4),                                    # frame 0
]


@pytest.mark.parametrize("cond,non_cond,frame_idx,num_frames", REVERSE_SCENARIOS)
def test_select_memory_in_reverse_matches_official(official_predictor, cond, non_cond, frame_idx, num_frames):
    frames, tpos, ptr_frames, ptr_tpos = _official_selection(official_predictor, cond, non_cond, frame_idx,
                                                             num_frames, reverse=True)

    def mem(t):
        return FrameMemory(np.full((64, 2, 2), t + 1, np.float32), np.full(256, t + 1, np.float32), 1.0)

    bank = ObjectMemory(cond={t: mem(t) for t in cond}, non_cond={t: mem(t) for t in non_cond})
    sel = select_memory(bank, frame_idx, num_frames, SelectionSpec, reverse=True)
    assert [int(f[0, 0, 0]) - 1 for f in sel.features] == frames
    assert sel.tpos_index == tpos
    assert [int(p[0]) - 1 for p in sel.obj_ptrs] == ptr_frames
    np.testing.assert_array_equal(sel.obj_ptr_tpos(), ptr_tpos)


@pytest.mark.parametrize("stride", [1, 3])
def test_select_memory_in_reverse_with_stride_matches_official(official_predictor, stride):
    class Strided(SelectionSpec):
        memory_temporal_stride_for_eval = stride

    old = official_predictor.memory_temporal_stride_for_eval
    official_predictor.memory_temporal_stride_for_eval = stride
    try:
        frames, tpos, ptr_frames, _ = _official_selection(official_predictor, [40], list(range(20, 40)) +
                                                          list(range(41, 60)), 19, 100, reverse=True)
    finally:
        official_predictor.memory_temporal_stride_for_eval = old

    def mem(t):
        return FrameMemory(np.full((64, 2, 2), t + 1, np.float32), np.full(256, t + 1, np.float32), 1.0)

    bank = ObjectMemory(cond={40: mem(40)}, non_cond={t: mem(t) for t in list(range(20, 40)) + list(range(41, 60))})
    sel = select_memory(bank, 19, 100, Strided, reverse=True)
    assert [int(f[0, 0, 0]) - 1 for f in sel.features] == frames
    assert sel.tpos_index == tpos and [int(p[0]) - 1 for p in sel.obj_ptrs] == ptr_frames


def test_round_to_bfloat16_matches_torch():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * 10.0 ** np.arange(-5, 5).repeat(10_000)
    ref = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(round_to_bfloat16(x), ref)


def test_preprocess_frame_matches_official_loader(tmp_path):
    from PIL import Image
    from sam2.utils.misc import _load_img_as_tensor

    rgb = np.random.default_rng(1).integers(0, 256, (57, 83, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "0.png")
    img, h, w = _load_img_as_tensor(str(tmp_path / "0.png"), 64)
    img = img.float()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    ref = ((img - mean) / std).numpy()
    ours = preprocess_frame(rgb, 64, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert ours.shape == (1, 3, 64, 64) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[0], ref)


def test_fill_holes_matches_official_formula():
    import sam2.utils.misc as misc

    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 64, 64)).astype(np.float32)
    logits[0] = 5.0
    logits[0, 10:12, 10:12] = -3.0   # a 4-pixel hole: filled
    logits[0, 30:34, 30:34] = -3.0   # a 16-pixel hole: kept
    logits[0, 50, 50] = logits[0, 51, 51] = -1.0  # diagonal neighbours: one 8-connected hole of 2
    orig = misc.get_connected_components
    misc.get_connected_components = scipy_connected_components
    try:
        ref = misc.fill_holes_in_mask_scores(torch.from_numpy(logits[:, None]), 8)[:, 0].numpy()
    finally:
        misc.get_connected_components = orig
    ours = fill_holes(logits, 8)
    np.testing.assert_array_equal(ours, ref)
    assert ours[0, 10, 10] == np.float32(0.1) and ours[0, 31, 31] == -3.0 and ours[0, 50, 50] == np.float32(0.1)
    assert fill_holes(logits, 0) is logits


def test_upsample_logits_matches_torch_interpolate():
    x = np.random.default_rng(3).standard_normal((2, 256, 256)).astype(np.float32) * 5
    ref = torch.nn.functional.interpolate(torch.from_numpy(x[:, None]), size=(576, 768), mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    ours = upsample_logits(x, 576, 768)
    assert np.abs(ours - ref).max() <= 2e-5 * np.abs(x).max()  # float rounding of OpenCV's weights
    assert ((ours > 0) == (ref > 0)).mean() > 0.99999


def test_stability_scores_match_official(official_predictor):
    x = torch.randn(4, 1, 32, 32)
    x[3] = -10.0  # empty union -> 1.0
    ref = official_predictor.sam_mask_decoder._get_stability_scores(x)[:, 0].numpy()
    np.testing.assert_array_equal(stability_scores(x[:, 0].numpy(), 0.05), ref)


def test_box_prompt_encoding_matches_official_scaling():
    p = ObjectPrompt(1, 0, box=(250, 215, 286, 312), points=((10, 20, 0),))
    coords, labels = p.encode_points((576, 768), 1024)
    ref = torch.tensor([[250, 215], [286, 312], [10, 20]], dtype=torch.float32) / torch.tensor([768, 576]) * 1024
    np.testing.assert_array_equal(coords, ref.numpy())
    assert labels.tolist() == [2, 3, 0] and labels.dtype == np.int32


@pytest.mark.parametrize("src,dst", [((576, 768), (1024, 1024)), ((1024, 1024), (256, 256)), ((37, 100), (1024, 1024))])
def test_resize_antialiased_matches_torch(src, dst):
    from sam2trt.tracker.processing import resize_antialiased

    x = np.random.default_rng(4).standard_normal(src).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None, None], size=dst, mode="bilinear",
                                          align_corners=False, antialias=True)[0, 0].numpy()
    assert np.abs(resize_antialiased(x, *dst) - ref).max() < 1e-5


def test_mask_downsample_matches_official_conv(official_predictor):
    from sam2trt.tracker.processing import mask_downsample

    conv = official_predictor.mask_downsample
    m = (np.random.default_rng(5).random((64, 64)) > 0.5).astype(np.float32)
    with torch.no_grad():
        ref = conv(torch.from_numpy(m)[None, None])[0, 0].numpy()
    ours = mask_downsample(m, conv.weight[0, 0].detach().numpy(), float(conv.bias.item()))
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("B,T,P", [(1, 7, 16), (2, 3, 5)])
def test_memory_attention_wrapper_matches_official_module(official_predictor, B, T, P):
    """The exported MemoryAttention (real RoPE, query blocks, value projection after mixing)
    against the official module fed the memory layout of _prepare_memory_conditioned_features."""
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    from sam2trt.export.modules import MemoryAttention

    m = official_predictor
    C, Cm, hw = m.hidden_dim, m.mem_dim, m.sam_image_embedding_size
    g = torch.Generator().manual_seed(T * 10 + B)
    vision = torch.randn(1, C, hw, hw, generator=g)
    feats = torch.randn(B, T, Cm, hw, hw, generator=g)
    tpos = m.maskmem_tpos_enc[:T, 0, 0]
    ptrs = torch.randn(B, P, C, generator=g)
    ptr_tpos = torch.arange(P, dtype=torch.float32) / 15
    wrapper = MemoryAttention(m).eval()
    with torch.no_grad():
        ours = wrapper(vision, feats, tpos, ptrs, ptr_tpos)
        # the official layout: [L, B, C] sequences, spatial memories then pointer tokens
        curr = vision.flatten(2).permute(2, 0, 1).expand(-1, B, -1)
        curr_pos = wrapper.curr_pos.transpose(0, 1).expand(-1, B, -1)
        mem = feats.permute(1, 3, 4, 0, 2).reshape(T * hw * hw, B, Cm)
        mem_pos = (wrapper.maskmem_pos_enc[None] + tpos[:, None]).reshape(T * hw * hw, 1, Cm).expand(-1, B, -1)
        ptr_tok = ptrs.permute(1, 0, 2).reshape(P, B, C // Cm, Cm).permute(0, 2, 1, 3).flatten(0, 1)
        ptr_pos = m.obj_ptr_tpos_proj(get_1d_sine_pe(ptr_tpos, dim=C)).repeat_interleave(C // Cm, 0)[:, None].expand(-1, B, -1)
        ref = m.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=torch.cat([mem, ptr_tok]),
                                 memory_pos=torch.cat([mem_pos, ptr_pos]), num_obj_ptr_tokens=P * (C // Cm))
        ref = ref.permute(1, 2, 0).reshape(B, C, hw, hw)
    diff = (ours - ref).abs().max().item()
    print(f"max |wrapper - official| = {diff:.2e}")
    assert diff < 1e-3 * max(1.0, ref.abs().max().item())
