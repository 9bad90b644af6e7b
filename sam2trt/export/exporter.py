"""Export an official SAM 2 / SAM 2.1 model to four ONNX modules and ``model.json``.

Needs the ``export`` extra (torch, hydra-core, iopath, onnx) and the official
``sam2`` package (PyPI 1.1.0, installed with ``--no-deps``).
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sam2trt import __version__
from sam2trt.fileio import publish, remove, sha256_file, stage_dir
from sam2trt.errors import InputError, ModelError, RuntimeFailure
from sam2trt.lazy import lazy_import
from sam2trt.model_spec import MODEL_FILES, MODEL_JSON, MODULE_IO, FORMAT_VERSION

#: The export wrappers (:mod:`sam2trt.export.modules`): its top level imports torch and sam2.
modules = lazy_import("sam2trt.export.modules")

# Official config names -> hydra config paths inside the ``sam2`` package.
CONFIGS = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}

OPSET = 17
# Max abs difference allowed between ONNX Runtime and PyTorch, relative to the
# output's magnitude: |ort - torch|.max() <= VERIFY_RTOL * max(1, |torch|.max()).
VERIFY_RTOL = 1e-3


def _import_torch():
    """``torch``, after checking that the official ``sam2`` package imports too.

    Raises:
        InputError: either is missing, with the install commands.
    """
    try:
        import torch

        importlib.import_module("sam2")
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InputError(
            f"exporting needs PyTorch and the official sam2 package ({e.name} is missing): "
            "pip install 'sam2trt[export]' && pip install --no-deps sam2==1.1.0"
        ) from None
    return torch


def build_model(config: str, checkpoint: str | os.PathLike | None = None, seed: int | None = None):
    """Build the official ``SAM2VideoPredictor`` on CPU in eval mode.

    Mirrors ``sam2.build_sam.build_sam2_video_predictor(..., apply_postprocessing=True)``.

    Args:
        config: official config name, a key of :data:`CONFIGS` (e.g. ``"sam2.1_hiera_t"``).
        checkpoint: official checkpoint (``{"model": state_dict}``), loaded with
            ``torch.load(..., weights_only=True)``; ``None`` keeps random init weights.
        seed: ``torch.manual_seed`` applied before building (random weights).

    Raises:
        InputError: unknown config, unreadable checkpoint, or a state dict that
            does not match the config.
    """
    torch = _import_torch()
    from sam2.build_sam import build_sam2_video_predictor

    if config not in CONFIGS:
        raise InputError(f"unknown config {config!r}: use one of {', '.join(CONFIGS)}")
    if seed is not None:
        torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam2_video_predictor(CONFIGS[config], ckpt_path=None, device="cpu", mode="eval")
    if checkpoint is not None:
        path = pathlib.Path(checkpoint)
        if not path.is_file():
            raise InputError(f"checkpoint {path} not found: pass the .pt file from `sam2trt download {config}`")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
        except Exception as e:
            raise InputError(f"cannot read checkpoint {path} ({type(e).__name__}): expected an official SAM 2 .pt file") from None
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise InputError(
                f"checkpoint {path} does not match config {config} "
                f"({len(missing)} missing, {len(unexpected)} unexpected keys): pass the matching --config"
            )
    model.eval()
    return model


def _check_supported(model) -> None:
    needed = {
        "use_high_res_features_in_sam": True,
        "directly_add_no_mem_embed": True,
        "use_obj_ptrs_in_encoder": True,
        "non_overlap_masks_for_mem_enc": False,  # not mirrored by the tracker core
    }
    for attr, want in needed.items():
        if getattr(model, attr) != want:
            raise ModelError(f"model option {attr}={getattr(model, attr)} is not supported: use an official SAM 2 / 2.1 config")


def model_description(model, config: str) -> dict:
    """Everything the tracker needs to know about ``model``, as JSON-able data.

    Returns the ``model.json`` content without file hashes (see :func:`export_model`).
    """
    dec = model.sam_mask_decoder
    hw = model.sam_image_embedding_size

    def arr(t):
        return t.detach().cpu().float().numpy().tolist()

    return {
        "format_version": FORMAT_VERSION,
        "sam2trt_version": __version__,
        "config": config,
        "image_size": model.image_size,
        "backbone_stride": model.backbone_stride,
        "feat_size": hw,
        "high_res_feat_shapes": [[dec.conv_s0.out_channels, 4 * hw, 4 * hw], [dec.conv_s1.out_channels, 2 * hw, 2 * hw]],
        "hidden_dim": model.hidden_dim,
        "mem_dim": model.mem_dim,
        "num_maskmem": model.num_maskmem,
        "max_obj_ptrs_in_encoder": model.max_obj_ptrs_in_encoder,
        "max_cond_frames_in_attn": model.max_cond_frames_in_attn,
        "memory_temporal_stride_for_eval": model.memory_temporal_stride_for_eval,
        "add_tpos_enc_to_obj_ptrs": model.add_tpos_enc_to_obj_ptrs,
        "proj_tpos_enc_in_obj_ptrs": model.proj_tpos_enc_in_obj_ptrs,
        "use_signed_tpos_enc_to_obj_ptrs": model.use_signed_tpos_enc_to_obj_ptrs,
        "only_obj_ptrs_in_the_past_for_eval": model.only_obj_ptrs_in_the_past_for_eval,
        "pred_obj_scores": model.pred_obj_scores,
        "pred_obj_scores_mlp": model.pred_obj_scores_mlp,
        "no_obj_embed_spatial": model.no_obj_embed_spatial is not None,
        "use_mlp_for_obj_ptr_proj": model.use_mlp_for_obj_ptr_proj,
        "iou_prediction_use_sigmoid": model.iou_prediction_use_sigmoid,
        "soft_no_obj_ptr": model.soft_no_obj_ptr,
        "fixed_no_obj_ptr": model.fixed_no_obj_ptr,
        "multimask_output_in_sam": model.multimask_output_in_sam,
        "multimask_output_for_tracking": model.multimask_output_for_tracking,
        "multimask_min_pt_num": model.multimask_min_pt_num,
        "multimask_max_pt_num": model.multimask_max_pt_num,
        "use_multimask_token_for_obj_ptr": model.use_multimask_token_for_obj_ptr,
        "binarize_mask_from_pts_for_mem_enc": model.binarize_mask_from_pts_for_mem_enc,
        "use_mask_input_as_output_without_sam": model.use_mask_input_as_output_without_sam,
        "dynamic_multimask_via_stability": dec.dynamic_multimask_via_stability,
        "dynamic_multimask_stability_delta": dec.dynamic_multimask_stability_delta,
        "dynamic_multimask_stability_thresh": dec.dynamic_multimask_stability_thresh,
        "fill_hole_area": model.fill_hole_area,
        "non_overlap_masks": model.non_overlap_masks,
        "sigmoid_scale_for_mem_enc": model.sigmoid_scale_for_mem_enc,
        "sigmoid_bias_for_mem_enc": model.sigmoid_bias_for_mem_enc,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "constants": {
            "maskmem_tpos_enc": arr(model.maskmem_tpos_enc.reshape(model.num_maskmem, model.mem_dim)),
            "no_mem_embed": arr(model.no_mem_embed.reshape(-1)),
            "no_obj_ptr": arr(model.no_obj_ptr.reshape(-1)) if model.pred_obj_scores else None,
            "mask_downsample_weight": arr(model.mask_downsample.weight.reshape(4, 4)),
            "mask_downsample_bias": float(model.mask_downsample.bias.item()),
        },
        "opset": OPSET,
    }


@dataclass
class _ModuleSpec:
    name: str
    make: Callable
    example: Callable  # (B, T, P, N) -> {input name: tensor}, every input the module can have

    @property
    def dynamic_axes(self) -> dict:
        """``torch.onnx.export``'s ``dynamic_axes`` of every input and output the module can have (:data:`MODULE_IO`)."""
        return MODULE_IO[self.name].dynamic_axes()

    def args(self, module, shape) -> tuple:
        """Example inputs for ``module`` (its ``input_names``, in order) at ``shape`` = (B, T, P, N)."""
        ex = self.example(*shape)
        return tuple(ex[n] for n in module.input_names)


def _module_specs(model) -> list[_ModuleSpec]:
    import torch

    S = model.image_size
    hw = model.sam_image_embedding_size
    C, Cm = model.hidden_dim, model.mem_dim
    dec = model.sam_mask_decoder
    c0, c1 = dec.conv_s0.out_channels, dec.conv_s1.out_channels

    def vision(B=1):
        return torch.randn(B, C, hw, hw)

    def image(B, T, P, N):
        return {"image": torch.randn(1, 3, S, S)}

    def mem_attn(B, T, P, N):
        return {"vision_feat": vision(), "maskmem_features": torch.randn(B, T, Cm, hw, hw),
                "memory_tpos_enc": 0.02 * torch.randn(T, Cm), "obj_ptrs": torch.randn(B, P, C),
                "obj_ptr_tpos": torch.linspace(-1.0, 1.0, P)}

    def mask_dec(B, T, P, N):
        return {"pix_feat": vision(B), "high_res_feat0": torch.randn(1, c0, 4 * hw, 4 * hw),
                "high_res_feat1": torch.randn(1, c1, 2 * hw, 2 * hw), "point_coords": torch.rand(B, N, 2) * S,
                "point_labels": torch.randint(-1, 4, (B, N), dtype=torch.int32),
                "mask_input": torch.randn(B, 1, 4 * hw, 4 * hw), "has_mask_input": (torch.arange(B) % 2).float()}

    def mem_enc(B, T, P, N):
        # scores of both signs: the no_obj_embed_spatial term is checked for absent objects too
        return {"vision_feat": vision(), "mask_logits": 4 * torch.randn(B, 1, 4 * hw, 4 * hw),
                "binarize_mask": (torch.arange(B) % 2).float(), "object_score_logits": torch.randn(B, 1)}

    return [
        _ModuleSpec("image_encoder", modules.ImageEncoder, image),
        _ModuleSpec("memory_attention", modules.MemoryAttention, mem_attn),
        _ModuleSpec("mask_decoder", modules.MaskDecoder, mask_dec),
        _ModuleSpec("memory_encoder", modules.MemoryEncoder, mem_enc),
    ]


# (B, T, P, N) used to trace, then the shapes checked with ONNX Runtime: the
# check shapes differ from the traced ones so a shape baked in by tracing fails.
_TRACE_SHAPE = (1, 2, 3, 2)
_VERIFY_SHAPES = [(2, 7, 16, 1), (1, 1, 1, 3)]


def _verify(module, onnx_path: pathlib.Path, spec: _ModuleSpec, log: Callable[[str], None]) -> dict:
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shapes = _VERIFY_SHAPES if spec.dynamic_axes else _VERIFY_SHAPES[:1]
    report = {}
    for shape in shapes:
        torch.manual_seed(1234)
        args = spec.args(module, shape)
        with torch.no_grad():
            ref = module(*args)
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        feed = {n: a.numpy() for n, a in zip(module.input_names, args)}
        outs = sess.run(module.output_names, feed)
        for name, r, o in zip(module.output_names, ref, outs):
            r = r.numpy()
            if r.shape != o.shape:
                raise RuntimeFailure(f"{spec.name}.{name}: ONNX shape {o.shape} != PyTorch {r.shape} at B,T,P,N={shape}")
            diff = float(np.abs(r - o).max())
            tol = VERIFY_RTOL * max(1.0, float(np.abs(r).max()))
            log(f"  {spec.name:17s} {name:20s} B,T,P,N={shape!s:14s} max|diff|={diff:.2e} (tol {tol:.1e})")
            report[f"{name}@{shape}"] = diff
            if not diff <= tol:
                raise RuntimeFailure(
                    f"{spec.name}.{name}: ONNX Runtime differs from PyTorch by {diff:.3g} > {tol:.3g}; "
                    "the export is wrong for this model, please report it"
                )
    return report


def onnx_io_names(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(input names, output names)`` of an ONNX file's graph, in graph order.

    Raises:
        RuntimeFailure: the file cannot be parsed.
    """
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # onnx raises protobuf errors of several types
        raise RuntimeFailure(f"cannot read {path} back ({type(e).__name__}): export again") from None
    weights = {init.name for init in graph.initializer}  # old IR versions list weights as inputs too
    return [i.name for i in graph.input if i.name not in weights], [o.name for o in graph.output]


def _check_graph_io(module, path: pathlib.Path, name: str, desc: dict) -> list[str]:
    """Check that the exported graph has exactly the inputs and outputs that
    :data:`MODULE_IO` gives for this model's ``model.json`` switches (what the
    tracker will feed); returns the inputs."""
    io = MODULE_IO[name]
    want_in, want_out = list(io.input_names(desc)), list(io.outputs)
    inputs, outputs = onnx_io_names(path)
    if inputs != want_in or outputs != want_out or list(module.input_names) != want_in:
        raise RuntimeFailure(
            f"{name}: the exported graph has inputs {inputs} and outputs {outputs}, "
            f"MODULE_IO says {want_in} and {want_out} for this model; "
            "the export is wrong for this model, please report it")
    return inputs


def export_model(model, config: str, out_dir: str | os.PathLike, *, source: dict,
                 verify: bool = True, log: Callable[[str], None] = print) -> pathlib.Path:
    """Export ``model`` to ``out_dir``: four ONNX files and ``model.json``.

    Files are written into a temporary folder next to ``out_dir`` and moved into
    place only when every module exported and (with ``verify``) matched PyTorch
    within ``VERIFY_RTOL``; a failed export leaves ``out_dir`` untouched.

    Args:
        model: a ``SAM2VideoPredictor`` from :func:`build_model`.
        config: its config name (recorded in ``model.json``).
        out_dir: target folder; existing model files in it are replaced.
        source: provenance recorded in ``model.json`` (checkpoint path + sha256,
            or ``{"random_weights": True, "seed": N}``).
        verify: run each module in ONNX Runtime on random inputs and compare.
        log: receives progress lines (verification diffs).

    Returns:
        The output folder path.

    Raises:
        ModelError: unsupported model options.
        RuntimeFailure: export or verification failed.
    """
    import torch

    _check_supported(model)
    out_dir = pathlib.Path(out_dir)
    tmp = stage_dir(out_dir)  # private, next to out_dir (its parent is created)
    try:
        desc = model_description(model, config)
        desc["source"] = source
        desc["files"] = {}
        for spec in _module_specs(model):
            module = spec.make(model).eval()
            path = tmp / MODEL_FILES[spec.name]
            names = set(module.input_names) | set(module.output_names)
            dynamic_axes = {k: v for k, v in spec.dynamic_axes.items() if k in names}
            t0 = time.perf_counter()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, spec.args(module, _TRACE_SHAPE), str(path),
                    input_names=module.input_names, output_names=module.output_names,
                    dynamic_axes=dynamic_axes or None, opset_version=OPSET,
                    do_constant_folding=True, dynamo=False,
                )
            log(f"exported {path.name} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
            inputs = _check_graph_io(module, path, spec.name, desc)
            entry = {"sha256": sha256_file(path), "inputs": inputs, "outputs": module.output_names}
            if verify:
                entry["verify_max_abs_diff"] = _verify(module, path, spec, log)
            desc["files"][spec.name] = entry
        (tmp / MODEL_JSON).write_text(json.dumps(desc, indent=1))
        out_dir.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            publish(f, out_dir / f.name)
    finally:
        remove(tmp)
    return out_dir
