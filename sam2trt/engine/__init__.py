"""Engine build: ONNX -> TensorRT engines, and the mixed-precision fp16 ONNX they are built from."""
