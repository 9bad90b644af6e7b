"""Export: official SAM 2 PyTorch model -> four ONNX modules + ``model.json``.

Importing this package needs torch and ``sam2``; the rest of sam2trt does not.
"""
