"""sam2trt: SAM 2 / SAM 2.1 video object tracking from the shell.

Layout (each stage findable by name):

- ``sam2trt.export``   -- PyTorch (official ``sam2``) -> four ONNX modules + ``model.json``
- ``sam2trt.engine``   -- ONNX -> TensorRT engines (``build-engines``) and fp16 ONNX
- ``sam2trt.runtime``  -- one backend per module: ONNX Runtime, TensorRT
- ``sam2trt.tracker``  -- memory bank + per-frame step, pure NumPy, backend-agnostic
- ``sam2trt.video``    -- streaming frame sources and output writers
- ``sam2trt.cli``      -- the ``sam2trt`` command
"""

__version__ = "0.1.0"
