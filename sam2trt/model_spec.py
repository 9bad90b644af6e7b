"""``model.json``: what an exported model folder holds and what the tracker needs.

The model folder is the contract between ``sam2trt export`` (which needs torch)
and everything else (which does not): module files, feature sizes, the
behaviour switches of the official config, and the small constant tensors the
NumPy tracker core uses (``maskmem_tpos_enc``, ``no_mem_embed``, ``no_obj_ptr``).
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam2trt.errors import ModelError

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODULES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
MODEL_FILES = {name: f"{name}.onnx" for name in MODULES}


@dataclass(frozen=True)
class ModuleIO:
    """One module's ONNX input and output names, in graph order.

    Attributes:
        inputs: every input the module can have (shapes and dtypes in
            :mod:`sam2trt.export.modules`).
        outputs: its outputs.
        conditional: inputs that exist only when a ``model.json`` switch is
            true, ``{input: switch}``; the exporter leaves them out of the graph
            otherwise (the model has nothing that reads them).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    conditional: dict = field(default_factory=dict)

    def input_names(self, switches) -> tuple[str, ...]:
        """The inputs present for a model with these ``model.json`` switches.

        Args:
            switches: a mapping with the switches named in ``conditional`` (the
                parsed ``model.json``). A missing switch counts as true: folders
                exported before it was recorded are SAM 2.1, where every
                conditional input exists.
        """
        return tuple(n for n in self.inputs if n not in self.conditional or switches.get(self.conditional[n], True))


#: Every module's inputs and outputs. SAM 2.0 and 2.1 differ in two inputs:
#: ``memory_encoder.object_score_logits`` feeds ``no_obj_embed_spatial`` (2.1
#: only) and ``memory_attention.obj_ptr_tpos`` feeds the object pointers'
#: temporal encoding (``add_tpos_enc_to_obj_ptrs``, 2.1 only).
MODULE_IO = {
    "image_encoder": ModuleIO(("image",), ("high_res_feat0", "high_res_feat1", "vision_feat")),
    "memory_attention": ModuleIO(
        ("vision_feat", "maskmem_features", "memory_tpos_enc", "obj_ptrs", "obj_ptr_tpos"), ("pix_feat_with_mem",),
        {"obj_ptr_tpos": "add_tpos_enc_to_obj_ptrs"}),
    "mask_decoder": ModuleIO(
        ("pix_feat", "high_res_feat0", "high_res_feat1", "point_coords", "point_labels", "mask_input",
         "has_mask_input"),
        ("low_res_masks", "iou_predictions", "obj_ptrs", "object_score_logits")),
    "memory_encoder": ModuleIO(
        ("vision_feat", "mask_logits", "object_score_logits", "binarize_mask"), ("maskmem_features",),
        {"object_score_logits": "no_obj_embed_spatial"}),
}


@dataclass(frozen=True)
class ModelSpec:
    """A loaded ``model.json`` plus its folder.

    Attributes:
        root: the model folder.
        raw: the parsed JSON (every switch of the official config, see ``export``).
        maskmem_tpos_enc: ``[num_maskmem, mem_dim]`` float32 temporal encodings.
        no_mem_embed: ``[hidden_dim]`` float32, added to the image features of a
            frame with no memory (``directly_add_no_mem_embed``).
        no_obj_ptr: ``[hidden_dim]`` float32 pointer for objects scored absent.
        mask_downsample_weight: ``[4, 4]`` float32 weight and ``mask_downsample_bias``
            its bias, of the ``mask_downsample`` conv
            (used to make an object pointer from a mask prompt).
    """

    root: pathlib.Path
    raw: dict = field(repr=False)
    maskmem_tpos_enc: np.ndarray = field(repr=False)
    no_mem_embed: np.ndarray = field(repr=False)
    no_obj_ptr: np.ndarray | None = field(repr=False)
    mask_downsample_weight: np.ndarray = field(repr=False)
    mask_downsample_bias: float = 0.0

    def __getattr__(self, name: str) -> Any:
        # Config switches read as attributes: spec.num_maskmem, spec.image_size, ...
        raw = self.__dict__.get("raw")
        if raw is not None and name in raw:
            return raw[name]
        raise AttributeError(name)

    def input_names(self, module: str) -> tuple[str, ...]:
        """The ONNX inputs of ``module`` for this model (:data:`MODULE_IO` and its switches)."""
        return MODULE_IO[module].input_names(self.raw)

    def path(self, module: str) -> pathlib.Path:
        """Path of a module's ONNX file (``module`` in :data:`MODULES`)."""
        return self.root / MODEL_FILES[module]

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits, pixels (``image_size / 4``, 256)."""
        return 4 * self.feat_size


def load_model_spec(root: str | pathlib.Path) -> ModelSpec:
    """Read and check a model folder written by ``sam2trt export``.

    Raises:
        ModelError: the folder, ``model.json`` or a module file is missing, or
            ``model.json`` is unreadable or from another format version.
    """
    root = pathlib.Path(root)
    hint = "run `sam2trt export --out DIR` to create it"
    if not root.is_dir():
        raise ModelError(f"model folder {root} not found: {hint}")
    mj = root / MODEL_JSON
    if not mj.is_file():
        raise ModelError(f"{mj} is missing, so {root} is not a complete model folder: {hint}")
    try:
        raw = json.loads(mj.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {mj} ({type(e).__name__}): re-export the model with `sam2trt export`") from None
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{mj} has format version {raw.get('format_version')}, this sam2trt reads {FORMAT_VERSION}: re-export the model")
    for name, fname in MODEL_FILES.items():
        if not (root / fname).is_file():
            raise ModelError(f"{root / fname} is missing, so {root} is incomplete: re-export the model with `sam2trt export`")
    const = raw["constants"]
    f32 = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    return ModelSpec(
        root=root,
        raw=raw,
        maskmem_tpos_enc=f32(const["maskmem_tpos_enc"]),
        no_mem_embed=f32(const["no_mem_embed"]),
        no_obj_ptr=None if const.get("no_obj_ptr") is None else f32(const["no_obj_ptr"]),
        mask_downsample_weight=f32(const["mask_downsample_weight"]),
        mask_downsample_bias=float(const["mask_downsample_bias"]),
    )
