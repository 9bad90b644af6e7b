"""Where the CPU time goes: ONNX Runtime's profiler on each exported module.

Prints, per module, the kernel time per run by operator type and the share of
matrix multiplies, then the rate of a plain 2048^3 MatMul on the same settings
(this machine's practical fp32 matmul rate). With ``--official`` it also times
the official PyTorch image encoder (``SAM2Base.forward_image``, needs torch and
sam2) on the same input and thread count.

    python scripts/profile_onnxruntime.py --model engines/sam2.1_hiera_t_random --threads 2 [--official]

Inputs are random at the steady-state shapes: one object, a full memory bank
(``num_maskmem`` frames, 16 object pointers), one prompt point.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np

MATMUL_OPS = {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger"}


def steady_feed(session, num_maskmem: int) -> dict[str, np.ndarray]:
    """Random inputs for ``session`` with symbolic dimensions at the steady-state sizes."""
    sizes = {"num_objects": 1, "num_memories": num_maskmem, "num_obj_ptrs": 16, "num_points": 1}
    rng = np.random.default_rng(0)
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else sizes.get(d, 1) for d in i.shape]
        dtype = np.int32 if "int32" in i.type else np.float32
        feed[i.name] = rng.random(shape).astype(dtype)
    return feed


def profile(path: str, threads: int, num_maskmem: int, runs: int) -> tuple[float, collections.Counter]:
    """``(wall ms per run, kernel ms per run by op type)`` of one module."""
    import onnxruntime as ort

    from sam2trt.runtime.onnxruntime_backend import session_options

    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = steady_feed(sess, num_maskmem)
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
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from sam2trt.runtime.onnxruntime_backend import session_options

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

    from sam2trt.export.exporter import build_model

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

    from sam2trt.bench import machine_description
    from sam2trt.model_spec import MODULES, load_model_spec

    spec = load_model_spec(args.model)
    m = machine_description()
    print(f"machine: {m['cpu']}, {m['cores']} cores; ONNX Runtime, {args.threads} threads")
    for name in MODULES:
        wall, by_op = profile(str(spec.path(name)), args.threads, spec.num_maskmem, args.runs)
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
