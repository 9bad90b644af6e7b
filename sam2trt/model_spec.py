"""``model.json``: what an exported model folder holds and what the tracker needs.

The model folder is the contract between ``sam2trt export`` (which needs torch)
and everything else (which does not): module files, feature sizes, the
behaviour switches of the official config, and the small constant tensors the
NumPy tracker core uses (``maskmem_tpos_enc``, ``no_mem_embed``, ``no_obj_ptr``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from sam2trt.errors import ModelError
from sam2trt.fileio import atomic_write, sha256_file

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODULES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
MODEL_FILES = {name: f"{name}.onnx" for name in MODULES}


#: The dynamic dimensions of the module graphs: ``{symbol: the ONNX dimension name the export writes}``.
#: ``B`` objects tracked at once, ``T`` memory frames, ``P`` object pointers, ``N`` prompt points per object.
DYNAMIC_DIMS = {"B": "num_objects", "T": "num_memories", "P": "num_obj_ptrs", "N": "num_points"}


def static_dims(raw: Mapping[str, Any]) -> dict[str, int]:
    """The static symbols of :data:`MODULE_IO`'s shapes, from a parsed ``model.json`` (or the exporter's description).

    Returns:
        ``{"S": image_size, "H": feat_size, "C": hidden_dim, "Cm": mem_dim,
        "L": 4 * feat_size (low-resolution mask side), "C0", "H0", "W0", "C1",
        "H1", "W1": the two high-resolution feature shapes}``, all in
        elements (pixels or channels).
    """
    (c0, h0, w0), (c1, h1, w1) = raw["high_res_feat_shapes"]
    return {"S": raw["image_size"], "H": raw["feat_size"], "C": raw["hidden_dim"], "Cm": raw["mem_dim"],
            "L": 4 * raw["feat_size"], "C0": c0, "H0": h0, "W0": w0, "C1": c1, "H1": h1, "W1": w1}


@dataclass(frozen=True)
class ModuleIO:
    """One module's ONNX inputs and outputs, in graph order, with their symbolic shapes.

    A shape is a tuple of ints and symbols: the dynamic ones of
    :data:`DYNAMIC_DIMS` (``B``, ``T``, ``P``, ``N``) and the static ones of
    :func:`static_dims` (``C``, ``H``, ...). Every tensor is float32 except
    those named in ``int32``.

    Attributes:
        input_shapes: ``{input: shape}`` for every input the module can have
            (what each holds: :mod:`sam2trt.export.modules`).
        output_shapes: ``{output: shape}``.
        conditional: inputs that exist only when a ``model.json`` switch is
            true, ``{input: switch}``; the exporter leaves them out of the graph
            otherwise (the model has nothing that reads them).
        int32: the int32 tensors.
    """

    input_shapes: dict
    output_shapes: dict
    conditional: dict = field(default_factory=dict)
    int32: frozenset = frozenset()

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every input name, in graph order."""
        return tuple(self.input_shapes)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The output names, in graph order."""
        return tuple(self.output_shapes)

    def input_names(self, switches) -> tuple[str, ...]:
        """The inputs present for a model with these ``model.json`` switches.

        Args:
            switches: a mapping with the switches named in ``conditional`` (the
                parsed ``model.json``). A missing switch counts as true: folders
                exported before it was recorded are SAM 2.1, where every
                conditional input exists.
        """
        return tuple(n for n in self.inputs if n not in self.conditional or switches.get(self.conditional[n], True))

    def symbols(self, name: str) -> tuple:
        """The symbolic shape of input or output ``name`` (KeyError for another name)."""
        return self.input_shapes[name] if name in self.input_shapes else self.output_shapes[name]

    def shape(self, name: str, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape of ``name`` with each symbol replaced by ``dims[symbol]`` (ints stay)."""
        return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.symbols(name))

    def dtype(self, name: str) -> np.dtype:
        """``np.int32`` for the tensors in ``int32``, else ``np.float32``."""
        return np.dtype(np.int32 if name in self.int32 else np.float32)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s ``dynamic_axes``: ``{tensor: {axis: ONNX dimension name}}``.

        Every input and output with a :data:`DYNAMIC_DIMS` symbol; the others
        (fully static) are left out.
        """
        out = {}
        for name, shape in {**self.input_shapes, **self.output_shapes}.items():
            axes = {k: DYNAMIC_DIMS[d] for k, d in enumerate(shape) if d in DYNAMIC_DIMS}
            if axes:
                out[name] = axes
        return out


#: Every module's inputs and outputs with their symbolic shapes: the one table the
#: exporter (names, ``dynamic_axes``), the TensorRT profiles
#: (:func:`sam2trt.engine.build.profile_shapes`), the runners and the profiling
#: script read. SAM 2.0 and 2.1 differ in two inputs:
#: ``memory_encoder.object_score_logits`` feeds ``no_obj_embed_spatial`` (2.1
#: only) and ``memory_attention.obj_ptr_tpos`` feeds the object pointers'
#: temporal encoding (``add_tpos_enc_to_obj_ptrs``, 2.1 only).
MODULE_IO = {
    "image_encoder": ModuleIO(
        {"image": (1, 3, "S", "S")},
        {"high_res_feat0": (1, "C0", "H0", "W0"), "high_res_feat1": (1, "C1", "H1", "W1"),
         "vision_feat": (1, "C", "H", "H")}),
    "memory_attention": ModuleIO(
        {"vision_feat": (1, "C", "H", "H"), "maskmem_features": ("B", "T", "Cm", "H", "H"),
         "memory_tpos_enc": ("T", "Cm"), "obj_ptrs": ("B", "P", "C"), "obj_ptr_tpos": ("P",)},
        {"pix_feat_with_mem": ("B", "C", "H", "H")},
        {"obj_ptr_tpos": "add_tpos_enc_to_obj_ptrs"}),
    "mask_decoder": ModuleIO(
        {"pix_feat": ("B", "C", "H", "H"), "high_res_feat0": (1, "C0", "H0", "W0"),
         "high_res_feat1": (1, "C1", "H1", "W1"), "point_coords": ("B", "N", 2), "point_labels": ("B", "N"),
         "mask_input": ("B", 1, "L", "L"), "has_mask_input": ("B",)},
        {"low_res_masks": ("B", 4, "L", "L"), "iou_predictions": ("B", 4), "obj_ptrs": ("B", 4, "C"),
         "object_score_logits": ("B", 1)},
        int32=frozenset({"point_labels"})),
    "memory_encoder": ModuleIO(
        {"vision_feat": (1, "C", "H", "H"), "mask_logits": ("B", 1, "L", "L"), "object_score_logits": ("B", 1),
         "binarize_mask": ("B",)},
        {"maskmem_features": ("B", "Cm", "H", "H")},
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

    def input_shapes(self, module: str, **sizes: int) -> dict[str, tuple[int, ...]]:
        """``{input: shape}`` of ``module``'s inputs for this model (:meth:`input_names`), from :data:`MODULE_IO`.

        Args:
            module: a name in :data:`MODULES`.
            **sizes: a value for each dynamic symbol the inputs use (``B``, ``T``, ``P``, ``N``).
        Raises:
            KeyError: a dynamic symbol without a size.
        """
        io, dims = MODULE_IO[module], {**static_dims(self.raw), **sizes}
        return {name: io.shape(name, dims) for name in self.input_names(module)}

    def path(self, module: str) -> pathlib.Path:
        """Path of a module's ONNX file (``module`` in :data:`MODULES`)."""
        return self.root / MODEL_FILES[module]

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits, pixels (``image_size / 4``, 256)."""
        return 4 * self.feat_size


_SHA_CACHE_NAME = "verified-modules.json"

# Keys of model.json the runtime reads, with their JSON types (bool is not an int here).
_INT, _NUM, _BOOL = "int", "number", "bool"
_SCHEMA = {
    "config": str, "image_size": _INT, "feat_size": _INT, "hidden_dim": _INT, "mem_dim": _INT,
    "num_maskmem": _INT, "max_obj_ptrs_in_encoder": _INT, "max_cond_frames_in_attn": _INT,
    "memory_temporal_stride_for_eval": _INT, "multimask_min_pt_num": _INT, "multimask_max_pt_num": _INT,
    "fill_hole_area": _INT, "high_res_feat_shapes": list,
    "add_tpos_enc_to_obj_ptrs": _BOOL, "use_signed_tpos_enc_to_obj_ptrs": _BOOL,
    "only_obj_ptrs_in_the_past_for_eval": _BOOL, "pred_obj_scores": _BOOL, "soft_no_obj_ptr": _BOOL,
    "fixed_no_obj_ptr": _BOOL, "multimask_output_in_sam": _BOOL, "multimask_output_for_tracking": _BOOL,
    "use_multimask_token_for_obj_ptr": _BOOL, "binarize_mask_from_pts_for_mem_enc": _BOOL,
    "use_mask_input_as_output_without_sam": _BOOL, "dynamic_multimask_via_stability": _BOOL,
    "non_overlap_masks": _BOOL,
    "dynamic_multimask_stability_delta": _NUM, "dynamic_multimask_stability_thresh": _NUM,
    "sigmoid_scale_for_mem_enc": _NUM, "sigmoid_bias_for_mem_enc": _NUM,
    "image_mean": list, "image_std": list, "constants": dict, "files": dict,
}


def _type_ok(value, kind) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _array(const: dict, key: str, shape: tuple, where: str, optional: bool = False) -> np.ndarray | None:
    value = const.get(key)
    if value is None and optional:
        return None
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != shape or not np.isfinite(arr).all():
        raise ModelError(f"{where}: constants.{key} must be finite numbers of shape {list(shape)}: "
                         "re-export the model with `sam2trt export`")
    return arr


def check_model_json(raw, where: str) -> None:
    """Check the structure and types of a parsed ``model.json`` (``where``: its path, for messages).

    Checks every key the runtime reads (:data:`_SCHEMA`), the constant shapes, and
    ``files``: one entry per module with a 64-hex ``sha256`` and lists of input
    and output names. Raises :class:`ModelError` naming the first problem.
    """
    fix = "re-export the model with `sam2trt export`"
    if not isinstance(raw, dict):
        raise ModelError(f"{where} is not a JSON object: {fix}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{where} has format version {raw.get('format_version')!r}, this sam2trt reads "
                         f"{FORMAT_VERSION}: {fix}")
    for key, kind in _SCHEMA.items():
        if key not in raw:
            raise ModelError(f"{where} has no {key!r}: {fix}")
        if not _type_ok(raw[key], kind):
            name = kind if isinstance(kind, str) else kind.__name__
            raise ModelError(f"{where}: {key!r} must be {'a' if name != 'int' else 'an'} {name}, "
                             f"not {raw[key]!r:.40}: {fix}")
    for key in ("image_size", "feat_size", "hidden_dim", "mem_dim", "num_maskmem"):
        if raw[key] < 1:
            raise ModelError(f"{where}: {key!r} must be at least 1, not {raw[key]}: {fix}")
    for key in ("image_mean", "image_std"):
        if len(raw[key]) != 3 or not all(_type_ok(v, _NUM) for v in raw[key]) or (key == "image_std" and min(raw[key]) <= 0):
            raise ModelError(f"{where}: {key!r} must be 3 numbers (std > 0): {fix}")
    for name in MODULES:
        entry = raw["files"].get(name)
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
                and all(isinstance(entry.get(k), list) and all(isinstance(n, str) for n in entry[k])
                        for k in ("inputs", "outputs"))):
            raise ModelError(f"{where}: files.{name} must hold sha256, inputs and outputs: {fix}")


def _sha_cache_path() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "sam2trt" / _SHA_CACHE_NAME


def check_module_files(root: pathlib.Path, raw: dict) -> None:
    """Check each module file's sha256 against ``model.json`` (cached by size and mtime).

    The first check of a file hashes it (about 0.3 s for SAM 2.1 tiny); the result is
    cached in ``$XDG_CACHE_HOME/sam2trt/verified-modules.json`` under its real path,
    size and mtime, so later starts only ``stat`` it. Raises :class:`ModelError` for a
    missing file or one that is not the exported module (e.g. swapped for another).
    """
    cache_path = _sha_cache_path()
    try:
        cache = json.loads(cache_path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    changed = False
    for name, fname in MODEL_FILES.items():
        path = root / fname
        try:
            st = path.stat()
        except OSError:
            raise ModelError(f"{path} is missing, so {root} is incomplete: re-export the model with `sam2trt export`") from None
        if not path.is_file():
            raise ModelError(f"{path} is not a file: re-export the model with `sam2trt export`")
        want = raw["files"][name]["sha256"]
        key = os.path.realpath(path)
        stamp = [st.st_size, st.st_mtime_ns, want]
        if cache.get(key) == stamp:
            continue
        try:
            got = sha256_file(path)
        except OSError as e:
            raise ModelError(f"cannot read {path} ({e}): check the model folder's permissions") from None
        if got != want:
            raise ModelError(f"{path} is not the {name} that {root / MODEL_JSON} lists (sha256 differs): "
                             "re-export the model or restore the file")
        cache[key], changed = stamp, True
    if changed:
        with contextlib.suppress(Exception):
            atomic_write(cache_path, json.dumps(cache))


def check_io_names(spec: "ModelSpec", module: str, inputs: list[str], outputs: list[str]) -> None:
    """Check a loaded module's input/output names against ``model.json`` (any backend, at load).

    ``inputs``/``outputs``: the names the backend reports for the file. Raises
    :class:`ModelError` when they differ (a file swapped for another module's).
    """
    entry = spec.raw["files"][module]
    if sorted(inputs) != sorted(entry["inputs"]) or sorted(outputs) != sorted(entry["outputs"]):
        raise ModelError(f"{spec.path(module)} has inputs {inputs} and outputs {outputs}, but {module} needs "
                         f"{entry['inputs']} -> {entry['outputs']}: re-export the model with `sam2trt export`")


def load_model_spec(root: str | pathlib.Path, *, verify_files: bool = True) -> ModelSpec:
    """Read and check a model folder written by ``sam2trt export``.

    Checks ``model.json``'s structure and types (:func:`check_model_json`) and,
    with ``verify_files``, each module file's sha256 (:func:`check_module_files`).

    Raises:
        ModelError: the folder, ``model.json`` or a module file is missing, or
            ``model.json`` is unreadable, malformed or from another format
            version, or a module file is not the one ``model.json`` lists.
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
    check_model_json(raw, str(mj))
    if verify_files:
        check_module_files(root, raw)
    const, where = raw["constants"], str(mj)
    hidden, mem = raw["hidden_dim"], raw["mem_dim"]
    bias = const.get("mask_downsample_bias")
    if not _type_ok(bias, _NUM):
        raise ModelError(f"{where}: constants.mask_downsample_bias must be a number: re-export the model")
    return ModelSpec(
        root=root,
        raw=raw,
        maskmem_tpos_enc=_array(const, "maskmem_tpos_enc", (raw["num_maskmem"], mem), where),
        no_mem_embed=_array(const, "no_mem_embed", (hidden,), where),
        no_obj_ptr=_array(const, "no_obj_ptr", (hidden,), where, optional=True),
        mask_downsample_weight=_array(const, "mask_downsample_weight", (4, 4), where),
        mask_downsample_bias=float(bias),
    )
