"""Frame preprocessing as an ONNX graph, for the GPU: uint8 frame in, image encoder input out.

The graph reproduces :func:`sam2trt.tracker.processing.preprocess_frame`
(``sam2.utils.misc._load_img_as_tensor``: PIL's default bicubic resize to
``S x S``, ``/ 255``, ImageNet mean/std) with two matrix products whose weights
the host computes once per frame size
(:func:`sam2trt.tracker.processing.frame_resize_weights`)::

    frame [H, W, 3] uint8 --Cast--> float32 --Transpose--> X [3, H, W]
    T = P(X @ resize_w^T)            [3, H, S]   horizontal pass
    Y = P(resize_h @ T)              [3, S, S]   vertical pass
    image = Y * (1 / (255 std)) - mean / std, unsqueezed to [1, 3, S, S]

(or the vertical pass first, ``Y = P(P(resize_h @ X) @ resize_w^T)``, in the
``vertical_first`` variant: Pillow 13 resizes vertically first when the height
shrinks and the width does not, e.g. 720x1280 portrait frames; pick the
variant per frame size with
:func:`sam2trt.tracker.processing.pil_resizes_vertically_first`)

with PIL's end-of-pass rounding ``P(v) = clip(floor(v + 0.5), 0, 255)``
(``Add``, ``Floor``, ``Clip``): without it bicubic overshoot at sharp edges
leaves up to ~27 units of 0..255 between the graph and PIL; with it the graph
matches PIL except for 1-unit flips on a few pixels per million.

Only operators TensorRT's ONNX parser supports are used: Cast (first, on the
uint8 input: TensorRT takes uint8 only as a network input feeding a Cast),
Transpose, Unsqueeze, MatMul, Add, Floor, Clip, Mul, Sub. Build the engine in
FP32 with TF32 disabled for parity: TF32 keeps 10 mantissa bits of the weights
(~5e-4 relative), which moves sums across rounding ties more often.

This module is a leaf: numpy and (lazily) onnx only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

INPUT_FRAME = "frame"
INPUT_RESIZE_H = "resize_h"
INPUT_RESIZE_W = "resize_w"
OUTPUT_IMAGE = "image"
OPSET = 17
IR_VERSION = 8  # the oldest IR for opset 17: readable by older TensorRT / ONNX Runtime builds


def build_preprocess_model(image_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                           pil_rounding: bool = True, vertical_first: bool = False):
    """Build the preprocessing graph (see the module docstring) as an ``onnx.ModelProto``.

    Inputs:
        frame: ``[H, W, 3]`` uint8 RGB frame (``H``, ``W`` dynamic).
        resize_h: ``[S, H]`` float32 vertical resize weights.
        resize_w: ``[S, W]`` float32 horizontal resize weights
            (both from :func:`sam2trt.tracker.processing.frame_resize_weights`).
    Output:
        image: ``[1, 3, S, S]`` float32, normalised with ``image_mean`` / ``image_std``
        -- the ``image`` input of the image encoder.

    Args:
        image_size: ``S``, the model's input side in pixels (``model.json``
            ``image_size``, 1024).
        image_mean, image_std: 3 floats each (``model.json`` ``image_mean`` /
            ``image_std``, for pixel values scaled to 0..1).
        pil_rounding: apply PIL's per-pass ``clip(floor(v + 0.5), 0, 255)``
            (default); ``False`` leaves the plain products, for comparison only.
        vertical_first: run the vertical pass first (PIL's order for the frame
            sizes where :func:`~sam2trt.tracker.processing.pil_resizes_vertically_first`
            is true); the inputs and output are the same in both variants.
    Returns:
        A checked ``onnx.ModelProto`` (opset :data:`OPSET`, IR version :data:`IR_VERSION`).
    Raises:
        ValueError: ``image_size`` < 1, or mean/std not 3 values, or a std <= 0.
        ImportError: the ``onnx`` package is not installed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mean = np.asarray(image_mean, np.float64).reshape(-1)
    std = np.asarray(image_std, np.float64).reshape(-1)
    if int(image_size) < 1 or mean.shape != (3,) or std.shape != (3,) or not (std > 0).all():
        raise ValueError(f"need image_size >= 1 and 3 means / 3 positive stds, got {image_size}, {mean}, {std}")
    s = int(image_size)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    inits = [
        const("scale", (1.0 / (255.0 * std)).reshape(3, 1, 1)),
        const("offset", (mean / std).reshape(3, 1, 1)),
        numpy_helper.from_array(np.asarray([0], np.int64), "axis0"),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT_FRAME], ["frame_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["frame_f"], ["x"], perm=[2, 0, 1]),  # [3, H, W]
        helper.make_node("Transpose", [INPUT_RESIZE_W], ["resize_w_t"], perm=[1, 0]),  # [W, S]
        helper.make_node("Unsqueeze", [INPUT_RESIZE_H, "axis0"], ["resize_h_b"]),  # [1, S, H]: explicit batch broadcast
    ]
    if pil_rounding:
        inits += [const("half", 0.5), const("lo", 0.0), const("hi", 255.0)]

    def product(a, b, dst):
        """``dst = P(a @ b)`` (``a @ b`` without PIL rounding)."""
        if not pil_rounding:
            nodes.append(helper.make_node("MatMul", [a, b], [dst]))
            return
        nodes.extend([
            helper.make_node("MatMul", [a, b], [dst + "_sum"]),
            helper.make_node("Add", [dst + "_sum", "half"], [dst + "_half"]),
            helper.make_node("Floor", [dst + "_half"], [dst + "_floor"]),
            helper.make_node("Clip", [dst + "_floor", "lo", "hi"], [dst]),
        ])

    if vertical_first:
        product("resize_h_b", "x", "vert")  # [3, S, W]
        product("vert", "resize_w_t", "resized")  # [3, S, S]
    else:
        product("x", "resize_w_t", "horiz")  # [3, H, S]
        product("resize_h_b", "horiz", "resized")  # [3, S, S]
    nodes += [
        helper.make_node("Mul", ["resized", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "offset"], ["normalised"]),
        helper.make_node("Unsqueeze", ["normalised", "axis0"], [OUTPUT_IMAGE]),
    ]
    graph = helper.make_graph(
        nodes, "sam2trt_preprocess",
        inputs=[
            helper.make_tensor_value_info(INPUT_FRAME, TensorProto.UINT8, ["H", "W", 3]),
            helper.make_tensor_value_info(INPUT_RESIZE_H, TensorProto.FLOAT, [s, "H"]),
            helper.make_tensor_value_info(INPUT_RESIZE_W, TensorProto.FLOAT, [s, "W"]),
        ],
        outputs=[helper.make_tensor_value_info(OUTPUT_IMAGE, TensorProto.FLOAT, [1, 3, s, s])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sam2trt.preprocess_graph")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def build_preprocess_model_for(spec, vertical_first: bool = False):
    """:func:`build_preprocess_model` with ``image_size``, ``image_mean``, ``image_std`` of a model spec.

    ``spec``: a :class:`~sam2trt.model_spec.ModelSpec` (or anything with those attributes).
    """
    return build_preprocess_model(spec.image_size, spec.image_mean, spec.image_std, vertical_first=vertical_first)


def write_preprocess_model(path, image_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                           vertical_first: bool = False) -> str:
    """Build the graph and save it to ``path`` (a ``.onnx`` file); returns the path as a string.

    Raises ``OSError`` when the file cannot be written, plus what
    :func:`build_preprocess_model` raises.
    """
    import onnx

    onnx.save(build_preprocess_model(image_size, image_mean, image_std, vertical_first=vertical_first), str(path))
    return str(path)
