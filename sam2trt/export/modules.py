"""The four exportable SAM 2 modules, as thin ``torch.nn.Module`` wrappers.

Each wrapper holds a reference to an official ``SAM2Base`` model (PyPI ``sam2``
1.1.0) and reuses its sub-modules and weights; it only rearranges inputs so that
the graph traces to ONNX with dynamic object counts and memory lengths, and it
leaves every *decision* (which memories, which mask, object-score gating) to the
NumPy tracker core (:mod:`sam2trt.tracker`).

Shapes below use ``S`` = image size (1024), ``H = W = S / 16`` (64),
``C`` = hidden dim (256), ``Cm`` = memory dim (64), ``B`` = objects,
``T`` = memory frames, ``P`` = object pointers, ``N`` = prompt points.

Each wrapper's ``input_names`` / ``output_names`` come from
:data:`sam2trt.model_spec.MODULE_IO` and the model's switches (see
:func:`model_switches`); ``forward(*inputs)`` takes exactly those inputs, in
that order, and passes them by name to ``compute``. An input the model does not
read (SAM 2.0 has no ``no_obj_embed_spatial`` and no object-pointer temporal
encoding) is therefore not an argument at all, and not in the graph.

The one real rewrite is rotary position encoding (RoPE): the official
``apply_rotary_enc`` uses complex tensors, which ONNX cannot express, so
:func:`apply_rope` does the same rotation on (even, odd) channel pairs in real
arithmetic with cos/sin tables taken from the official ``freqs_cis``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sam2.modeling.sam2_utils import get_1d_sine_pe

from sam2trt.model_spec import MODULE_IO


# Queries are attended in blocks of this many rows: softmax is per row, so the
# result is unchanged, and the materialised attention matrix shrinks from
# 4096 x Lk to QUERY_CHUNK x Lk floats (memory attention: Lk up to ~28.7k).
QUERY_CHUNK = 1024


def model_switches(model: nn.Module) -> dict:
    """The ``model.json`` switches of ``model`` that decide which module inputs exist.

    Mirrors the constructor arguments of ``SAM2Base`` (``no_obj_embed_spatial``,
    ``add_tpos_enc_to_obj_ptrs``); keys are those of :data:`MODULE_IO`'s
    ``conditional`` tables.
    """
    return {
        "no_obj_embed_spatial": model.no_obj_embed_spatial is not None,
        "add_tpos_enc_to_obj_ptrs": bool(model.add_tpos_enc_to_obj_ptrs),
    }


class _Module(nn.Module):
    """Base of the four wrappers: input and output names from :data:`MODULE_IO`, per model.

    ``forward(*inputs)`` takes the tensors of ``input_names`` in order (what the
    ONNX exporter and the verifier pass) and calls ``compute`` with them by name.
    """

    name = ""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        io = MODULE_IO[self.name]
        self.input_names = list(io.input_names(model_switches(model)))
        self.output_names = list(io.outputs)

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"{self.name} takes {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}")
        return self.compute(**dict(zip(self.input_names, inputs)))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` by the angles whose cos/sin are given.

    Real-valued equivalent of ``sam2.modeling.position_encoding.apply_rotary_enc``
    (``view_as_complex(x) * freqs_cis``).

    Args:
        x: ``[..., L, D]`` float, with ``L`` a multiple of ``cos.shape[0]`` (the
            tables repeat along L, like ``rope_k_repeat`` in the official code).
        cos, sin: ``[Lq, D/2]`` float32 tables (``freqs_cis.real / .imag``).

    Returns:
        Tensor of the same shape and dtype as ``x``.
    """
    lq, half = cos.shape
    lead = x.shape[:-2]
    xr = x.reshape(*lead, -1, lq, half, 2)
    a, b = xr[..., 0], xr[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.reshape(x.shape)


def _attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               rope: tuple[torch.Tensor, torch.Tensor] | None,
               num_k_rope: torch.Tensor | int | None) -> torch.Tensor:
    """Forward of the official ``RoPEAttention`` with real-valued RoPE.

    Mirrors ``sam2.modeling.sam.transformer.RoPEAttention.forward``. Keys past
    ``num_k_rope`` (the object-pointer tokens) are not rotated. Queries are
    processed in blocks of :data:`QUERY_CHUNK`; when the values' input width is
    below the head width (memory cross-attention), the value projection is
    applied after mixing (see :func:`_mix`). ``q``: ``[B, Lq, Cq]``,
    ``k``/``v``: ``[B, Lk, Ck]``; returns ``[B, Lq, Cq]``.
    """
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    if rope is not None:
        cos, sin = rope
        q = apply_rope(q, cos, sin)
        if num_k_rope is None:
            k = apply_rope(k, cos, sin)
        else:
            k = torch.cat([apply_rope(k[:, :, :num_k_rope], cos, sin), k[:, :, num_k_rope:]], dim=2)
    scale = 1.0 / math.sqrt(q.shape[-1])
    kt = k.transpose(-2, -1)
    lq = q.shape[-2]  # fixed (H * W current-frame tokens), so the chunks are static
    chunks = [q[:, :, i:i + QUERY_CHUNK] for i in range(0, lq, QUERY_CHUNK)] if lq > QUERY_CHUNK else [q]
    outs = [_mix(attn, torch.softmax(torch.matmul(c * scale, kt), dim=-1), v) for c in chunks]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return attn.out_proj(attn._recombine_heads(out))


def _mix(attn: nn.Module, weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``weights [B, heads, Lq, Lk]`` times the projected values -> ``[B, heads, Lq, head_dim]``."""
    head_dim = attn.internal_dim // attn.num_heads
    if attn.kv_in_dim < head_dim:
        # Values come from narrow inputs (memory: 64 channels projected to 256).
        # Softmax rows sum to 1, so  weights @ (v W^T + b) == (weights @ v) W^T + b:
        # the product over the (long) key axis runs on kv_in_dim columns instead of
        # head_dim -- 4x fewer multiply-adds for SAM 2's memory, same result up to
        # float rounding.
        mixed = torch.matmul(weights, v.unsqueeze(1))  # [B, heads, Lq, kv_in_dim]
        w = attn.v_proj.weight.reshape(attn.num_heads, head_dim, attn.kv_in_dim)
        b = attn.v_proj.bias.reshape(attn.num_heads, 1, head_dim)
        return torch.matmul(mixed, w.transpose(1, 2)) + b
    return torch.matmul(weights, attn._separate_heads(attn.v_proj(v), attn.num_heads))


class ImageEncoder(_Module):
    """Image encoder: normalised frame -> multi-scale features.

    Mirrors ``SAM2Base.forward_image`` (Hiera trunk + FPN neck, then the mask
    decoder's ``conv_s0`` / ``conv_s1`` on the two high-resolution levels) followed
    by ``_prepare_backbone_features``. The position encodings are constants and
    are baked into :class:`MemoryAttention` instead of being outputs.

    Inputs: ``image`` ``[1, 3, S, S]`` float32 (RGB, ImageNet-normalised).
    Outputs: ``high_res_feat0`` ``[1, C/8, 4H, 4W]``, ``high_res_feat1``
    ``[1, C/4, 2H, 2W]``, ``vision_feat`` ``[1, C, H, W]``, all float32.
    """

    name = "image_encoder"

    def compute(self, image: torch.Tensor):
        out = self.model.forward_image(image)
        feats = out["backbone_fpn"][-self.model.num_feature_levels:]
        return feats[0], feats[1], feats[2]


class MemoryAttention(_Module):
    """Memory attention: condition the current frame's features on the memory bank.

    Mirrors the tensor work of ``SAM2Base._prepare_memory_conditioned_features``
    after memory selection, and ``MemoryAttention.forward``: spatial memories get
    ``maskmem_pos_enc + maskmem_tpos_enc[...]`` as keys' position encoding,
    object pointers are split into ``C / Cm`` tokens of ``Cm`` channels with the
    (projected) 1-D sine encoding of their temporal offset, and RoPE is applied to
    the current frame and to spatial memory keys but not to pointer tokens.

    Inputs:
        vision_feat: ``[1, C, H, W]`` float32, image encoder output (shared by objects).
        maskmem_features: ``[B, T, Cm, H, W]`` float32, selected spatial memories.
        memory_tpos_enc: ``[T, Cm]`` float32, ``maskmem_tpos_enc[num_maskmem - t_pos - 1]``
            for each selected memory (chosen by the tracker).
        obj_ptrs: ``[B, P, C]`` float32, selected object pointers.
        obj_ptr_tpos: ``[P]`` float32, each pointer's temporal offset divided by
            ``t_diff_max`` (as in the official code, before the sine encoding).
            Only when ``add_tpos_enc_to_obj_ptrs`` (SAM 2.1); SAM 2.0 pointers
            get a zero position encoding and the input does not exist.
    Output: ``pix_feat_with_mem`` ``[B, C, H, W]`` float32.
    """

    name = "memory_attention"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.attn = model.memory_attention
        hw = model.sam_image_embedding_size
        self.hw = hw
        self.hidden_dim = model.hidden_dim
        self.mem_dim = model.mem_dim
        with torch.no_grad():
            # Constant position encodings: they depend on the feature shape only.
            pos = model.image_encoder.neck.position_encoding(torch.zeros(1, self.hidden_dim, hw, hw))
            self.register_buffer("curr_pos", pos.flatten(2).transpose(1, 2).contiguous())  # [1, HW, C]
            mpos = model.memory_encoder.position_encoding(torch.zeros(1, self.mem_dim, hw, hw))
            self.register_buffer("maskmem_pos_enc", mpos.flatten(2).transpose(1, 2)[0].contiguous())  # [HW, Cm]
            layer0 = self.attn.layers[0]
            self._rope_tables("sa", layer0.self_attn, hw)
            self._rope_tables("ca", layer0.cross_attn_image, hw)

    def _rope_tables(self, name: str, attn: nn.Module, hw: int) -> None:
        if not hasattr(attn, "compute_cis"):
            self.register_buffer(f"{name}_cos", None)
            self.register_buffer(f"{name}_sin", None)
            return
        cis = attn.compute_cis(end_x=hw, end_y=hw).cpu()
        self.register_buffer(f"{name}_cos", cis.real.float().contiguous())
        self.register_buffer(f"{name}_sin", cis.imag.float().contiguous())

    def _obj_ptr_pos(self, obj_ptrs: torch.Tensor, obj_ptr_tpos: torch.Tensor | None) -> torch.Tensor:
        """``[P, Cm]`` position encoding of the object pointers (the official ``obj_pos``).

        SAM 2.1 (``add_tpos_enc_to_obj_ptrs``): 1-D sine encoding of the
        normalised offsets, ``C`` wide and projected by ``obj_ptr_tpos_proj``
        when ``proj_tpos_enc_in_obj_ptrs``, else ``Cm`` wide. SAM 2.0: zeros.
        """
        m = self.model
        if m.add_tpos_enc_to_obj_ptrs:
            tpos_dim = self.hidden_dim if m.proj_tpos_enc_in_obj_ptrs else self.mem_dim
            pe = get_1d_sine_pe(obj_ptr_tpos, dim=tpos_dim)
            return m.obj_ptr_tpos_proj(pe)  # [P, Cm]
        return torch.zeros_like(obj_ptrs[0, :, :self.mem_dim])

    def compute(self, vision_feat, maskmem_features, memory_tpos_enc, obj_ptrs, obj_ptr_tpos=None):
        B, T = maskmem_features.shape[0], maskmem_features.shape[1]
        C, Cm, hw = self.hidden_dim, self.mem_dim, self.hw
        split = C // Cm

        curr = vision_feat.flatten(2).transpose(1, 2).expand(B, -1, -1)  # [B, HW, C]
        curr_pos = self.curr_pos

        spatial = maskmem_features.permute(0, 1, 3, 4, 2).reshape(B, T * hw * hw, Cm)
        spatial_pos = (self.maskmem_pos_enc[None] + memory_tpos_enc[:, None, :]).reshape(1, T * hw * hw, Cm)
        ptr_tokens = obj_ptrs.reshape(B, -1, Cm)  # pointer p -> tokens p*split .. p*split+split-1
        ptr_pos = torch.repeat_interleave(self._obj_ptr_pos(obj_ptrs, obj_ptr_tpos), split, dim=0)[None]
        memory = torch.cat([spatial, ptr_tokens], dim=1)
        memory_pos = torch.cat([spatial_pos, ptr_pos], dim=1).expand(B, -1, -1)
        num_k_rope = spatial.shape[1]

        out = curr
        if self.attn.pos_enc_at_input:
            out = out + 0.1 * curr_pos
        sa_rope = None if self.sa_cos is None else (self.sa_cos, self.sa_sin)
        ca_rope = None if self.ca_cos is None else (self.ca_cos, self.ca_sin)
        for layer in self.attn.layers:
            tgt2 = layer.norm1(out)
            qk = tgt2 + curr_pos if layer.pos_enc_at_attn else tgt2
            out = out + _attention(layer.self_attn, qk, qk, tgt2, sa_rope, None)
            tgt2 = layer.norm2(out)
            q = tgt2 + curr_pos if layer.pos_enc_at_cross_attn_queries else tgt2
            k = memory + memory_pos if layer.pos_enc_at_cross_attn_keys else memory
            out = out + _attention(layer.cross_attn_image, q, k, memory, ca_rope, num_k_rope)
            tgt2 = layer.norm3(out)
            out = out + layer.linear2(layer.activation(layer.linear1(tgt2)))
        out = self.attn.norm(out)
        return out.transpose(1, 2).reshape(B, C, hw, hw)


class MaskDecoder(_Module):
    """Prompt encoder + mask decoder, all four mask tokens at once.

    Mirrors ``SAM2Base._forward_sam_heads`` up to (not including) the multimask
    choice and object-score gating, which the tracker does in NumPy: it returns
    every mask token's logits, IoU estimate and projected object pointer so the
    tracker can apply the official rule (multimask argmax, or single mask with
    the dynamic stability fallback) exactly.

    Inputs:
        pix_feat: ``[B, C, H, W]`` float32, memory-conditioned features.
        high_res_feat0: ``[1, C/8, 4H, 4W]``, high_res_feat1: ``[1, C/4, 2H, 2W]`` float32.
        point_coords: ``[B, N, 2]`` float32, (x, y) in model-input pixels (0..S).
        point_labels: ``[B, N]`` int32: 1 positive, 0 negative, 2/3 box corners, -1 padding.
        mask_input: ``[B, 1, 4H, 4W]`` float32 dense mask prompt (logits or 0/1).
        has_mask_input: ``[B]`` float32, 1.0 where ``mask_input`` is used, else 0.0.
    Outputs:
        low_res_masks: ``[B, 4, 4H, 4W]`` float32 logits (token 0 = single mask).
        iou_predictions: ``[B, 4]`` float32.
        obj_ptrs: ``[B, 4, C]`` float32, ``obj_ptr_proj`` of each mask token.
        object_score_logits: ``[B, 1]`` float32.
    """

    name = "mask_decoder"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        pe = model.sam_prompt_encoder
        with torch.no_grad():
            self.register_buffer("image_pe", pe.get_dense_pe().clone())

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # PromptEncoder._embed_points(pad=True): +0.5 shift, one padding point.
        pe = self.model.sam_prompt_encoder
        B = coords.shape[0]
        coords = torch.cat([coords + 0.5, torch.zeros(B, 1, 2)], dim=1)
        labels = torch.cat([labels, -torch.ones(B, 1, dtype=labels.dtype)], dim=1)
        emb = pe.pe_layer.forward_with_coords(coords, pe.input_image_size)
        lab = labels.unsqueeze(-1)
        emb = torch.where(lab == -1, torch.zeros_like(emb) + pe.not_a_point_embed.weight, emb)
        for i in range(pe.num_point_embeddings):
            emb = torch.where(lab == i, emb + pe.point_embeddings[i].weight, emb)
        return emb

    def compute(self, pix_feat, high_res_feat0, high_res_feat1, point_coords, point_labels,
                mask_input, has_mask_input):
        m = self.model
        pe = m.sam_prompt_encoder
        B = pix_feat.shape[0]
        sparse = self._embed_points(point_coords, point_labels)
        has = has_mask_input.reshape(B, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1.0 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        masks, iou, tokens, obj_score = m.sam_mask_decoder.predict_masks(
            image_embeddings=pix_feat,
            image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[high_res_feat0.expand(B, -1, -1, -1), high_res_feat1.expand(B, -1, -1, -1)],
        )
        return masks, iou, m.obj_ptr_proj(tokens), obj_score


class MemoryEncoder(_Module):
    """Memory encoder: (frame features, predicted mask) -> spatial memory.

    Mirrors ``SAM2Base._encode_new_memory`` including the upsampling of the
    low-resolution mask to ``S x S`` (``_forward_sam_heads`` /
    ``propagate_in_video_preflight``), the sigmoid-or-binarise choice
    (``binarize_mask_from_pts_for_mem_enc``), ``sigmoid_scale/bias_for_mem_enc``
    and the ``no_obj_embed_spatial`` term for objects scored absent.

    Inputs:
        vision_feat: ``[1, C, H, W]`` float32 (raw image encoder features).
        mask_logits: ``[B, 1, 4H, 4W]`` float32 chosen low-res mask logits.
        object_score_logits: ``[B, 1]`` float32; only when the model has
            ``no_obj_embed_spatial`` (SAM 2.1), else the input does not exist.
        binarize_mask: ``[B]`` float32: 1.0 -> mask = (logits > 0) (prompted frames
            when the model binarises masks from points), 0.0 -> sigmoid(logits).
    Output: ``maskmem_features`` ``[B, Cm, H, W]`` float32.
    """

    name = "memory_encoder"

    def compute(self, vision_feat, mask_logits, binarize_mask, object_score_logits=None):
        m = self.model
        B = mask_logits.shape[0]
        hr = F.interpolate(mask_logits, size=(m.image_size, m.image_size), mode="bilinear", align_corners=False)
        b = binarize_mask.reshape(B, 1, 1, 1)
        mask = b * (hr > 0).float() + (1.0 - b) * torch.sigmoid(hr)
        if m.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * m.sigmoid_scale_for_mem_enc
        if m.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + m.sigmoid_bias_for_mem_enc
        pix = vision_feat.expand(B, -1, -1, -1)
        feats = m.memory_encoder(pix, mask, skip_mask_sigmoid=True)["vision_features"]
        if m.no_obj_embed_spatial is not None:
            absent = 1.0 - (object_score_logits > 0).float()
            feats = feats + absent[..., None, None] * m.no_obj_embed_spatial[..., None, None]
        return feats
