"""CPU cost of frame preprocessing (RGB uint8 frame -> [1, 3, S, S] normalised float32), four ways.

- ``pil``: :func:`sam2trt.tracker.processing.preprocess_frame` (PIL bicubic resize,
  then NumPy normalisation) -- the official loader's path, what the pipeline runs today;
- ``cv2``: ``cv2.resize(..., INTER_CUBIC)`` + the same normalisation (OpenCV's cubic
  is a = -0.75 without antialiasing: *not* PIL's result, deviation printed);
- ``numpy``: :func:`~sam2trt.tracker.processing.preprocess_frame_matmul` (the
  preprocessing graph's arithmetic, dense float32 matrix products);
- ``ort``: the preprocessing graph (:mod:`sam2trt.preprocess_graph`) on ONNX Runtime's CPU provider.

Prints per variant the median wall and CPU milliseconds per frame (CPU =
``time.process_time``, all threads of this process) and the deviation from
``pil`` in 0..255 pixel units.

    python scripts/bench_preprocess.py [--frame tests/data/vtest16/00000.jpg] [--size 1024] [--threads 1] [--reps 20]

``--threads`` caps OpenCV, the BLAS behind NumPy and ONNX Runtime (set before
NumPy is imported). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame", default="tests/data/vtest16/00000.jpg")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import time

    import cv2
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from sam2trt.preprocess_graph import build_preprocess_model
    from sam2trt.tracker.processing import (
        frame_resize_weights, pil_resizes_vertically_first, preprocess_frame, preprocess_frame_matmul,
    )

    cv2.setNumThreads(args.threads)
    S = args.size
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    rgb = np.asarray(Image.open(args.frame).convert("RGB"))
    h, w = rgb.shape[:2]
    resize_h, resize_w = frame_resize_weights(h, w, S)
    mean32, std32 = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]

    def cv2_preprocess(frame):
        resized = cv2.resize(frame, (S, S), interpolation=cv2.INTER_CUBIC)
        img = (resized / 255.0).astype(np.float32).transpose(2, 0, 1)
        out = np.empty((1, 3, S, S), np.float32)
        np.subtract(img, mean32, out=out[0])
        np.divide(out[0], std32, out=out[0])
        return out

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    model = build_preprocess_model(S, mean, std, vertical_first=pil_resizes_vertically_first(h, w, S, S))
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"frame": rgb, "resize_h": resize_h, "resize_w": resize_w}

    variants = {
        "pil": lambda: preprocess_frame(rgb, S, mean, std),
        "pil resize only": lambda: Image.fromarray(rgb).resize((S, S)),
        "cv2": lambda: cv2_preprocess(rgb),
        "numpy": lambda: preprocess_frame_matmul(rgb, resize_h, resize_w, mean, std),
        "ort": lambda: session.run(["image"], feed)[0],
    }
    ref = variants["pil"]()
    units = std32 * 255
    print(f"frame {args.frame} {w}x{h} -> {S}x{S}, {args.threads} thread(s), median of {args.reps} runs")
    print(f"{'variant':16s} {'wall ms':>9s} {'cpu ms':>9s} {'max dev':>9s} {'mean dev':>9s}"
          "  (deviation from pil, 0..255 units)")
    for name, fn in variants.items():
        out = fn()
        walls, cpus = [], []
        for _ in range(args.reps):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        if isinstance(out, np.ndarray):
            d = np.abs(out - ref)[0] * units
            dev = f"{d.max():9.3f} {d.mean():9.4f}"
        else:
            dev = f"{'-':>9s} {'-':>9s}"
        print(f"{name:16s} {1000 * np.median(walls):9.2f} {1000 * np.median(cpus):9.2f} {dev}")


if __name__ == "__main__":
    main()
