"""The null backend and the host-only model spec: no torch, no ONNX files, real host work."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from sam2trt.errors import ModelError
from sam2trt.model_spec import MODULES, load_model_spec
from sam2trt.pipeline import TrackJob, run_track
from sam2trt.runtime.base import ModuleRunners
from sam2trt.runtime.null_backend import (
    CODE_SIZE, LOGIT, host_only_model_description, host_only_spec, make_runners, open_null_runners,
    write_host_only_model,
)
from sam2trt.tracker import ObjectPrompt
from tests.helpers import CONFIG, DATA

MODULES_PY = pathlib.Path(__file__).parents[1] / "sam2trt" / "export" / "modules.py"


@pytest.fixture()
def spec(tmp_path):
    return host_only_spec(write_host_only_model(tmp_path / "model"))


class Recorder:
    """Wraps a runner; records ``(feed shapes, output shapes and dtypes)`` of every call."""

    def __init__(self, runner):
        self.runner, self.name, self.calls = runner, runner.name, []

    def infer(self, feed, keep=()):
        out = self.runner.infer(feed, keep=keep)
        shapes = {k: (len(v),) if isinstance(v, list) else np.shape(v) for k, v in feed.items()}
        self.calls.append((shapes, {k: (v.shape, v.dtype) for k, v in out.items()}))
        return out


@pytest.mark.slow
def test_description_matches_the_exporter():
    """Same keys, switches and constant shapes as a real ``model_description`` of sam2.1_hiera_t."""
    pytest.importorskip("torch")
    from sam2trt.export.exporter import build_model, model_description

    real = model_description(build_model(CONFIG, seed=0), CONFIG)
    ours = host_only_model_description(CONFIG)
    assert set(ours) - {"source", "files"} == set(real)
    for key in real:
        if key == "constants":
            assert set(ours[key]) == set(real[key])
            for name in real[key]:
                assert np.shape(ours[key][name]) == np.shape(real[key][name]), name
        else:
            assert ours[key] == real[key], key


def test_host_only_spec_from_folder_and_in_memory(tmp_path):
    root = write_host_only_model(tmp_path / "m")
    assert [p.name for p in root.iterdir()] == ["model.json"]
    with pytest.raises(ModelError, match="missing|files.image_encoder must hold"):  # the real loader wants the ONNX files
        load_model_spec(root)
    for spec in (host_only_spec(root), host_only_spec()):
        assert spec.image_size == 1024 and spec.low_res_size == 256 and spec.num_maskmem == 7
        assert spec.maskmem_tpos_enc.shape == (7, 64) and spec.maskmem_tpos_enc.dtype == np.float32
        assert spec.no_mem_embed.shape == (256,) and spec.no_obj_ptr.shape == (256,)
        assert spec.mask_downsample_weight.shape == (4, 4)
    with pytest.raises(ModelError, match="cannot read"):
        host_only_spec(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no host-only description"):
        host_only_model_description("sam2_hiera_l")


def test_runner_names_match_the_exported_modules():
    """Names equal the module table the exporter checks every graph against (``model_spec.MODULE_IO``)."""
    from sam2trt.model_spec import MODULE_IO

    spec = host_only_spec()
    runners = make_runners(spec)
    assert set(runners) == set(MODULES)
    for name, runner in runners.items():
        assert tuple(runner.input_names) == spec.input_names(name) == MODULE_IO[name].inputs
        assert tuple(runner.output_names) == MODULE_IO[name].outputs


def test_feed_is_checked_like_a_session():
    runners = make_runners(host_only_spec())
    dec = runners["mask_decoder"]
    feats = runners["image_encoder"].infer({"image": np.zeros((1, 3, 1024, 1024), np.float32)})
    feed = {"pix_feat": np.zeros((2, 256, 64, 64), np.float32), "high_res_feat0": feats["high_res_feat0"],
            "high_res_feat1": feats["high_res_feat1"], "point_coords": np.zeros((2, 1, 2), np.float32),
            "point_labels": -np.ones((2, 1), np.int32), "mask_input": np.zeros((2, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(2, np.float32)}
    out = dec.infer(feed)
    assert out["low_res_masks"].shape == (2, 4, 256, 256) and (out["object_score_logits"] > 0).all()
    with pytest.raises(ValueError, match="point_labels is float32"):
        dec.infer({**feed, "point_labels": np.zeros((2, 1), np.float32)})
    with pytest.raises(ValueError, match="has_mask_input has shape"):  # B = 2 from pix_feat, 3 here
        dec.infer({**feed, "has_mask_input": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="feed has inputs"):
        dec.infer({k: v for k, v in feed.items() if k != "mask_input"})
    with pytest.raises(ValueError, match="image has shape"):
        runners["image_encoder"].infer({"image": np.zeros((1, 3, 512, 512), np.float32)})
    with pytest.raises(ValueError):  # read-only: a caller cannot corrupt the shared features
        feats["vision_feat"][0, 0, 0, 0] = 1.0


def test_short_track_through_the_pipeline(spec, tmp_path):
    """A real track (reader, tracker core, all four writers) on null runners: shapes, a blob that follows the prompt."""
    frames_dir = DATA / "vtest16"
    n = 8
    box = (250, 215, 286, 312)  # x0, y0, x1, y1 on frame 0
    prompts = [ObjectPrompt(1, 0, box=box), ObjectPrompt(2, 2, points=((650, 280, 1),))]
    job = TrackJob(video=str(frames_dir), prompts=prompts, max_frames=n, out=str(tmp_path / "o.mp4"),
                   masks_dir=str(tmp_path / "masks"), json=str(tmp_path / "t.jsonl"), coco=str(tmp_path / "c.json"))
    with open_null_runners(spec) as active:
        assert active.backend == "null"
        rec = {m: Recorder(getattr(active, m)) for m in MODULES}
        summary = run_track(job, spec, ModuleRunners(**rec, backend=active.backend))
    assert summary.frames == n and set(summary.outputs) == {"out", "masks_dir", "json", "coco"}

    (enc_calls, att_calls, dec_calls, mem_calls) = (rec[m].calls for m in MODULES)
    assert len(enc_calls) == n
    for _, out in enc_calls:
        assert out == {"high_res_feat0": ((1, 32, 256, 256), np.float32),
                       "high_res_feat1": ((1, 64, 128, 128), np.float32),
                       "vision_feat": ((1, 256, 64, 64), np.float32)}
    for feed, out in att_calls:
        assert out["pix_feat_with_mem"] == ((feed["obj_ptrs"][0], 256, 64, 64), np.float32)
    batch_sizes = []
    for feed, out in dec_calls:
        b = feed["point_coords"][0]
        batch_sizes.append(b)
        assert out == {"low_res_masks": ((b, 4, 256, 256), np.float32), "iou_predictions": ((b, 4), np.float32),
                       "obj_ptrs": ((b, 4, 256), np.float32), "object_score_logits": ((b, 1), np.float32)}
    assert 2 in batch_sizes  # both objects decoded together once the second one is tracked
    for feed, out in mem_calls:
        assert out["maskmem_features"] == ((feed["mask_logits"][0], 64, 64, 64), np.float32)

    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [d["frame"] for d in lines] == list(range(n))
    first = lines[0]["objects"][0]
    x, y, w, h = first["box"]
    assert first["present"] and first["score"] == LOGIT
    assert abs(x - box[0]) <= 6 and abs(y - box[1]) <= 6 and abs(x + w - box[2]) <= 6 and abs(y + h - box[3]) <= 6
    xs = [d["objects"][0]["box"][0] for d in lines]
    assert all(b > a for a, b in zip(xs, xs[1:]))  # the blob moves sideways, frame after frame
    assert [o["id"] for o in lines[2]["objects"]] == [1, 2] and lines[2]["objects"][1]["area"] > 0
    png = np.asarray(Image.open(tmp_path / "masks" / "00005.png"))
    assert png.shape == (576, 768) and set(np.unique(png)) == {0, 1, 2}
    coco = json.loads((tmp_path / "c.json").read_text())
    assert len(coco["annotations"]) == n + (n - 2)
    assert (tmp_path / "o.mp4").stat().st_size > 0


def test_mask_prompt_and_pointer_state(spec):
    """A mask prompt gives a blob over the mask's bounding box; its state rides in the object pointers."""
    from sam2trt.tracker import FrameStepper, track_frames

    mask = np.zeros((576, 768), bool)
    mask[100:200, 300:420] = True
    frames = [(i, np.zeros((576, 768, 3), np.uint8)) for i in range(3)]
    banks = {}
    with open_null_runners(spec) as runners:
        outs = list(track_frames(FrameStepper(spec, runners), frames, [ObjectPrompt(3, 0, mask=mask)],
                                 num_frames=3, banks=banks))
    ptr = banks[3].non_cond[2].obj_ptr
    cx, cy, rx, ry, vx, valid = ptr[:CODE_SIZE]
    # mask box in low-res pixels: x 100..140, y 44.4..88.9 (1024/768 * 256/1024 = 1/3 horizontally)
    assert valid == 1.0 and vx == 1.0
    assert abs(cx - (120 + 2)) <= 1.5 and abs(cy - 66.7) <= 1.5  # moved 2 frames at 1 px/frame
    assert abs(rx - 20) <= 1.5 and abs(ry - 22.2) <= 1.5
    assert (outs[2].mask_logits[0] > 0).sum() > 0


class _Opened:
    """A runner stand-in that records its ``__enter__``/``__exit__`` in ``log``; fails to open when ``fail``."""

    def __init__(self, name, log, fail=False):
        self.name, self.log, self.fail = name, log, fail

    def __enter__(self):
        if self.fail:
            raise ModelError(f"{self.name} cannot open")
        self.log.append(f"open {self.name}")
        return self

    def __exit__(self, *exc):
        self.log.append(f"close {self.name}")


def test_module_runners_is_a_context_manager():
    """Opens the four runners in module order, then preprocess; closes them in reverse, also on a failed open."""
    log = []
    runners = ModuleRunners(**{m: _Opened(m, log) for m in MODULES}, preprocess=_Opened("preprocess", log),
                            backend="test")
    with runners as active:
        assert active is runners and log == [f"open {m}" for m in (*MODULES, "preprocess")]
    assert log[5:] == [f"close {m}" for m in reversed((*MODULES, "preprocess"))]

    log.clear()
    failing = {m: _Opened(m, log, fail=m == "mask_decoder") for m in MODULES}
    with pytest.raises(ModelError, match="mask_decoder cannot open"):
        with ModuleRunners(**failing, backend="test"):
            pass
    assert log == ["open image_encoder", "open memory_attention", "close memory_attention", "close image_encoder"]
