"""Engine build: ONNX -> TensorRT engines (:mod:`~sam2trt.engine.build`) and the read side of ``engines.json`` (:mod:`~sam2trt.engine.compat`).

The mixed-precision fp16 ONNX they are built from is written by :mod:`sam2trt.fp16`.
"""
