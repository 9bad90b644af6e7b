"""SAM 2.0 and SAM 2.1 configs: module inputs per config, export and a real CLI track for each.

SAM 2.0 (``sam2_hiera_*``) differs from 2.1 in three config switches: no
``no_obj_embed_spatial`` (the memory encoder does not read the object score)
and no temporal encoding of object pointers (``add_tpos_enc_to_obj_ptrs``,
``proj_tpos_enc_in_obj_ptrs``, ``use_signed_tpos_enc_to_obj_ptrs`` all false:
memory attention does not read the pointer offsets). Their graphs lack those
two inputs, and nothing may feed them. Parity with the official predictor for
both is in tests/test_parity.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sam2trt.model_spec import MODEL_FILES, MODEL_JSON, MODULE_IO, MODULES, load_model_spec
from tests.helpers import CONFIG, CONFIG_20, run_cli

# The inputs each module's graph must have, per config (what MODULE_IO must give).
ALL_INPUTS = {m: MODULE_IO[m].inputs for m in MODULES}
SAM20_MISSING = {"memory_encoder": "object_score_logits", "memory_attention": "obj_ptr_tpos"}


def expected_inputs(config: str) -> dict[str, list[str]]:
    missing = SAM20_MISSING if config.startswith("sam2_") else {}
    return {m: [n for n in ALL_INPUTS[m] if n != missing.get(m)] for m in MODULES}


# ------------------------------------------------------------------ module table
def test_module_table_inputs_per_switches():
    mem_enc, mem_attn = MODULE_IO["memory_encoder"], MODULE_IO["memory_attention"]
    sam21 = {"no_obj_embed_spatial": True, "add_tpos_enc_to_obj_ptrs": True}
    sam20 = {"no_obj_embed_spatial": False, "add_tpos_enc_to_obj_ptrs": False}
    assert mem_enc.input_names(sam21) == ("vision_feat", "mask_logits", "object_score_logits", "binarize_mask")
    assert mem_enc.input_names(sam20) == ("vision_feat", "mask_logits", "binarize_mask")
    assert mem_attn.input_names(sam21)[-1] == "obj_ptr_tpos"
    assert "obj_ptr_tpos" not in mem_attn.input_names(sam20)
    # model.json files written before the switch was recorded are SAM 2.1: every input
    assert mem_enc.input_names({"add_tpos_enc_to_obj_ptrs": True}) == mem_enc.inputs
    for m in ("image_encoder", "mask_decoder"):
        assert MODULE_IO[m].input_names(sam20) == MODULE_IO[m].input_names(sam21) == MODULE_IO[m].inputs


@pytest.fixture(scope="module", params=[CONFIG, CONFIG_20])
def described_model(request, tmp_path_factory):
    """``(config, torch model, ModelSpec)``: a random-weight model and a folder with its
    ``model.json`` (placeholder module files: nothing runs them)."""
    pytest.importorskip("torch")
    from sam2trt.export.exporter import build_model, model_description

    model = build_model(request.param, seed=0)
    import hashlib

    root = tmp_path_factory.mktemp("desc")
    desc = model_description(model, request.param)
    desc["files"] = {m: {"sha256": hashlib.sha256(b"").hexdigest(), "inputs": list(MODULE_IO[m].input_names(desc)),
                         "outputs": list(MODULE_IO[m].outputs)} for m in MODULES}
    (root / MODEL_JSON).write_text(json.dumps(desc))
    for f in MODEL_FILES.values():
        (root / f).write_bytes(b"")
    return request.param, model, load_model_spec(root)


@pytest.mark.slow
def test_wrappers_and_spec_agree_with_the_official_switches(described_model):
    from sam2trt.export import modules as M

    config, model, spec = described_model
    is20 = config == CONFIG_20
    assert spec.no_obj_embed_spatial is (model.no_obj_embed_spatial is not None) is not is20
    assert spec.add_tpos_enc_to_obj_ptrs is spec.proj_tpos_enc_in_obj_ptrs is not is20
    assert spec.use_signed_tpos_enc_to_obj_ptrs is not is20
    want = expected_inputs(config)
    for cls in (M.ImageEncoder, M.MemoryAttention, M.MaskDecoder, M.MemoryEncoder):
        wrapper = cls(model)
        assert wrapper.input_names == want[wrapper.name] == list(spec.input_names(wrapper.name))
        assert wrapper.output_names == list(MODULE_IO[wrapper.name].outputs)


class StrictRunner:
    """A module runner that, like ONNX Runtime, refuses a feed whose names are not
    exactly the graph's inputs; returns zeros of the module's output shapes."""

    def __init__(self, name, inputs, spec):
        self.name, self.inputs, self.spec = name, set(inputs), spec
        self.calls = 0

    def infer(self, feed, keep=()):
        from sam2trt.runtime.base import to_host

        assert set(feed) == self.inputs, f"{self.name} fed {sorted(feed)}, graph has {sorted(self.inputs)}"
        self.calls += 1
        s = self.spec
        C, Cm, H, L = s.hidden_dim, s.mem_dim, s.feat_size, s.low_res_size
        z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        if self.name == "image_encoder":
            (c0, h0, w0), (c1, h1, w1) = s.high_res_feat_shapes
            return {"high_res_feat0": z(1, c0, h0, w0), "high_res_feat1": z(1, c1, h1, w1), "vision_feat": z(1, C, H, H)}
        if self.name == "memory_attention":
            return {"pix_feat_with_mem": z(len(feed["maskmem_features"]), C, H, H)}
        if self.name == "mask_decoder":
            B = len(to_host(feed["pix_feat"]))
            return {"low_res_masks": z(B, 4, L, L), "iou_predictions": z(B, 4), "obj_ptrs": z(B, 4, C),
                    "object_score_logits": z(B, 1)}
        return {"maskmem_features": z(len(feed["mask_logits"]), Cm, H, H)}


@pytest.mark.slow
def test_tracker_feeds_each_module_exactly_its_graph_inputs(described_model):
    from sam2trt.runtime import ModuleRunners
    from sam2trt.tracker import FrameStepper, ObjectPrompt, track_frames

    config, _, spec = described_model
    want = expected_inputs(config)
    runners = {m: StrictRunner(m, want[m], spec) for m in MODULES}
    stepper = FrameStepper(spec, ModuleRunners(**runners, backend="onnxruntime"))
    frames = [(i, np.full((48, 64, 3), 40 * i, np.uint8)) for i in range(3)]
    mask = np.zeros((48, 64), bool)
    mask[10:20, 10:30] = True
    prompts = [ObjectPrompt(1, 0, box=(5.0, 5.0, 30.0, 40.0)), ObjectPrompt(2, 0, mask=mask),
               ObjectPrompt(3, 1, points=((20.0, 20.0, 1),))]
    outs = list(track_frames(stepper, frames, prompts, num_frames=3))
    assert [o.obj_ids for o in outs] == [[1, 2], [1, 2, 3], [1, 2, 3]]
    assert all(r.calls > 0 for r in runners.values())


# ------------------------------------------------------- export + track (real CLI)
@pytest.fixture(params=[CONFIG, CONFIG_20])
def exported(request):
    """``(config, model_dir, export_stderr)`` for SAM 2.1 tiny and SAM 2.0 tiny (session exports)."""
    fixture = "tiny_export" if request.param == CONFIG else "sam20_export"
    model_dir, log = request.getfixturevalue(fixture)
    return request.param, model_dir, log


@pytest.mark.slow
def test_export_and_track_with_the_cli(exported, vtest_frames, tmp_path):
    from sam2trt.export.exporter import onnx_io_names

    config, model_dir, log = exported
    meta = json.loads((model_dir / MODEL_JSON).read_text())
    assert meta["config"] == config
    want = expected_inputs(config)
    for m in MODULES:
        # the graph, model.json and the module table name the same inputs
        graph_inputs, graph_outputs = onnx_io_names(model_dir / MODEL_FILES[m])
        assert graph_inputs == meta["files"][m]["inputs"] == want[m], m
        assert graph_outputs == meta["files"][m]["outputs"] == list(MODULE_IO[m].outputs), m
        assert max(meta["files"][m]["verify_max_abs_diff"].values()) < 1e-3
    assert {line.split()[0] for line in log.splitlines() if "max|diff|=" in line} == set(MODULES)

    js, masks = tmp_path / "track.jsonl", tmp_path / "masks"
    proc = run_cli("track", vtest_frames, "--model", model_dir, "--box", "250,215,36,97", "--box", "636,238,50,85",
                   "--max-frames", "4", "--backend", "onnxruntime", "--json", js, "--masks-dir", masks, check=True)
    assert "backend: onnxruntime" in proc.stderr
    rows = [json.loads(line) for line in js.read_text().splitlines()]
    assert [r["frame"] for r in rows] == [0, 1, 2, 3]
    assert all([o["id"] for o in r["objects"]] == [1, 2] for r in rows)
    assert sorted(p.name for p in masks.iterdir()) == [f"{i:05d}.png" for i in range(4)]
    # the seeded, hypernetwork-scaled weights segment something: a wrong memory path
    # (e.g. the unfed input) would not get this far, and empty masks would hide a broken one
    assert any(o["area"] > 0 for r in rows for o in r["objects"]), rows
