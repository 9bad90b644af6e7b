"""``sam2trt verify``: the flow on the null backend (fast, no model), and once on the real tiny model (slow).

The fast tests run :func:`sam2trt.verify.verify` and the command with the null
runners (:mod:`sam2trt.runtime.null_backend`) standing in for both runs, so
the tracking, the COCO outputs, the J&F comparison, the report and the exit
code are the real ones; only inference is a stand-in.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

import sam2trt.cli_quality
import sam2trt.verify
from sam2trt.cli import main
from sam2trt.errors import EnvironmentMissing, UsageError
from sam2trt.runtime.base import ModuleRunners
from sam2trt.runtime.null_backend import host_only_spec, open_null_runners, write_host_only_model
from sam2trt.tracker import ObjectPrompt
from sam2trt.verify import check_verify_precision, verify
from tests.helpers import DATA

BOXES = ["250,215,36,97", "400,200,40,90"]
PROMPTS = [ObjectPrompt(obj_id=1, frame_idx=0, box=(250, 215, 286, 312)),
           ObjectPrompt(obj_id=2, frame_idx=0, box=(400, 200, 440, 290))]


class Shifted:
    """A mask decoder whose low-resolution masks of object ``obj`` (batch row) move ``px`` pixels right."""

    def __init__(self, runner, px: int, row: int):
        self.runner, self.px, self.row = runner, px, row

    def infer(self, feed, keep=()):
        out = dict(self.runner.infer(feed, keep))
        masks = out["low_res_masks"].copy()
        if masks.shape[0] > self.row:
            masks[self.row] = np.roll(masks[self.row], self.px, axis=-1)
        out["low_res_masks"] = masks
        return out

    def __getattr__(self, name):
        return getattr(self.runner, name)


def null_opener(shift_px: int = 0):
    """``open_run`` for :func:`verify`: null runners; the run under test (not onnxruntime fp32) shifts object 2."""

    @contextlib.contextmanager
    def open_run(spec, backend, precision, threads=None):
        with open_null_runners(spec) as null:
            if (backend, precision) == ("onnxruntime", "fp32") or not shift_px:
                yield null
                return
            yield ModuleRunners(image_encoder=null.image_encoder, memory_attention=null.memory_attention,
                                mask_decoder=Shifted(null.mask_decoder, shift_px, 1),
                                memory_encoder=null.memory_encoder, backend=null.backend, preprocess=null.preprocess)

    return open_run


def test_identical_runs_score_one():
    result = verify(host_only_spec(), str(DATA / "vtest16"), PROMPTS, backend="openvino", precision="fp32", frames=4,
                    open_run=null_opener())
    d = result.as_dict()
    assert d["J&F-Mean"] == 1.0 and d["frames"] == 4 and d["objects"] == [1, 2]
    assert d["worst"]["J"] == 1.0 and d["tested"] == "openvino fp32" and d["reference"] == "onnxruntime fp32"
    assert result.report.videos[0].frames == [0, 1, 2, 3]  # every frame counts


def test_a_shifted_object_is_named_as_the_worst():
    result = verify(host_only_spec(), str(DATA / "vtest16"), PROMPTS, backend="onnxruntime", precision="fp16",
                    frames=4, open_run=null_opener(shift_px=6))
    d = result.as_dict()
    objects = {o.obj_id: o for o in result.report.videos[0].objects}
    assert objects[1].j.tolist() == [1.0] * 4  # object 1 untouched
    assert d["worst"]["object"] == 2 and d["worst"]["J"] == pytest.approx(float(objects[2].j.min()))
    assert d["worst"]["frame"] == int(np.argmin(objects[2].j)) and 0 < d["worst"]["J"] < 0.9
    assert d["J&F-Mean"] < 1.0
    assert f"worst IoU {d['worst']['J']:.5f} at frame {d['worst']['frame']} object 2" in result.line()


def test_a_backend_that_cannot_run_fails_before_the_reference_run():
    opened = []

    @contextlib.contextmanager
    def open_run(spec, backend, precision, threads=None):
        opened.append((backend, precision))
        if backend == "tensorrt":
            raise EnvironmentMissing("TensorRT is not installed: install the trt extra")
        with open_null_runners(spec) as null:
            yield null

    with pytest.raises(EnvironmentMissing):
        verify(host_only_spec(), str(DATA / "vtest16"), PROMPTS, backend="tensorrt", frames=2, open_run=open_run)
    assert opened == [("tensorrt", "fp16")]  # the CPU reference never started


@pytest.fixture()
def null_cli(tmp_path, monkeypatch):
    """``sam2trt verify`` on a host-only model folder with null runners for both runs (object 2 shifted)."""
    model = write_host_only_model(tmp_path / "model")
    monkeypatch.setattr(sam2trt.cli_quality, "load_model_spec", host_only_spec)
    monkeypatch.setattr(sam2trt.verify, "open_run_runners", null_opener(shift_px=6))
    boxes = [arg for b in BOXES for arg in ("--box", b)]
    return ["verify", str(model), str(DATA / "vtest16"), *boxes, "--frames", "4"]


def test_cli_passes_at_the_bar_and_fails_above_it(null_cli, capsys):
    assert main(null_cli + ["--backend", "onnxruntime", "--json", "--min-jf", "0"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["passed"] and doc["worst"]["object"] == 2 and "verify: tracking 4 frames with onnxruntime fp16" in err
    code = main(null_cli + ["--backend", "onnxruntime", "--min-jf", "0.999"])
    out, err = capsys.readouterr()
    assert code == 7 and out.startswith("verify: onnxruntime fp16 vs onnxruntime fp32, 4 frames, 2 object(s): J&F ")
    assert "object 2" in out and err.splitlines()[-1].startswith("error: J&F ") and "below --min-jf 0.999" in err


def test_cli_identical_runs_exit_0_at_the_default_bar(null_cli, capsys):
    assert main(null_cli + ["--backend", "onnxruntime", "--precision", "fp32"]) == 0  # the reference itself
    assert "J&F 1.00000" in capsys.readouterr().out


@pytest.mark.parametrize("args, text", [
    (["--backend", "auto"], "verify tests one of onnxruntime, openvino, tensorrt"),
    (["--backend", "onnxruntime", "--precision", "bf16"], "use one of fp32, fp16"),
    (["--backend", "openvino", "--precision", "fp16"], "use one of auto, fp32, bf16"),
    (["--backend", "onnxruntime", "--min-jf", "-1"], "--min-jf -1.0 must be >= 0"),
    (["--backend", "onnxruntime", "--frames", "0"], "--frames 0 must be at least 1"),
])
def test_cli_usage_errors(null_cli, capsys, args, text):
    assert main(null_cli + args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and text in err, err


def test_tensorrt_precision_is_the_engines():
    assert check_verify_precision("tensorrt", None, "fp32") == "fp32"
    with pytest.raises(UsageError, match="the TensorRT engines are fp16"):
        check_verify_precision("tensorrt", "fp32", "fp16")
    assert check_verify_precision("onnxruntime", None) == "fp16" and check_verify_precision("openvino", None) == "auto"


@pytest.mark.slow
def test_real_tiny_model_fp32_against_fp32(tiny_model_dir):
    """The real command, ONNX Runtime fp32 against itself on 3 frames: J&F exactly 1, so exit 0 at the
    default bar and the documented exit 7 with --min-jf 1.01 (one run: the JSON says both)."""
    from tests.helpers import run_cli

    proc = run_cli("verify", tiny_model_dir, DATA / "vtest16", "--box", BOXES[0], "--box", BOXES[1],
                   "--backend", "onnxruntime", "--precision", "fp32", "--frames", "3", "--min-jf", "1.01", "--json",
                   "--threads", "1")
    assert proc.returncode == 7, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["J&F-Mean"] == 1.0 and doc["worst"]["J"] == 1.0 and doc["frames"] == 3 and not doc["passed"]
    assert proc.stderr.splitlines()[-1].startswith("error: J&F 1.00000 of onnxruntime fp32")
