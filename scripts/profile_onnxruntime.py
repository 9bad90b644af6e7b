"""Where the CPU time goes: ONNX Runtime's profiler on each exported module.

Prints, per module, the kernel time per run by operator type and the share of
matrix multiplies, then the rate of a plain 2048^3 MatMul on the same settings
(this machine's practical fp32 matmul rate). With ``--official`` it also times
the official PyTorch image encoder (``SAM2Base.forward_image``, needs torch and
sam2) on the same input and thread count.

    python scripts/profile_onnxruntime.py --model engines/sam2.1_hiera_t_random --threads 2 [--official]

Inputs are random at the steady-state shapes, the ``opt`` shapes of the
TensorRT profiles: one object, a full memory bank (``num_maskmem`` frames,
``max_obj_ptrs_in_encoder`` object pointers), one prompt point. Shapes and
dtypes come from the module table (``sam2trt.model_spec.MODULE_IO``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from sam2trt.bench import machine_description
from sam2trt.engine.build import dimension_ranges
from sam2trt.export.exporter import build_model
from sam2trt.model_spec import MODULE_IO, MODULES, ModelSpec, load_model_spec
from sam2trt.runtime.onnxruntime_backend import session_options

MATMUL_OPS = {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger"}


def steady_feed(spec: ModelSpec, module: str) -> dict[str, np.ndarray]:
    """Random inputs of ``module`` (those its graph has for this model) at the steady-state sizes.

    Shapes are :data:`~sam2trt.model_spec.MODULE_IO`'s with each dynamic symbol
    at its ``opt`` value of :func:`sam2trt.engine.build.dimension_ranges`;
    values are uniform in [0, 1), int32 inputs are 0.
    """
    sizes = {sym: opt for sym, (_, opt, _) in dimension_ranges(spec, max_objects=1).items()}
    rng = np.random.default_rng(0)
    io = MODULE_IO[module]
    return {name: rng.random(shape).astype(io.dtype(name))
            for name, shape in spec.input_shapes(module, **sizes).items()}


def profile(spec: ModelSpec, module: str, threads: int, runs: int) -> tuple[float, collections.Counter]:
    """``(wall ms per run, kernel ms per run by op type)`` of one module."""
    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(str(spec.path(module)), so, providers=["CPUExecutionProvider"])
    feed = steady_feed(spec, module)
    sess.run(None, feed)  # warm-up (profiled too; subtracted below by counting runs)
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, feed)
    wall = (time.perf_counter() - t0) / runs * 1000
    by_op: collections.Counter = collections.Counter()
    with open(sess.end_profiling()) as f:
        for e in json.load(f):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"].get("op_name", "?")] += e["dur"] / 1000 / (runs + 1)
    return wall, by_op


def matmul_rate(threads: int, n: int = 2048) -> float:
    """GFLOP/s of one n x n x n fp32 MatMul in ONNX Runtime with the tracker's session options."""
    io = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm", io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    sess.run(None, {"a": a, "b": a})
    t0 = time.perf_counter()
    for _ in range(5):
        sess.run(None, {"a": a, "b": a})
    return 2 * n**3 / ((time.perf_counter() - t0) / 5) / 1e9


def official_image_encoder_ms(config: str, threads: int, runs: int) -> float:
    """Median ms of the official ``forward_image`` (random weights: speed does not depend on them)."""
    import torch

    torch.set_num_threads(threads)
    model = build_model(config, seed=0).eval()
    x = torch.randn(1, 3, model.image_size, model.image_size)
    times = []
    with torch.inference_mode():
        model.forward_image(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model.forward_image(x)
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder written by `sam2trt export`")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--official", action="store_true", help="also time the official PyTorch image encoder")
    args = p.parse_args()

    spec = load_model_spec(args.model)
    m = machine_description()
    print(f"machine: {m['cpu']}, {m['cores']} cores; ONNX Runtime, {args.threads} threads")
    for name in MODULES:
        wall, by_op = profile(spec, name, args.threads, args.runs)
        total = sum(by_op.values())
        mm = sum(v for k, v in by_op.items() if k in MATMUL_OPS)
        print(f"\n{name}: {wall:.0f} ms per run (kernels {total:.0f} ms; matrix multiplies {100 * mm / total:.0f}%)")
        for op, ms in by_op.most_common(6):
            print(f"  {op:24s} {ms:8.1f} ms")
    print(f"\nplain 2048^3 MatMul: {matmul_rate(args.threads):.0f} GFLOP/s")
    if args.official:
        print(f"official forward_image (PyTorch): {official_image_encoder_ms(spec.config, args.threads, args.runs):.0f} ms")


if __name__ == "__main__":
    main()
