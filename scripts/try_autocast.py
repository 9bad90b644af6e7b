"""NVIDIA ModelOpt's AutoCast next to ``sam2trt/fp16.py`` on exported modules, in ONNX Runtime on the CPU.

The trial recorded in docs/decisions/fp16-converter.md.
ModelOpt is not a dependency of sam2trt; run this in a throwaway virtual
environment (ModelOpt requires torch and pins GPU packages, so install it
without its dependencies and add the pure-Python ones it imports)::

    python -m venv --system-site-packages /tmp/mo
    /tmp/mo/bin/pip install --no-deps nvidia-modelopt onnx-graphsurgeon onnxconverter-common onnxslim \\
        polygraphy pulp nvidia-ml-py safetensors ninja onnxscript onnx_ir lief cppimport
    /tmp/mo/bin/python scripts/try_autocast.py --model engines/sam2.1_hiera_t_random

For each module it converts the fp32 export both ways (AutoCast with the
project's :data:`sam2trt.fp16.FP32_OPS` as its op block list, inputs and
outputs kept float32), runs the three files on the same random steady-state
inputs, and prints the conversion time, run time, largest and mean difference
from fp32, the number of Cast nodes, and which normalization/softmax/resize
nodes compute in fp32.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import onnx
import onnxruntime as ort

from sam2trt.engine.build import dimension_ranges
from sam2trt.fp16 import FP32_OPS, convert_model_fp16
from sam2trt.model_spec import MODULE_IO, load_model_spec

ISLAND_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Resize", "Exp", "Sin", "Cos")


def run(model: str | onnx.ModelProto, feed: dict, threads: int) -> tuple[dict, float]:
    """``({output: array}, seconds)`` of one run on ONNX Runtime's CPU provider."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    outs = sess.run(None, feed)
    return dict(zip([o.name for o in sess.get_outputs()], outs)), time.perf_counter() - t0


def structure(model: onnx.ModelProto) -> dict:
    """Cast count, and per op type of :data:`ISLAND_OPS` how many nodes output float32 vs float16."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    fp32, fp16 = collections.Counter(), collections.Counter()
    for node in model.graph.node:
        if node.op_type in ISLAND_OPS:
            (fp32 if types.get(node.output[0]) == onnx.TensorProto.FLOAT else fp16)[node.op_type] += 1
    return {"casts": sum(n.op_type == "Cast" for n in model.graph.node), "fp32": dict(fp32), "fp16": dict(fp16)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder written by `sam2trt export`")
    p.add_argument("--modules", default="memory_attention,image_encoder")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    from modelopt.onnx.autocast import convert_to_mixed_precision  # the trial's subject, not a dependency

    spec = load_model_spec(args.model)
    sizes = {sym: opt for sym, (_, opt, _) in dimension_ranges(spec, max_objects=1).items()}
    rng = np.random.default_rng(0)
    for module in args.modules.split(","):
        io, src = MODULE_IO[module], str(spec.path(module))
        feed = {n: rng.standard_normal(s).astype(io.dtype(n)) for n, s in spec.input_shapes(module, **sizes).items()}
        ref, t32 = run(src, feed, args.threads)
        print(f"\n{module}: fp32 run {t32:.1f} s")
        t0 = time.perf_counter()
        candidates = {"sam2trt.fp16": (convert_model_fp16(onnx.load(src)), time.perf_counter() - t0)}
        t0 = time.perf_counter()
        try:
            ac = convert_to_mixed_precision(src, low_precision_type="fp16", op_types_to_exclude=sorted(FP32_OPS),
                                            keep_io_types=True)
            candidates["autocast"] = (ac, time.perf_counter() - t0)
        except Exception as e:  # what the trial is about: report, go on
            print(f"  autocast: conversion failed: {type(e).__name__}: {str(e)[:200]}")
        for label, (model, secs) in candidates.items():
            out, t = run(model, feed, args.threads)
            diff = {k: np.abs(out[k] - ref[k]) for k in ref}
            print(f"  {label}: converted in {secs:.1f} s, run {t:.1f} s, {structure(model)}")
            for k, d in diff.items():
                print(f"    {k}: max |diff| {d.max():.2e}, mean {d.mean():.2e} (fp32 range {np.abs(ref[k]).max():.2f})")


if __name__ == "__main__":
    main()
