"""What TensorRT is fed: the mixed-precision fp16 ONNX and the optimization profiles.

The fp16 ONNX is checked structurally (fp16 weights and compute, fp32
LayerNorm/softmax/reductions, fp32 I/O) and tracked in ONNX Runtime against
the fp32 export on a real clip; the profiles are checked against the ONNX
inputs and the shapes the tracker feeds.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest

from sam2trt.engine.build import profile_shapes
from sam2trt.fp16 import FP32_OPS, fp16_paths, fp16_source_sha256, write_all_fp16
from sam2trt.errors import ModelError, UsageError
from sam2trt.fileio import sha256_file
from sam2trt.model_spec import MODULES, load_model_spec
from sam2trt.runtime import onnxruntime_backend
from tests.helpers import MIN_MEAN_IOU, link_model, mean_iou, run_cli, track_masks

# ONNX Runtime CPU needs ~5 s per frame for the image encoder plus ~1.5 s per memory
# frame in memory attention (2 cores); 6 frames keep the fp16 parity test near 1.5 min.
FP16_PARITY_FRAMES = 6


@pytest.fixture(scope="module")
def fp16_model_dir(tiny_model_dir, tmp_path_factory) -> pathlib.Path:
    """A symlinked copy of the tiny model with the four ``.fp16.onnx`` files written into it."""
    d = link_model(tiny_model_dir, tmp_path_factory.mktemp("fp16") / "model")
    t0 = time.perf_counter()
    write_all_fp16(load_model_spec(d), log=print)
    print(f"fp16 conversion of four modules: {time.perf_counter() - t0:.1f} s")
    return d


@pytest.fixture(scope="module")
def ort_fp32_masks(tiny_model_dir, vtest_frames):
    """``get(n) -> (masks, shapes)``: ONNX Runtime fp32 tracking of the first n frames, cached."""
    cache: dict[int, tuple] = {}

    def get(n: int):
        for k, (masks, shapes) in cache.items():
            if k >= n:
                return masks[:n], shapes
        spec = load_model_spec(tiny_model_dir)
        shapes: dict = {}
        masks, secs = track_masks(spec, onnxruntime_backend.make_runners(spec), "onnxruntime", vtest_frames, n, shapes)
        print(f"ONNX Runtime fp32: {n} frames in {secs:.1f} s ({n / secs:.2f} fps)")
        cache[n] = (masks, shapes)
        return masks, shapes

    return get


# ------------------------------------------------------------------------ fp16 ONNX
@pytest.mark.slow
def test_fp16_onnx_is_mixed_precision_with_fp32_islands(tiny_model_dir, fp16_model_dir):
    import onnx
    from onnx import TensorProto

    spec = load_model_spec(fp16_model_dir)
    for module, path in fp16_paths(spec).items():
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)  # strict type inference: every op is consistently typed
        ref = onnx.load(str(spec.path(module)), load_external_data=False)
        io = lambda g: [(v.name, v.type.tensor_type.elem_type) for v in g]  # noqa: E731
        assert io(model.graph.input) == io(ref.graph.input), module   # fp32 in (point_labels int32)
        assert io(model.graph.output) == io(ref.graph.output), module  # fp32 out
        assert fp16_source_sha256(path) == sha256_file(spec.path(module))

        # Weights: nearly all float parameters are stored as float16.
        sizes = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
        for t in model.graph.initializer:
            if t.data_type in sizes:
                sizes[t.data_type] += int(np.prod(t.dims, dtype=np.int64))
        frac = sizes[TensorProto.FLOAT16] / max(1, sum(sizes.values()))
        assert frac > 0.9, (module, sizes)

        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        types = {v.name: v.type.tensor_type.elem_type
                 for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
        types.update({t.name: t.data_type for t in model.graph.initializer})
        fp16_compute = [n for n in model.graph.node if n.op_type in ("MatMul", "Conv", "Gemm", "Add", "Mul")
                        and types.get(n.output[0]) == TensorProto.FLOAT16]
        assert fp16_compute, f"{module}: no fp16 compute ops"
        islands = []
        for node in model.graph.node:
            floats = [types[x] for x in list(node.input) + list(node.output)
                      if x and types.get(x) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
            if node.op_type in FP32_OPS and floats:  # (Range on int64 shapes has none)
                assert all(t == TensorProto.FLOAT for t in floats), (module, node.op_type, node.name)
                islands.append(node)
        ops = {n.op_type for n in islands}
        if module in ("image_encoder", "memory_attention", "mask_decoder"):
            assert {"LayerNormalization", "Softmax"} <= ops, (module, ops)
        if module == "memory_encoder":
            assert {"ReduceMean", "Pow", "Sqrt", "Resize"} <= ops, ops
    print("fp16 files: " + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in fp16_paths(spec).values()))


@pytest.mark.slow
def test_fp16_files_are_kept_when_current(fp16_model_dir):
    lines = []
    write_all_fp16(load_model_spec(fp16_model_dir), log=lines.append)
    assert lines == [f"{m}.fp16.onnx is up to date" for m in MODULES]
    proc = run_cli("convert-fp16", fp16_model_dir)  # the same through the CLI
    assert proc.returncode == 0 and proc.stderr.splitlines() == lines, proc.stderr
    proc = run_cli("convert-fp16", fp16_model_dir / "missing")
    assert proc.returncode == 3 and proc.stderr.startswith("error: model folder") and proc.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parity
def test_fp16_tracking_matches_fp32_in_onnxruntime(fp16_model_dir, vtest_frames, ort_fp32_masks):
    spec = load_model_spec(fp16_model_dir)
    ref, _ = ort_fp32_masks(FP16_PARITY_FRAMES)
    masks, secs = track_masks(spec, onnxruntime_backend.make_runners(spec, precision="fp16"), "onnxruntime",
                              vtest_frames, FP16_PARITY_FRAMES)
    print(f"ONNX Runtime fp16 (CPU, casts around ops without fp16 kernels): {len(masks)} frames in {secs:.1f} s")
    assert len(masks) == FP16_PARITY_FRAMES
    assert all(0 < m.sum() < m.size for m in ref), "reference masks are empty or full: the test would prove nothing"
    assert mean_iou(masks, ref, "fp16 vs fp32 (ONNX Runtime)") >= MIN_MEAN_IOU


@pytest.mark.slow
def test_onnxruntime_precision_errors(tiny_model_dir, model_copy):
    spec = load_model_spec(model_copy)
    with pytest.raises(ModelError) as e:
        onnxruntime_backend.make_runners(spec, precision="fp16")
    msg = str(e.value)
    assert "\n" not in msg and "image_encoder.fp16.onnx" in msg and f"sam2trt convert-fp16 {model_copy}" in msg
    with pytest.raises(UsageError):
        onnxruntime_backend.make_runners(spec, precision="bf16")
    runners = onnxruntime_backend.make_runners(spec)  # default unchanged: the fp32 export
    assert {n: r.path.name for n, r in runners.items()} == {m: f"{m}.onnx" for m in MODULES}


# --------------------------------------------------------------------------- profiles
@pytest.mark.slow
def test_profile_shapes_cover_the_onnx_inputs_and_the_tracker(tiny_model_dir, ort_fp32_masks):
    import onnx

    spec = load_model_spec(tiny_model_dir)
    prof = profile_shapes(spec, max_objects=4)
    ma, md, me = prof["memory_attention"], prof["mask_decoder"], prof["memory_encoder"]
    assert prof["image_encoder"] == {"image": ((1, 3, 1024, 1024),) * 3}
    assert ma["maskmem_features"] == ((1, 1, 64, 64, 64), (1, 7, 64, 64, 64), (4, 7, 64, 64, 64))
    assert ma["memory_tpos_enc"] == ((1, 64), (7, 64), (7, 64))
    assert ma["obj_ptrs"] == ((1, 1, 256), (1, 16, 256), (4, 16, 256))
    assert ma["obj_ptr_tpos"] == ((1,), (16,), (16,))
    assert ma["vision_feat"] == ((1, 256, 64, 64),) * 3
    assert md["point_coords"] == ((1, 1, 2), (1, 1, 2), (4, 16, 2))
    assert md["point_labels"] == ((1, 1), (1, 1), (4, 16))
    assert md["high_res_feat0"] == ((1, 32, 256, 256),) * 3 and md["high_res_feat1"] == ((1, 64, 128, 128),) * 3
    assert me["mask_logits"] == ((1, 1, 256, 256), (1, 1, 256, 256), (4, 1, 256, 256))

    for module in MODULES:
        graph = onnx.load(str(spec.path(module)), load_external_data=False).graph
        assert list(prof[module]) == [i.name for i in graph.input], module
        by_symbol: dict[str, set] = {}
        for inp in graph.input:
            lo, opt, hi = prof[module][inp.name]
            dims = inp.type.tensor_type.shape.dim
            assert len(lo) == len(opt) == len(hi) == len(dims), (module, inp.name)
            for k, d in enumerate(dims):
                if d.dim_param:
                    assert 1 <= lo[k] <= opt[k] <= hi[k], (module, inp.name, k)
                    by_symbol.setdefault(d.dim_param, set()).add((lo[k], opt[k], hi[k]))
                else:
                    assert lo[k] == opt[k] == hi[k] == d.dim_value, (module, inp.name, k)
        for symbol, ranges in by_symbol.items():  # one range per named dimension (num_objects, ...)
            assert len(ranges) == 1, (module, symbol, ranges)

    # Every shape the tracker fed (one object, up to FP16_PARITY_FRAMES frames) is inside the max_objects=1 profile.
    _, fed = ort_fp32_masks(FP16_PARITY_FRAMES)
    prof1 = profile_shapes(spec, max_objects=1)
    assert fed
    for (module, name), shapes in fed.items():
        lo, _, hi = prof1[module][name]
        for s in shapes:
            assert all(a <= b <= c for a, b, c in zip(lo, s, hi)), (module, name, s)
    with pytest.raises(UsageError):
        profile_shapes(spec, max_objects=0)

