"""SAM 2's memory bank as plain data, and the official memory selection rule.

The caller holds one :class:`ObjectMemory` per object and passes it in; nothing
here runs a model. :func:`select_memory` mirrors the selection part of
``SAM2Base._prepare_memory_conditioned_features`` (eval mode), forward and,
with ``reverse=True``, backward (``track_in_reverse=True``):

- every conditioning (prompted) frame, past or future, is a spatial memory at
  ``t_pos = 0`` (``max_cond_frames_in_attn = -1`` in all official configs; the
  closest-frames rule of ``select_closest_cond_frames`` is implemented for other values);
- the ``num_maskmem - 1`` previous frames in tracking order -- earlier frames
  forward, later frames in reverse -- (with ``memory_temporal_stride_for_eval``)
  at ``t_pos = 1 .. num_maskmem - 1``, missing ones skipped, never zero-padded;
- object pointers from conditioning frames in the past of the tracking order
  (``t <= frame_idx`` forward, ``t >= frame_idx`` in reverse), at signed offset
  ``(frame_idx - t) * sign`` (``sign = -1`` in reverse), then from up to
  ``min(num_frames, max_obj_ptrs) - 1`` previous frames in tracking order at
  offset ``t_diff``; offsets are divided by ``t_diff_max``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), kept as float32.

    The official predictor stores ``maskmem_features`` as ``torch.bfloat16``
    (``_run_single_frame_inference``) and promotes them back to float32 when
    they are concatenated with the object pointers; this reproduces that rounding.

    Args:
        x: float32 array of any shape (finite values).
    Returns:
        float32 array of the same shape whose low 16 mantissa bits are zero.
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded & np.uint32(0xFFFF0000)).view(np.float32)


@dataclass
class FrameMemory:
    """What one frame leaves in one object's memory bank.

    Attributes:
        maskmem_features: ``[mem_dim, H, W]`` float32 spatial memory
            (bfloat16-rounded on the host; a GPU tensor on TensorRT), or
            ``None`` once the frame is too old to be selected.
        obj_ptr: ``[hidden_dim]`` float32 object pointer.
        object_score_logit: the frame's object score logit (> 0: object present).
    """

    maskmem_features: np.ndarray | None
    obj_ptr: np.ndarray
    object_score_logit: float


@dataclass
class ObjectMemory:
    """One object's memory bank (the official ``output_dict`` of one object).

    Attributes:
        cond: conditioning frames (frames with a prompt), by frame index, in the
            order they were added.
        non_cond: tracked frames, by frame index; :func:`prune` drops old ones.
    """

    cond: dict[int, FrameMemory] = field(default_factory=dict)
    non_cond: dict[int, FrameMemory] = field(default_factory=dict)


@dataclass
class MemorySelection:
    """The memories one object attends to on one frame.

    Attributes:
        features: spatial memories, each ``[mem_dim, H, W]`` float32 (host
            arrays or device tensors, as stored).
        tpos_index: for each, the row of ``maskmem_tpos_enc`` to add
            (``num_maskmem - t_pos - 1``).
        obj_ptrs: object pointers, each ``[hidden_dim]`` float32.
        obj_ptr_offsets: their temporal offsets in frames (signed when the model
            uses signed offsets), before normalisation.
        t_diff_max: the normaliser, ``min(num_frames, max_obj_ptrs) - 1``.
    """

    features: list[np.ndarray]
    tpos_index: list[int]
    obj_ptrs: list[np.ndarray]
    obj_ptr_offsets: list[int]
    t_diff_max: int

    @property
    def layout(self) -> tuple:
        """Hashable shape of the selection: objects with equal layouts can be batched."""
        return tuple(self.tpos_index), tuple(self.obj_ptr_offsets), self.t_diff_max

    def obj_ptr_tpos(self) -> np.ndarray:
        """``[P]`` float32 normalised offsets fed to memory attention (``pos / t_diff_max``)."""
        return np.asarray(self.obj_ptr_offsets, dtype=np.float32) / np.float32(self.t_diff_max)


def select_closest_cond_frames(frame_idx: int, cond: dict, max_cond_frame_num: int) -> tuple[dict, dict]:
    """Mirror of ``sam2.modeling.sam2_utils.select_closest_cond_frames``.

    Returns ``(selected, unselected)`` dicts of conditioning frames.
    """
    if max_cond_frame_num == -1 or len(cond) <= max_cond_frame_num:
        return cond, {}
    selected = {}
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond[after]
    remain = max_cond_frame_num - len(selected)
    for t in sorted((t for t in cond if t not in selected), key=lambda x: abs(x - frame_idx))[:remain]:
        selected[t] = cond[t]
    return selected, {t: v for t, v in cond.items() if t not in selected}


def select_memory(bank: ObjectMemory, frame_idx: int, num_frames: int | None, spec,
                  reverse: bool = False) -> MemorySelection:
    """Choose one object's memories for a non-conditioning frame.

    Mirrors ``SAM2Base._prepare_memory_conditioned_features`` in eval mode
    (sam2 1.1.0, ``sam2/modeling/sam2_base.py``), ``track_in_reverse=reverse``;
    the line numbers are those of that file:

    - ``tpos_sign_mul = -1 if track_in_reverse else 1`` (line 520);
    - conditioning frames: all of them, past and future, at ``t_pos = 0``
      (``select_closest_cond_frames``, lines 529-533);
    - spatial memories (lines 538-568): for ``t_rel == 1`` the frame
      ``frame_idx - 1`` (forward) or ``frame_idx + 1`` (reverse, line 548); for
      ``t_rel >= 2`` forward ``((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride``
      (lines 554-556), reverse ``-(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride``
      (lines 560-562); a missing frame is skipped, an unselected conditioning
      frame stands in for it (line 567);
    - pointers of conditioning frames with ``t <= frame_idx`` (forward) or
      ``t >= frame_idx`` (reverse) when ``only_obj_ptrs_in_the_past_for_eval``
      (lines 591-596), at ``(frame_idx - t) * tpos_sign_mul`` when
      ``use_signed_tpos_enc_to_obj_ptrs`` else ``abs(frame_idx - t)`` (lines 599-608);
    - pointers of non-conditioning frames ``t = frame_idx - t_diff`` (forward) or
      ``frame_idx + t_diff`` (reverse, line 613), ``t_diff = 1 .. max_obj_ptrs - 1``
      with ``max_obj_ptrs = min(num_frames, max_obj_ptrs_in_encoder)`` (line 587), at
      offset ``t_diff`` (positive in both directions), stopping at ``t < 0`` or
      ``t >= num_frames`` (lines 612-620); offsets are divided by
      ``t_diff_max = max_obj_ptrs - 1`` (lines 629-634).

    Args:
        bank: the object's memory bank.
        frame_idx: index of the frame being tracked (frames, 0-based).
        num_frames: number of frames in the video (``None`` if unknown: pointers
            then use the model's full ``max_obj_ptrs_in_encoder``).
        spec: a :class:`~sam2trt.model_spec.ModelSpec` (or any object with the
            same attributes).
        reverse: tracking backward in time (the official ``track_in_reverse``).

    Returns:
        A :class:`MemorySelection`: the spatial memories (``[mem_dim, H, W]`` float32
        each) with their ``maskmem_tpos_enc`` rows, the object pointers
        (``[hidden_dim]`` float32 each) with their offsets in frames, and ``t_diff_max``.
    Raises:
        ValueError: the bank has no conditioning frame.
    """
    if not bank.cond:
        raise ValueError("object has no conditioning frame: prompt it before tracking")
    num_maskmem = spec.num_maskmem
    stride = spec.memory_temporal_stride_for_eval
    selected, unselected = select_closest_cond_frames(frame_idx, bank.cond, spec.max_cond_frames_in_attn)

    features, tpos_index = [], []
    picks = [(0, out) for out in selected.values()]
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos
        if t_rel == 1:
            prev = frame_idx + t_rel if reverse else frame_idx - t_rel
        elif reverse:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        else:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        out = bank.non_cond.get(prev)
        if out is None:
            out = unselected.get(prev)
        picks.append((t_pos, out))
    for t_pos, out in picks:
        if out is None or out.maskmem_features is None:
            continue
        features.append(out.maskmem_features)
        tpos_index.append(num_maskmem - t_pos - 1)

    max_ptrs = spec.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, spec.max_obj_ptrs_in_encoder)
    if spec.only_obj_ptrs_in_the_past_for_eval:
        ptr_cond = {t: out for t, out in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
    else:
        ptr_cond = selected
    signed = spec.use_signed_tpos_enc_to_obj_ptrs
    sign = -1 if reverse else 1
    obj_ptrs = [out.obj_ptr for out in ptr_cond.values()]
    offsets = [(frame_idx - t) * sign if signed else abs(frame_idx - t) for t in ptr_cond]
    for t_diff in range(1, max_ptrs):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        out = bank.non_cond.get(t, unselected.get(t))
        if out is not None:
            obj_ptrs.append(out.obj_ptr)
            offsets.append(t_diff)
    return MemorySelection(features, tpos_index, obj_ptrs, offsets, max(max_ptrs - 1, 1))


def memory_windows(spec) -> tuple[int, int]:
    """``(feature_window, pointer_window)`` in frames: how far (in tracking order) :func:`select_memory`
    can reach back for spatial memories (``(num_maskmem + 1) * stride``) and object pointers
    (``max_obj_ptrs_in_encoder``)."""
    return (spec.num_maskmem + 1) * spec.memory_temporal_stride_for_eval, spec.max_obj_ptrs_in_encoder


def prune(bank: ObjectMemory, next_frame_idx: int, spec, reverse: bool = False,
          keep_after: int | None = None) -> None:
    """Forget what no later frame can select, so memory stays flat over a long video.

    Spatial features are kept for the frames :func:`select_memory` can still
    reach (``(num_maskmem + 1) * stride`` back in tracking order), object
    pointers for ``max_obj_ptrs_in_encoder`` frames back; older
    non-conditioning entries are dropped. Conditioning frames are always kept.

    Args:
        next_frame_idx: the next frame to be tracked (``frame + 1`` forward,
            ``frame - 1`` in reverse).
        reverse: tracking backward in time: "back" means later frames.
        keep_after: forward only: also keep, whole, the non-conditioning frames
            ``keep_after + 1 .. keep_after + window`` -- what a later reverse pass
            starting at ``keep_after`` reads (the official demo runs forward from
            the earliest prompt frame, then ``reverse=True`` from it, and the
            reverse selection of frame ``keep_after - 1`` takes the memories and
            pointers of the frames right after ``keep_after``).
    """
    feat_window, ptr_window = memory_windows(spec)
    for t in list(bank.non_cond):
        age = t - next_frame_idx if reverse else next_frame_idx - t
        if keep_after is not None and not reverse and 0 < t - keep_after <= max(feat_window, ptr_window):
            continue
        if age > max(feat_window, ptr_window):
            del bank.non_cond[t]
        elif age > feat_window:
            bank.non_cond[t].maskmem_features = None
