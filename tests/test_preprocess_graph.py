"""PIL-exact resize weights and the preprocessing ONNX graph (run on ONNX Runtime).

Deviations are measured against :func:`preprocess_frame` (PIL, the official
loader's path) in units of 0..255 pixel values. Measured on this machine
(ORT 1.31 CPU, Pillow 13.0), frames resized to 1024 x 1024:

=====================  ======================  ==============================
frame                  graph (PIL rounding)    plain products (no rounding)
=====================  ======================  ==============================
vtest 768x576 (x16)    max 1, <= 6 px of 3.1M  max 25.8..29.0, mean 0.30
1920x1080 (upscaled)   max 1, 14 px            max 10.5, mean 0.27
511x383 (odd crop)     max 1, 41 px            max 23.8, mean 0.29
1283x1151 (odd)        max 1, 14 px            max 6.3, mean 0.27
720x1280 (portrait)    max 0 (vertical first)  max 5.4, mean 0.28
=====================  ======================  ==============================

The portrait frame through the horizontal-first variant (Pillow 13 resizes it
vertically first): max 3 units, mean 0.04, 128k pixels off.

The graph's mean deviation is <= 2e-5 units, mostly float32 noise of the
normalisation; its 1-unit flips are float32 sums landing on the other side of
a rounding tie. Hence the bounds below: max <= 1 unit, mean <= 1e-4 units.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam2trt.preprocess_graph import build_preprocess_model
from sam2trt.tracker.processing import (
    frame_resize_weights, pil_resize_weights, pil_resizes_vertically_first, preprocess_frame, preprocess_frame_matmul,
)
from tests.helpers import BOXES, DATA, PARITY_FRAMES, iou_table, run_official, session_runners

S = 1024
MEAN = (0.485, 0.456, 0.406)  # model.json image_mean / image_std (the official loader's)
STD = (0.229, 0.224, 0.225)
MAX_UNITS = 1.0 + 1e-3  # measured: exactly 1 (one rounding flip); the 1e-3 is float32 normalisation noise
MEAN_UNITS = 1e-4  # measured: <= 2e-5


def vtest(i: int) -> np.ndarray:
    return np.asarray(Image.open(DATA / "vtest16" / f"{i:05d}.jpg").convert("RGB"))


def frames_of_many_sizes() -> dict[str, np.ndarray]:
    """Real frames at 768x576, upscaled beyond 1024 (downscaling path), and at odd sizes."""
    f0 = vtest(0)
    return {
        "vtest0 768x576": f0,
        "vtest9 768x576": vtest(9),
        "1920x1080": np.asarray(Image.fromarray(f0).resize((1920, 1080), Image.BICUBIC)),
        "odd crop 511x383": np.ascontiguousarray(f0[7:390, 13:524]),
        "odd 1283x1151": np.asarray(Image.fromarray(f0).resize((1283, 1151), Image.BILINEAR)),
        "portrait 720x1280": np.asarray(Image.fromarray(f0[:, 100:460]).resize((720, 1280), Image.BILINEAR)),
    }


def units(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``|a - ref|`` of two ``[1, 3, S, S]`` normalised images, in 0..255 pixel units."""
    return np.abs(a - ref)[0] * (np.asarray(STD, np.float32)[:, None, None] * 255)


@pytest.fixture(scope="module")
def sessions():
    """ONNX Runtime sessions of the graph by ``(pil_rounding, vertical_first)``."""
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return {(r, v): ort.InferenceSession(
        build_preprocess_model(S, MEAN, STD, pil_rounding=r, vertical_first=v).SerializeToString(), so,
        providers=["CPUExecutionProvider"]) for r in (True, False) for v in (True, False)}


def run_graph(sessions, rgb: np.ndarray, pil_rounding: bool = True) -> np.ndarray:
    """The graph variant PIL's pass order asks for, on ``rgb``; returns ``[1, 3, S, S]``."""
    h, w = rgb.shape[:2]
    session = sessions[pil_rounding, pil_resizes_vertically_first(h, w, S, S)]
    resize_h, resize_w = frame_resize_weights(h, w, S)
    return session.run(["image"], {"frame": rgb, "resize_h": resize_h, "resize_w": resize_w})[0]


# -- resize weights ------------------------------------------------------------------------------

def pil_fixed_point_emulation(rgb: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PIL's 8-bit two-pass resampling (Resample.c) emulated exactly with our coefficients.

    Coefficients as 22-bit integers; each pass adds ``2**21``, shifts right by 22
    (floor) and clips to 0..255; the passes in the order
    :func:`pil_resizes_vertically_first` says. Sums of products of integers stay
    below 2**53, so float64 matrix products are exact.
    """
    one = 2.0 ** 22
    wy = pil_resize_weights(rgb.shape[0], out_h, np.float64, fixed_point=True) * one
    wx = pil_resize_weights(rgb.shape[1], out_w, np.float64, fixed_point=True) * one
    assert np.array_equal(wy, np.round(wy)) and np.array_equal(wx, np.round(wx))

    def rounded(v):
        return np.clip(np.floor((v + one / 2) / one), 0, 255)

    vertical_first = pil_resizes_vertically_first(*rgb.shape[:2], out_h, out_w)
    out = []
    for c in range(3):
        x = rgb[:, :, c].astype(np.float64)
        out.append(rounded(rounded(wy @ x) @ wx.T) if vertical_first else rounded(wy @ rounded(x @ wx.T)))
    return np.stack(out, -1).astype(np.uint8)


@pytest.mark.parametrize("in_hw, out_hw", [
    ((576, 768), (1024, 1024)),  # vtest -> model size: upscale
    ((576, 768), (211, 300)),  # downscale (antialiased: stretched kernel)
    ((383, 511), (97, 1024)),  # odd sizes, height down and width up: vertically first on Pillow 13
    ((383, 511), (1024, 97)),  # width down and height up: horizontally first
    ((1280, 720), (1024, 1024)),  # portrait: vertically first on Pillow 13
    ((9, 5), (1024, 1024)),  # tiny input: taps clipped at both borders
])
def test_pil_resize_weights_reproduce_pil_bit_exactly(in_hw, out_hw):
    rgb = vtest(3)
    rgb = np.asarray(Image.fromarray(rgb).resize(in_hw[::-1], Image.BILINEAR)) if rgb.shape[:2] != in_hw else rgb
    ref = np.asarray(Image.fromarray(rgb).resize(out_hw[::-1]))  # PIL's default filter, as the official loader
    assert np.array_equal(pil_fixed_point_emulation(rgb, *out_hw), ref)


@pytest.mark.parametrize("n_in, n_out", [(576, 1024), (1920, 1024), (7, 3), (1, 4), (1024, 1024)])
def test_pil_resize_weights_shape_rows_and_taps(n_in, n_out):
    w = pil_resize_weights(n_in, n_out)
    assert w.shape == (n_out, n_in) and w.dtype == np.float32
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    scale = max(n_in / n_out, 1.0)
    assert ((w != 0).sum(1) <= 2 * int(np.ceil(2 * scale)) + 1).all()
    if n_in == n_out:
        np.testing.assert_array_equal(w, np.eye(n_in, dtype=np.float32))


def test_pil_resize_weights_reject_empty_sizes():
    with pytest.raises(ValueError, match="positive"):
        pil_resize_weights(0, 1024)


def test_frame_resize_weights_are_cached_and_read_only():
    a = frame_resize_weights(576, 768, S)
    assert a is frame_resize_weights(576, 768, S)
    assert a[0].shape == (S, 576) and a[1].shape == (S, 768)
    with pytest.raises(ValueError):
        a[0][0, 0] = 1.0


# -- the graph -----------------------------------------------------------------------------------

def test_graph_interface_and_operators():
    m = build_preprocess_model(S, MEAN, STD)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    ins = {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in m.graph.input}
    # element types: 2 = uint8, 1 = float
    assert ins == {"frame": (2, ["H", "W", 3]), "resize_h": (1, [S, "H"]), "resize_w": (1, [S, "W"])}
    assert [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in m.graph.output] == [("image", 1, [1, 3, S, S])]
    ops = [n.op_type for n in m.graph.node]
    assert ops[0] == "Cast" and m.graph.node[0].input == ["frame"]  # TensorRT: uint8 only into a Cast
    assert set(ops) <= {"Cast", "Transpose", "Unsqueeze", "MatMul", "Add", "Floor", "Clip", "Mul", "Sub"}


def test_pass_order_variant_matters_for_portrait_frames(sessions):
    """A portrait frame through the wrong pass order is off by more than the rounding bound."""
    rgb = frames_of_many_sizes()["portrait 720x1280"]
    ref = preprocess_frame(rgb, S, MEAN, STD)
    wrong = sessions[True, not pil_resizes_vertically_first(1280, 720, S, S)]
    resize_h, resize_w = frame_resize_weights(1280, 720, S)
    out = wrong.run(["image"], {"frame": rgb, "resize_h": resize_h, "resize_w": resize_w})[0]
    assert units(out, ref).max() >= 1.0 and units(out, ref).mean() > 10 * MEAN_UNITS


def test_graph_rejects_bad_normalisation():
    with pytest.raises(ValueError, match="positive stds"):
        build_preprocess_model(S, MEAN, (0.2, 0.0, 0.2))


def test_graph_matches_pil_preprocessing(sessions):
    for name, rgb in frames_of_many_sizes().items():
        ref = preprocess_frame(rgb, S, MEAN, STD)
        out = run_graph(sessions, rgb)
        assert out.shape == (1, 3, S, S) and out.dtype == np.float32
        d = units(out, ref)
        print(f"{name}: max {d.max():.4f} mean {d.mean():.2e} units, {(d > 0.5).sum()} px off by one")
        assert d.max() <= MAX_UNITS, name
        assert d.mean() <= MEAN_UNITS, name
        # NumPy reference of the same arithmetic: same result up to float32 summation order
        np.testing.assert_allclose(preprocess_frame_matmul(rgb, *frame_resize_weights(*rgb.shape[:2], S), MEAN, STD),
                                   out, atol=1.01 / 255 / min(STD))


def test_graph_without_pil_rounding_is_far_off(sessions):
    """Why the graph rounds and clips after each pass: bicubic overshoot at edges (measured max ~27 units)."""
    rgb = vtest(0)
    d = units(run_graph(sessions, rgb, pil_rounding=False), preprocess_frame(rgb, S, MEAN, STD))
    assert d.max() > 5.0


def test_preprocess_frame_matmul_checks_shapes():
    rgb = vtest(0)
    with pytest.raises(ValueError, match="does not fit"):
        preprocess_frame_matmul(rgb, *frame_resize_weights(768, 576, S), MEAN, STD)


@pytest.mark.slow
@pytest.mark.parity
def test_parity_with_graph_preprocessing(tiny_model_dir, official_predictor, vtest_frames, sessions, monkeypatch):
    """The parity case of one object over 12 vtest frames (a full, sliding memory bank), tracked with images
    from the graph (on ORT), vs the official predictor (PIL): the official run is the one test_parity uses."""
    from sam2trt.model_spec import load_model_spec
    from sam2trt.preprocess_graph import build_preprocess_model_for
    from sam2trt.tracker import FrameStepper, ObjectPrompt, track_frames
    from sam2trt.tracker.processing import upsample_logits
    from sam2trt.video import open_frames

    spec = load_model_spec(tiny_model_dir)
    assert tuple(spec.image_mean) == MEAN and tuple(spec.image_std) == STD and spec.image_size == S
    build_preprocess_model_for(spec)  # the spec's own values build the graph the sessions run
    n, boxes = PARITY_FRAMES, BOXES[:1]
    ref = run_official(official_predictor, vtest_frames, boxes, 0, n, False, monkeypatch)
    prompts = [ObjectPrompt(i + 1, 0, box=(x, y, x + w, y + h)) for i, (x, y, w, h) in enumerate(boxes)]
    ours = {}
    spec, runners = session_runners(tiny_model_dir)
    with open_frames(vtest_frames) as source:
        stepper = FrameStepper(spec, runners, fill_hole_area=0)
        frames = ((idx, rgb, run_graph(sessions, rgb)) for idx, rgb in source)
        for fo in track_frames(stepper, frames, prompts, num_frames=source.info.num_frames, max_frames=n):
            ours[fo.frame_idx] = upsample_logits(fo.mask_logits, source.info.height, source.info.width)
    assert len(ours) == n
    for k in range(len(boxes)):
        iou_table({f: v[k] for f, v in ours.items()}, {f: v[k] for f, v in ref.items()}, f"object {k + 1}")
