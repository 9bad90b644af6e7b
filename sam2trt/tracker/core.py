"""The per-frame step: image encoder -> memory attention -> mask decoder -> memory encoder.

Pure NumPy around four module runners (any backend with ``infer(feed, keep) -> dict``).
Large tensors -- the image encoder features, the memory attention output and
the memory bank's spatial features -- are asked for with ``keep=`` and passed
back into the runners as they came: NumPy arrays on ONNX Runtime, GPU tensors on
TensorRT, where they never leave the device. The core reads only the mask
decoder's outputs on the host (mask choice, object-score gating, hole filling).
The memory banks are plain :class:`~sam2trt.tracker.memory_bank.ObjectMemory`
values the caller holds and passes in; :class:`FrameStepper` keeps no per-video
state. :func:`track_frames` is the loop over a stream of frames.

Semantics are those of ``SAM2VideoPredictor`` (``build_sam2_video_predictor``,
post-processing on); each method names the official function it mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from sam2trt.model_spec import MODULES
from sam2trt.tracker.memory_bank import (
    FrameMemory, MemorySelection, ObjectMemory, prune, round_to_bfloat16, select_memory,
)
from sam2trt.tracker.processing import (
    NO_OBJ_SCORE, fill_holes, mask_downsample, preprocess_frame, resize_antialiased, stability_scores,
)
from sam2trt.tracker.prompts import ObjectPrompt


@dataclass
class ImageFeatures:
    """Image encoder outputs for one frame (all float32, batch 1).

    ``high_res_feat0`` ``[1, C/8, 4H, 4W]``, ``high_res_feat1`` ``[1, C/4, 2H, 2W]``,
    ``vision_feat`` ``[1, C, H, W]``: NumPy arrays, or tensors kept on the
    backend's device (``np.asarray`` downloads them).
    """

    high_res_feat0: np.ndarray
    high_res_feat1: np.ndarray
    vision_feat: np.ndarray

    #: the image encoder outputs, in field order
    names = ("high_res_feat0", "high_res_feat1", "vision_feat")


@dataclass
class ObjectResult:
    """One object's prediction on one frame.

    Attributes:
        mask_logits: ``[h, w]`` float32 low-resolution logits (``image_size / 4``
            square), holes filled; upsample with
            :func:`~sam2trt.tracker.processing.upsample_logits`.
        object_score_logit: > 0 means the object is present.
        memory: what this frame adds to the object's memory bank.
    """

    mask_logits: np.ndarray
    object_score_logit: float
    memory: FrameMemory


@dataclass
class FrameOutput:
    """All objects' results on one frame, in object order.

    ``mask_logits`` ``[K, h, w]`` float32; ``object_score_logits`` ``[K]`` float32.
    """

    frame_idx: int
    obj_ids: list[int]
    mask_logits: np.ndarray
    object_score_logits: np.ndarray


class FrameStepper:
    """Runs the four modules for one frame, given the memory banks.

    Args:
        spec: the model's :class:`~sam2trt.model_spec.ModelSpec`.
        runners: a :class:`~sam2trt.runtime.ModuleRunners` (activated).
        fill_hole_area: fill holes up to this many low-res pixels in the output
            masks (``None``: the model's default, 8 with post-processing).
    """

    def __init__(self, spec, runners, fill_hole_area: int | None = None):
        self.spec = spec
        self.runners = runners
        self.fill_hole_area = spec.fill_hole_area if fill_hole_area is None else fill_hole_area
        s = spec.low_res_size
        # Each module is fed exactly its graph's inputs (SAM 2.0 graphs lack two, see MODULE_IO).
        self._inputs = {m: spec.input_names(m) for m in MODULES}
        self._no_points = (np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.int32))
        self._no_mask = np.zeros((1, 1, s, s), np.float32)

    def _no_masks(self, B: int) -> np.ndarray:
        """``[B, 1, h, w]`` float32 zeros (no mask prompt), one read-only block per ``B``, reused."""
        cache = self.__dict__.setdefault("_no_mask_cache", {})
        if B not in cache:
            block = np.zeros((B,) + self._no_mask.shape[1:], np.float32)
            block.setflags(write=False)
            cache[B] = block
        return cache[B]

    def _run(self, module: str, feed: dict, keep: Sequence[str] = ()) -> dict:
        """Run ``module`` on the inputs of ``feed`` its graph has (``spec.input_names``).

        The core builds every input a module can take; a model whose graph lacks
        one (SAM 2.0: ``object_score_logits`` of the memory encoder,
        ``obj_ptr_tpos`` of memory attention) does not get it.
        """
        return getattr(self.runners, module).infer({n: feed[n] for n in self._inputs[module]}, keep=keep)

    # -- image encoder -------------------------------------------------------
    def encode_image(self, rgb: np.ndarray | None, image: np.ndarray | None = None) -> ImageFeatures:
        """Run the image encoder on a frame.

        Mirrors ``SAM2Base.forward_image`` on a frame loaded like ``load_video_frames``.

        Args:
            rgb: ``[H, W, 3]`` uint8 frame, preprocessed here when ``image`` is None: by the
                runners' ``preprocess`` module when they have one, else on the host.
            image: ``[1, 3, S, S]`` float32, already preprocessed
                (:func:`~sam2trt.tracker.processing.preprocess_frame`).
        """
        spec = self.spec
        if image is None:
            pre = getattr(self.runners, "preprocess", None)
            if pre is not None:  # on the backend's device: only the uint8 frame goes there
                image = pre.infer({"frame": np.ascontiguousarray(rgb)}, keep=("image",))["image"]
            else:
                image = preprocess_frame(rgb, spec.image_size, spec.image_mean, spec.image_std)
        out = self._run("image_encoder", {"image": image}, keep=ImageFeatures.names)
        return ImageFeatures(out["high_res_feat0"], out["high_res_feat1"], out["vision_feat"])

    # -- mask decoder + choice ---------------------------------------------
    def _use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """Mirror of ``SAM2Base._use_multimask``."""
        s = self.spec
        return bool(s.multimask_output_in_sam
                    and (is_init_cond_frame or s.multimask_output_for_tracking)
                    and s.multimask_min_pt_num <= num_points <= s.multimask_max_pt_num)

    def _decode(self, feats: ImageFeatures, pix_feat: np.ndarray, coords: np.ndarray, labels: np.ndarray,
                multimask: bool, mask_input: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the mask decoder and apply the official choice of mask and pointer.

        Mirrors the end of ``SAM2Base._forward_sam_heads`` and
        ``MaskDecoder.forward`` (multimask argmax over tokens 1-3; else token 0
        with ``_dynamic_multimask_via_stability``; object-score gating of the
        masks to ``NO_OBJ_SCORE``; ``fixed_no_obj_ptr`` / ``no_obj_ptr`` mixing).

        Args:
            pix_feat: ``[B, C, H, W]`` (an array, a kept tensor, or a list of ``B``
                ``[C, H, W]`` rows); coords ``[B, N, 2]`` float32 (model pixels);
                labels ``[B, N]`` int32; mask_input ``[B, 1, h, w]`` float32 dense
                mask prompt or ``None``.
        Returns:
            ``(mask_logits [B, h, w], obj_ptr [B, C], object_score_logits [B])``, float32.
        """
        spec = self.spec
        B = len(pix_feat)
        out = self._run("mask_decoder", {
            "pix_feat": pix_feat,
            "high_res_feat0": feats.high_res_feat0,
            "high_res_feat1": feats.high_res_feat1,
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": self._no_masks(B) if mask_input is None else np.ascontiguousarray(mask_input, np.float32),
            "has_mask_input": np.full((B,), 0.0 if mask_input is None else 1.0, np.float32),
        })
        masks, ious, ptrs = out["low_res_masks"], out["iou_predictions"], out["obj_ptrs"]
        scores = out["object_score_logits"].reshape(B)
        rows = np.arange(B)
        best = np.argmax(ious[:, 1:], axis=-1) + 1
        if multimask:
            mask = masks[rows, best]
            token = best if spec.use_multimask_token_for_obj_ptr else np.zeros(B, int)
        elif spec.dynamic_multimask_via_stability:
            stable = stability_scores(masks[:, 0], spec.dynamic_multimask_stability_delta) \
                >= spec.dynamic_multimask_stability_thresh
            mask = np.where(stable[:, None, None], masks[:, 0], masks[rows, best])
            token = np.zeros(B, int)
        else:
            mask = masks[:, 0]
            token = np.zeros(B, int)
        ptr = ptrs[rows, token]
        if spec.pred_obj_scores:
            appearing = scores > 0
            mask = np.where(appearing[:, None, None], mask, np.float32(NO_OBJ_SCORE)).astype(np.float32)
            lam = (1.0 / (1.0 + np.exp(-scores)) if spec.soft_no_obj_ptr else appearing).astype(np.float32)[:, None]
            if spec.fixed_no_obj_ptr:
                ptr = lam * ptr
            ptr = ptr + (1 - lam) * self.spec.no_obj_ptr[None]
        return np.ascontiguousarray(mask, np.float32), ptr.astype(np.float32), scores.astype(np.float32)

    # -- memory encoder -----------------------------------------------------
    def _encode_memory(self, feats: ImageFeatures, mask_logits: np.ndarray, scores: np.ndarray,
                       binarize: bool) -> np.ndarray:
        """Run the memory encoder; returns ``[B, mem_dim, H, W]`` float32 spatial memory.

        Mirrors ``SAM2Base._encode_new_memory`` plus the bfloat16 storage of
        ``SAM2VideoPredictor._run_single_frame_inference``: host arrays are
        rounded to bfloat16 precision. Memory kept on a GPU (TensorRT) stays as
        the engine wrote it: there is no rounding kernel on the device, and the
        fp16 engines' own rounding is of the same order.
        """
        B = mask_logits.shape[0]
        out = self._run("memory_encoder", {
            "vision_feat": feats.vision_feat,
            "mask_logits": mask_logits[:, None],
            "object_score_logits": scores.reshape(B, 1),
            "binarize_mask": np.full((B,), 1.0 if binarize else 0.0, np.float32),
        }, keep=("maskmem_features",))
        maskmem = out["maskmem_features"]
        return round_to_bfloat16(maskmem) if isinstance(maskmem, np.ndarray) else maskmem

    @staticmethod
    def _results(filled, ptrs, scores, maskmem) -> list[ObjectResult]:
        """Pack per-object arrays (``[B, ...]`` each, masks already hole-filled) into results."""
        return [ObjectResult(filled[i], float(scores[i]), FrameMemory(maskmem[i], ptrs[i], float(scores[i])))
                for i in range(len(scores))]

    # -- conditioning frame -------------------------------------------------
    def prompt(self, feats: ImageFeatures, prompts: Sequence[ObjectPrompt], video_hw: tuple[int, int]) -> list[ObjectResult]:
        """Segment objects on their first conditioning frame from box/point prompts.

        Mirrors ``SAM2VideoPredictor.add_new_points_or_box`` (a fresh object, no
        memory: ``directly_add_no_mem_embed``) followed by the memory encoding of
        ``propagate_in_video_preflight`` (holes filled first, mask binarised when
        ``binarize_mask_from_pts_for_mem_enc``). Prompts with the same number of
        points run as one batch.

        Args:
            feats: this frame's image features.
            prompts: one per object, each with a box and/or points.
            video_hw: ``(height, width)`` of the video frames in pixels.
        Returns:
            One :class:`ObjectResult` per prompt, in order; ``result.memory`` is the
            object's conditioning-frame memory.
        """
        if not prompts:
            return []
        spec = self.spec
        results: list[ObjectResult | None] = [None] * len(prompts)
        groups: dict[int, list[int]] = {}
        # A fresh object's frame has no memory: vision features + no_mem_embed, on the host
        # (once per object; the tracking frames below never download the features).
        base = np.asarray(feats.vision_feat) + spec.no_mem_embed[None, :, None, None]
        encoded = {}
        for i, p in enumerate(prompts):
            if p.mask is not None:
                results[i] = self._prompt_mask(feats, base, p.mask)
                continue
            encoded[i] = p.encode_points(video_hw, spec.image_size)
            groups.setdefault(len(encoded[i][0]), []).append(i)
        for n, idx in groups.items():
            coords = np.stack([encoded[i][0] for i in idx])
            labels = np.stack([encoded[i][1] for i in idx])
            pix = np.ascontiguousarray(np.broadcast_to(base, (len(idx),) + base.shape[1:]))
            mask, ptr, scores = self._decode(feats, pix, coords, labels, self._use_multimask(True, n))
            filled = fill_holes(mask, self.fill_hole_area)
            maskmem = self._encode_memory(feats, filled, scores, spec.binarize_mask_from_pts_for_mem_enc)
            for i, res in zip(idx, self._results(filled, ptr, scores, maskmem)):
                results[i] = res
        return results

    def _prompt_mask(self, feats: ImageFeatures, base: np.ndarray, mask: np.ndarray) -> ObjectResult:
        """One object's first conditioning frame from a mask prompt.

        Mirrors ``SAM2VideoPredictor.add_new_mask`` (antialiased resize to the
        model size, threshold 0.5) and ``SAM2Base._use_mask_as_output``
        (``use_mask_input_as_output_without_sam``): the mask itself, scaled to
        logits of +-10, is the output; the object pointer comes from the mask
        decoder prompted with the downsampled mask; the object counts as present
        when the mask is not empty. ``mask``: ``[H, W]`` bool at video resolution.
        """
        spec = self.spec
        S, s = spec.image_size, spec.low_res_size
        m = mask.astype(np.float32)
        if m.shape != (S, S):
            m = (resize_antialiased(m, S, S) >= 0.5).astype(np.float32)
        logits = resize_antialiased(m * np.float32(20.0) - np.float32(10.0), s, s)[None]
        dense = mask_downsample(m, spec.mask_downsample_weight, spec.mask_downsample_bias)
        _, ptr, _ = self._decode(feats, base, self._no_points[0], self._no_points[1], False, dense[None, None])
        present = np.float32(bool((m > 0).any()))
        score = np.float32(20.0) * present - np.float32(10.0)
        if spec.pred_obj_scores:
            if spec.fixed_no_obj_ptr:
                ptr = present * ptr
            ptr = ptr + (1 - present) * spec.no_obj_ptr[None]
        filled = fill_holes(logits, self.fill_hole_area)
        # propagate_in_video_preflight encodes every prompted frame with is_mask_from_pts=True
        maskmem = self._encode_memory(feats, filled, np.asarray([score]), spec.binarize_mask_from_pts_for_mem_enc)
        return self._results(filled, ptr.astype(np.float32), np.asarray([score]), maskmem)[0]

    # -- tracking frame -----------------------------------------------------
    def track(self, feats: ImageFeatures, frame_idx: int, banks: Sequence[ObjectMemory],
              num_frames: int | None, reverse: bool = False) -> list[ObjectResult]:
        """Track objects on a frame without prompts, from their memory banks.

        Mirrors ``SAM2Base.track_step`` on a non-conditioning frame (memory
        selection, memory attention, multimask decoding for tracking, memory
        encoding of the unfilled mask) and the hole filling of
        ``_run_single_frame_inference``. Objects whose memory selections share a
        layout run memory attention as one batch; the mask decoder and memory
        encoder run once for all objects.

        Args:
            banks: the objects' memory banks (not modified: the caller stores
                ``result.memory`` and calls :func:`~sam2trt.tracker.memory_bank.prune`).
            num_frames: video length in frames, or ``None`` if unknown.
            reverse: tracking backward in time (the official ``track_in_reverse``).
        Returns:
            One :class:`ObjectResult` per bank, in order.
        """
        if not banks:
            return []
        spec = self.spec
        selections = [select_memory(b, frame_idx, num_frames, spec, reverse) for b in banks]
        groups: dict[tuple, list[int]] = {}
        for i, sel in enumerate(selections):
            groups.setdefault(sel.layout, []).append(i)
        if len(groups) == 1:
            pix = self._attend(feats, selections)  # one layout: one batch, in bank order
        else:
            pix = [None] * len(banks)  # rows in bank order, stacked by the mask decoder's runner
            for idx in groups.values():
                out = self._attend(feats, [selections[i] for i in idx])
                for j, i in enumerate(idx):
                    pix[i] = out[j]
        B = len(banks)
        coords = np.broadcast_to(self._no_points[0], (B, 1, 2)).copy()
        labels = np.broadcast_to(self._no_points[1], (B, 1)).copy()
        mask, ptr, scores = self._decode(feats, pix, coords, labels, self._use_multimask(False, 0))
        maskmem = self._encode_memory(feats, mask, scores, binarize=False)
        return self._results(fill_holes(mask, self.fill_hole_area), ptr, scores, maskmem)

    def _attend(self, feats: ImageFeatures, sels: list[MemorySelection]) -> np.ndarray:
        """Memory attention for objects sharing one selection layout -> ``[B, C, H, W]`` (kept).

        The selected spatial memories go in as a ``[B][T]`` list (stacked by the
        runner: on the GPU for TensorRT); the object pointers (``C`` floats each)
        come from the host, where the mask choice made them.
        """
        sel0 = sels[0]
        out = self._run("memory_attention", {
            "vision_feat": feats.vision_feat,
            "maskmem_features": [list(s.features) for s in sels],
            "memory_tpos_enc": np.ascontiguousarray(self.spec.maskmem_tpos_enc[sel0.tpos_index]),
            "obj_ptrs": np.stack([np.stack(s.obj_ptrs) for s in sels]),
            "obj_ptr_tpos": sel0.obj_ptr_tpos(),
        }, keep=("pix_feat_with_mem",))
        return out["pix_feat_with_mem"]


def _check_prompts(prompts: Sequence[ObjectPrompt]) -> tuple[list[int], dict[int, int]]:
    """``(object ids in prompt order, {obj_id: first prompt frame})``; ValueError on none or duplicates."""
    if not prompts:
        raise ValueError("no prompts: give at least one object")
    keys = [(p.obj_id, p.frame_idx) for p in prompts]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate (object id, frame) in prompts: {keys}")
    ids, first = [], {}
    for p in prompts:
        if p.obj_id not in first:
            ids.append(p.obj_id)
            first[p.obj_id] = p.frame_idx
        first[p.obj_id] = min(first[p.obj_id], p.frame_idx)
    return ids, first


def needs_conditioning(prompts: Sequence[ObjectPrompt]) -> list[int]:
    """Frames that must be encoded before tracking starts: the prompt frames that are not
    their object's first one (a tracked frame attends to every conditioning frame, also future
    ones: ``max_cond_frames_in_attn = -1``). Sorted frame indices; empty when each object is
    prompted on one frame. Raises ``ValueError`` for no prompts or a duplicate (object, frame)."""
    _, first = _check_prompts(prompts)
    return sorted({p.frame_idx for p in prompts if p.frame_idx != first[p.obj_id]})


def encode_conditioning(stepper: FrameStepper, frames: Iterable[tuple], prompts: Sequence[ObjectPrompt],
                        only: Iterable[int] | None = None) -> dict[tuple[int, int], ObjectResult]:
    """Compute conditioning frames ahead of tracking.

    Mirrors ``SAM2VideoPredictor.add_new_points_or_box`` / ``add_new_mask`` on a
    frame no object was tracked on (``is_init_cond_frame``: no memory,
    ``no_mem_embed``), then the memory encoding of ``propagate_in_video_preflight``:
    what the official predictor computes for each prompted frame when all prompts
    are added before propagating.

    Args:
        frames: ``(frame_idx, rgb [H, W, 3] uint8[, image])`` items holding at least the
            frames to encode (others are skipped), in any order.
        prompts: all prompts (several frames per object allowed).
        only: the frames to encode (default: every prompt frame).
    Returns:
        ``{(obj_id, frame_idx): ObjectResult}`` for the prompts on those frames
        (``mask_logits`` ``[h, w]`` float32 low-resolution, ``memory`` encoded).
    Raises:
        ValueError: a frame to encode is not among ``frames``.
    """
    wanted = {p.frame_idx for p in prompts} if only is None else set(only)
    out: dict[tuple[int, int], ObjectResult] = {}
    for frame_idx, rgb, *pre in frames:
        if frame_idx not in wanted:
            continue
        here = [p for p in prompts if p.frame_idx == frame_idx]
        feats = stepper.encode_image(rgb, pre[0] if pre else None)
        for p, res in zip(here, stepper.prompt(feats, here, rgb.shape[:2])):
            out[(p.obj_id, frame_idx)] = res
        wanted.discard(frame_idx)
    if wanted:
        raise ValueError(f"conditioning frames {sorted(wanted)} were not among the frames given")
    return out


def track_frames(stepper: FrameStepper, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[ObjectPrompt],
                 *, num_frames: int | None, max_frames: int | None = None,
                 banks: dict[int, ObjectMemory] | None = None, reverse: bool = False,
                 conditioning: dict[tuple[int, int], ObjectResult] | None = None) -> Iterator[FrameOutput]:
    """Track prompted objects through a stream of frames, forward or backward in time.

    Mirrors ``SAM2VideoPredictor.propagate_in_video`` after all prompts were
    added (``propagate_in_video_preflight``): output starts at the earliest
    prompt frame ``start``. Forward, frames before it are read but not
    encoded, and each object joins on its own first prompt frame. With
    ``reverse=True`` (``propagate_in_video(reverse=True)``, the official
    ``track_in_reverse``) frames come in decreasing order, frames after
    ``start`` are skipped, and the objects whose first prompt is on ``start``
    are tracked; pass the ``banks`` of a forward pass to continue from it as
    the official demo does (forward, then backward from the same frame: the
    backward selection reads the forward pass's memories of the frames after
    ``start``, which the forward pass keeps for it).

    An object may have prompts on several frames: each is a conditioning
    frame, and all of them (past and future) condition every tracked frame;
    on a later prompt frame the object's output is its conditioning-frame
    output, as in the official predictor.

    Args:
        stepper: the per-frame step.
        frames: ``(frame_idx, rgb [H, W, 3] uint8)`` or ``(frame_idx, rgb, image)``
            with ``image`` preprocessed (``[1, 3, S, S]`` float32), in increasing
            index order (decreasing with ``reverse``).
        prompts: one per object and prompted frame.
        num_frames: video length in frames (``None`` if unknown).
        max_frames: stop after this many processed frames (``None``: all).
        banks: memory banks by object id (filled in; pass a dict to inspect them,
            or the banks of a forward pass to continue backward from it).
        reverse: track backward in time.
        conditioning: precomputed conditioning frames (:func:`encode_conditioning`);
            required for every prompt frame that is not its object's first
            (:func:`needs_conditioning`); others are computed when their frame arrives.
    Yields:
        A :class:`FrameOutput` per processed frame, objects in prompt order
        (objects not yet joined, or not tracked in this direction, are absent).
    Raises:
        ValueError: no prompts, duplicate (object, frame) prompts, or a missing
            conditioning frame.
    """
    ids, first = _check_prompts(prompts)
    conditioning = dict(conditioning or {})
    missing = [(p.obj_id, p.frame_idx) for p in prompts
               if p.frame_idx != first[p.obj_id] and (p.obj_id, p.frame_idx) not in conditioning]
    if missing:
        raise ValueError(f"prompts on several frames need their conditioning frames computed first "
                         f"(encode_conditioning): missing {missing}")
    banks = {} if banks is None else banks
    spec = stepper.spec
    start = min(first.values())
    tracked_here = ids if not reverse else [o for o in ids if first[o] == start]
    done = 0
    for frame_idx, rgb, *pre in frames:
        if (frame_idx > start) if reverse else (frame_idx < start):
            continue
        if max_frames is not None and done >= max_frames:
            break
        here = [p for p in prompts if p.frame_idx == frame_idx and p.obj_id in tracked_here]
        joining = [p for p in here if p.obj_id not in banks and p.frame_idx == first[p.obj_id]]
        tracked = [o for o in tracked_here if o in banks]
        at_cond = {o for o in tracked if frame_idx in banks[o].cond}
        to_track = [o for o in tracked if o not in at_cond]
        fresh = [p for p in joining if (p.obj_id, frame_idx) not in conditioning]
        feats = None
        if to_track or fresh:
            feats = stepper.encode_image(rgb, pre[0] if pre else None)
        results: dict[int, ObjectResult] = {}
        for oid, res in zip(to_track, stepper.track(feats, frame_idx, [banks[o] for o in to_track], num_frames,
                                                    reverse) if to_track else []):
            banks[oid].non_cond[frame_idx] = res.memory
            if reverse:
                prune(banks[oid], frame_idx - 1, spec, reverse=True)
            else:
                prune(banks[oid], frame_idx + 1, spec, keep_after=start)
            results[oid] = res
        for oid in at_cond:  # a later prompt frame: its conditioning output (propagate_in_video)
            results[oid] = conditioning[(oid, frame_idx)]
        for p, res in zip(fresh, stepper.prompt(feats, fresh, rgb.shape[:2]) if fresh else []):
            conditioning[(p.obj_id, frame_idx)] = res
        for p in joining:  # all of the object's conditioning frames, in frame order
            oid = p.obj_id
            banks[oid] = ObjectMemory(cond={q.frame_idx: conditioning[(oid, q.frame_idx)].memory
                                            for q in sorted((q for q in prompts if q.obj_id == oid),
                                                            key=lambda q: q.frame_idx)})
            results[oid] = conditioning[(oid, frame_idx)]
        order = [oid for oid in ids if oid in results]
        if not order:
            continue
        yield FrameOutput(
            frame_idx=frame_idx,
            obj_ids=order,
            mask_logits=np.stack([results[o].mask_logits for o in order]),
            object_score_logits=np.asarray([results[o].object_score_logit for o in order], np.float32),
        )
        done += 1
