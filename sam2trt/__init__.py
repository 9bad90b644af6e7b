"""sam2trt: SAM 2 / SAM 2.1 video object tracking from the shell.

Layout (each stage findable by name; docs/architecture.md "Packages"):

- ``sam2trt.export``   -- PyTorch (official ``sam2``) -> four ONNX modules + ``model.json``
- ``sam2trt.fp16``     -- the mixed-precision fp16 ONNX (``convert-fp16``; TensorRT builds from it)
- ``sam2trt.engine``   -- ONNX -> TensorRT engines (``build-engines``) and the ``engines.json`` checks
- ``sam2trt.runtime``  -- one backend per module (ONNX Runtime, TensorRT, OpenVINO) and backend selection
- ``sam2trt.tracker``  -- memory bank + per-frame step, pure NumPy, backend-agnostic
- ``sam2trt.video``    -- streaming frame sources and output writers
- ``sam2trt.platform`` -- what this machine has, and install hints (a leaf)
- ``sam2trt.model_spec`` -- ``model.json`` and ``MODULE_IO``, the one table of module inputs and outputs
- ``sam2trt.cli``      -- the ``sam2trt`` command, and the ``doctor`` report
"""

__version__ = "0.1.0"
