"""The tracker core keeps large tensors in the backend's memory (CPU stand-in for the GPU path).

On TensorRT, outputs asked for with ``keep=`` are GPU tensors that only support
``shape``, ``len``, ``t[i]`` row views and ``np.asarray`` (a download). Here
ONNX Runtime runners are wrapped so that kept outputs become such opaque
tensors, with every download counted. The same frames are tracked through the
wrapped and the plain runners: the masks must agree, the memory bank must hold
the opaque tensors, and tracking frames must download nothing (only a fresh
object's prompt frame reads the image features on the host).
"""

from __future__ import annotations

import numpy as np
import pytest

from sam2trt.model_spec import MODULES
from sam2trt.runtime import ModuleRunners
from sam2trt.tracker import FrameStepper, ObjectPrompt, track_frames
from sam2trt.video import open_frames
from tests.helpers import session_runners

pytestmark = pytest.mark.slow

FRAMES = 5
PROMPTS = [ObjectPrompt(obj_id=1, frame_idx=0, box=(250, 215, 286, 312)),
           ObjectPrompt(obj_id=2, frame_idx=1, box=(636, 238, 686, 323))]


class OpaqueTensor:
    """A stand-in for a GPU tensor: no arithmetic, downloads are counted."""

    downloads: list[tuple[int, ...]] = []

    def __init__(self, array: np.ndarray):
        self._array = array
        self.shape, self.dtype = array.shape, array.dtype

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, i):
        if not isinstance(i, (int, np.integer)):
            raise TypeError("row views only")
        return OpaqueTensor(self._array[i])

    def __array__(self, dtype=None, copy=None):
        OpaqueTensor.downloads.append(self.shape)
        return self._array.copy()


def _unwrap(value, uses: list[str]):
    if isinstance(value, OpaqueTensor):
        uses.append("bound")
        return value._array
    if isinstance(value, list):
        uses.append("gathered")
        return np.stack([_unwrap(v, []) for v in value])
    return value


class DeviceLikeRunner:
    """Wraps an ONNX Runtime runner: kept outputs become :class:`OpaqueTensor`."""

    def __init__(self, runner, uses: list[str]):
        self.runner, self.name, self.uses = runner, runner.name, uses

    def infer(self, feed, keep=()):
        feed = {k: _unwrap(v, self.uses) for k, v in feed.items()}
        out = self.runner.infer(feed)
        return {k: OpaqueTensor(v) if k in keep else v for k, v in out.items()}


def _track(model_dir, frames_dir, wrap: bool):
    """Track :data:`PROMPTS` on the session's ONNX Runtime runners (each frame encoded once per session)."""
    uses: list[str] = []
    banks: dict = {}
    downloads_per_frame = []
    masks = []
    spec, active = session_runners(model_dir)
    runners = {n: getattr(active, n) for n in MODULES}
    if wrap:
        runners = {n: DeviceLikeRunner(runners[n], uses) for n in MODULES}
    stepper = FrameStepper(spec, ModuleRunners(**runners, backend="onnxruntime"))
    with open_frames(frames_dir) as frames:
        OpaqueTensor.downloads.clear()
        for out in track_frames(stepper, frames, PROMPTS, num_frames=16, max_frames=FRAMES, banks=banks):
            masks.append(out.mask_logits)
            downloads_per_frame.append(list(OpaqueTensor.downloads))
            OpaqueTensor.downloads.clear()
    return masks, banks, downloads_per_frame, uses


def test_tracking_frames_keep_features_and_memory_in_the_backend(tiny_model_dir, vtest_frames, monkeypatch):
    import sam2trt.tracker.core as core

    # Device memory is not bfloat16-rounded (no kernel for it on the GPU): compare like with like.
    monkeypatch.setattr(core, "round_to_bfloat16", lambda a: a)
    ref, ref_banks, _, _ = _track(tiny_model_dir, vtest_frames, wrap=False)
    got, banks, downloads, uses = _track(tiny_model_dir, vtest_frames, wrap=True)

    assert len(got) == len(ref) == FRAMES
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert ((a > 0) == (b > 0)).mean() > 0.9999
    # Prompt frames 0 and 1 read vision_feat once (vision features + no_mem_embed); the rest nothing.
    assert downloads == [[(1, 256, 64, 64)], [(1, 256, 64, 64)], [], [], []]
    for bank in banks.values():
        for mem in list(bank.cond.values()) + list(bank.non_cond.values()):
            assert mem.maskmem_features is None or isinstance(mem.maskmem_features, OpaqueTensor)
    # Object 2 joined a frame later, so from frame 2 the two objects' memory layouts differ:
    # memory attention runs per layout and the mask decoder gets its rows gathered.
    assert "bound" in uses and "gathered" in uses
