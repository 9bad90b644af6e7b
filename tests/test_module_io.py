"""The one module I/O table (``model_spec.MODULE_IO``) and what is derived from it.

Export's ``dynamic_axes`` and the TensorRT optimization profiles are compared
with the literal values they had before they were derived from the table
(written out below, as they were in ``export/exporter.py`` and
``engine/build.py``), for a SAM 2.1 tiny description and an odd-sized one. The
exported graphs' symbolic dimensions are checked against the table in the slow
test at the end (the session's tiny exports, SAM 2.1 and 2.0).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import numpy as np
import pytest

from sam2trt.engine.build import MAX_POINTS, profile_shapes
from sam2trt.model_spec import DYNAMIC_DIMS, MODULE_IO, MODULES, ModelSpec, load_model_spec, static_dims
from sam2trt.runtime.null_backend import host_only_spec

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"

# ------------------------------------------------------------------ the values before
_OBJ = "num_objects"
DYNAMIC_AXES_BEFORE = {
    "image_encoder": {},
    "memory_attention": {
        "maskmem_features": {0: _OBJ, 1: "num_memories"},
        "memory_tpos_enc": {0: "num_memories"},
        "obj_ptrs": {0: _OBJ, 1: "num_obj_ptrs"},
        "obj_ptr_tpos": {0: "num_obj_ptrs"},
        "pix_feat_with_mem": {0: _OBJ},
    },
    "mask_decoder": {
        "pix_feat": {0: _OBJ}, "point_coords": {0: _OBJ, 1: "num_points"},
        "point_labels": {0: _OBJ, 1: "num_points"}, "mask_input": {0: _OBJ}, "has_mask_input": {0: _OBJ},
        "low_res_masks": {0: _OBJ}, "iou_predictions": {0: _OBJ}, "obj_ptrs": {0: _OBJ},
        "object_score_logits": {0: _OBJ},
    },
    "memory_encoder": {
        "mask_logits": {0: _OBJ}, "object_score_logits": {0: _OBJ}, "binarize_mask": {0: _OBJ},
        "maskmem_features": {0: _OBJ},
    },
}


def profile_shapes_before(spec, max_objects):
    """``engine/build.py:profile_shapes`` as it was written out by hand."""
    S, H = spec.image_size, spec.feat_size
    C, Cm, L = spec.hidden_dim, spec.mem_dim, spec.low_res_size
    (c0, h0, w0), (c1, h1, w1) = spec.high_res_feat_shapes
    T, P, N, B = spec.num_maskmem, spec.max_obj_ptrs_in_encoder, MAX_POINTS, max_objects

    def static(*shape):
        return (tuple(shape),) * 3

    def dyn(lo, opt, hi):
        return tuple(lo), tuple(opt), tuple(hi)

    return {
        "image_encoder": {"image": static(1, 3, S, S)},
        "memory_attention": {
            "vision_feat": static(1, C, H, H),
            "maskmem_features": dyn((1, 1, Cm, H, H), (1, T, Cm, H, H), (B, T, Cm, H, H)),
            "memory_tpos_enc": dyn((1, Cm), (T, Cm), (T, Cm)),
            "obj_ptrs": dyn((1, 1, C), (1, P, C), (B, P, C)),
            "obj_ptr_tpos": dyn((1,), (P,), (P,)),
        },
        "mask_decoder": {
            "pix_feat": dyn((1, C, H, H), (1, C, H, H), (B, C, H, H)),
            "high_res_feat0": static(1, c0, h0, w0),
            "high_res_feat1": static(1, c1, h1, w1),
            "point_coords": dyn((1, 1, 2), (1, 1, 2), (B, N, 2)),
            "point_labels": dyn((1, 1), (1, 1), (B, N)),
            "mask_input": dyn((1, 1, L, L), (1, 1, L, L), (B, 1, L, L)),
            "has_mask_input": dyn((1,), (1,), (B,)),
        },
        "memory_encoder": {
            "vision_feat": static(1, C, H, H),
            "mask_logits": dyn((1, 1, L, L), (1, 1, L, L), (B, 1, L, L)),
            "object_score_logits": dyn((1, 1), (1, 1), (B, 1)),
            "binarize_mask": dyn((1,), (1,), (B,)),
        },
    }


def sample_specs() -> list[ModelSpec]:
    """SAM 2.1 tiny's description (no files needed), and the same with every size changed."""
    tiny = host_only_spec()
    odd = dict(tiny.raw, image_size=512, feat_size=32, hidden_dim=128, mem_dim=32, num_maskmem=5,
               max_obj_ptrs_in_encoder=9, high_res_feat_shapes=[[16, 128, 128], [24, 64, 64]])
    return [tiny, dataclasses.replace(tiny, raw=odd)]


# ------------------------------------------------------------------ derived = before
def test_dynamic_axes_are_those_written_out_before():
    assert {m: MODULE_IO[m].dynamic_axes() for m in MODULES} == DYNAMIC_AXES_BEFORE


@pytest.mark.parametrize("max_objects", [1, 3, 8])
def test_profiles_are_those_written_out_before(max_objects):
    for spec in sample_specs():
        got, want = profile_shapes(spec, max_objects), profile_shapes_before(spec, max_objects)
        assert got == want
        assert [list(v) for v in got.values()] == [list(v) for v in want.values()]  # same order


def test_table_is_consistent():
    """Every tensor named once per module, every symbol known, int32 only where it is an input."""
    statics = set(static_dims(host_only_spec().raw))
    for module, io in MODULE_IO.items():
        assert not set(io.inputs) & set(io.outputs), module
        assert set(io.conditional) <= set(io.inputs) and io.int32 <= set(io.inputs), module
        for name in io.inputs + io.outputs:
            for d in io.symbols(name):
                assert isinstance(d, int) or d in DYNAMIC_DIMS or d in statics, (module, name, d)


def test_input_shapes_follow_the_switches():
    spec = host_only_spec()
    shapes = spec.input_shapes("memory_attention", B=2, T=3, P=4)
    assert shapes == {"vision_feat": (1, 256, 64, 64), "maskmem_features": (2, 3, 64, 64, 64),
                      "memory_tpos_enc": (3, 64), "obj_ptrs": (2, 4, 256), "obj_ptr_tpos": (4,)}
    sam20 = dataclasses.replace(spec, raw=dict(spec.raw, add_tpos_enc_to_obj_ptrs=False))
    assert "obj_ptr_tpos" not in sam20.input_shapes("memory_attention", B=1, T=1, P=1)
    with pytest.raises(KeyError):
        spec.input_shapes("mask_decoder", B=1)  # N missing
    assert MODULE_IO["mask_decoder"].dtype("point_labels") == np.int32
    assert MODULE_IO["mask_decoder"].dtype("point_coords") == np.float32


def test_profiling_script_feeds_the_table_at_the_steady_state():
    """``scripts/profile_onnxruntime.py`` feeds each module its table shapes at the profiles' opt sizes."""
    loaded = importlib.util.spec_from_file_location("profile_onnxruntime", SCRIPTS / "profile_onnxruntime.py")
    script = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(script)
    spec = host_only_spec()
    opt = {m: {n: s[1] for n, s in p.items()} for m, p in profile_shapes(spec, 1).items()}
    for module in MODULES:
        feed = script.steady_feed(spec, module)
        assert {n: a.shape for n, a in feed.items()} == opt[module], module
        assert {n: a.dtype for n, a in feed.items()} == {n: MODULE_IO[module].dtype(n) for n in feed}


# ------------------------------------------------------------------ the exported graphs
@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_model_dir", "sam20_model_dir"])
def test_exported_graphs_have_the_tables_symbolic_dims(model, request):
    """Inputs: exactly the table's names, dtypes and dimensions (named dynamic ones, static values).
    Outputs: the table's dynamic dimension names; torch's exporter names some static output sizes it
    does not infer (``Reshapelow_res_masks_dim_1``), so those are checked by running the graph."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    spec = load_model_spec(request.getfixturevalue(model))
    statics = static_dims(spec.raw)
    sizes = {"B": 2, "T": 3, "P": 5, "N": 4}  # none equal to another or to a traced size (1, 2, 3, 2)
    for module in MODULES:
        io = MODULE_IO[module]
        graph = onnx.load(str(spec.path(module)), load_external_data=False).graph
        assert [i.name for i in graph.input] == list(spec.input_names(module)), module
        assert [o.name for o in graph.output] == list(io.outputs), module
        inputs = {i.name for i in graph.input}
        for value in list(graph.input) + list(graph.output):
            dims = value.type.tensor_type.shape.dim
            want = io.symbols(value.name)
            assert len(dims) == len(want), (module, value.name)
            for k, (d, w) in enumerate(zip(dims, want)):
                if w in DYNAMIC_DIMS:
                    assert d.dim_param == DYNAMIC_DIMS[w], (module, value.name, k, d)
                elif value.name in inputs or not d.dim_param:
                    assert d.dim_value == (w if isinstance(w, int) else statics[w]), (module, value.name, k, d)
                else:
                    assert d.dim_param not in DYNAMIC_DIMS.values(), (module, value.name, k, d)
            elem = value.type.tensor_type.elem_type
            assert elem == (onnx.TensorProto.INT32 if value.name in io.int32 else onnx.TensorProto.FLOAT), value.name
        sess = ort.InferenceSession(str(spec.path(module)), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {n: rng.random(s).astype(io.dtype(n)) for n, s in spec.input_shapes(module, **sizes).items()}
        outs = dict(zip(io.outputs, sess.run(list(io.outputs), feed)))
        dims = {**statics, **sizes}
        assert {n: o.shape for n, o in outs.items()} == {n: io.shape(n, dims) for n in io.outputs}, module
