"""Shared fixtures: one exported tiny model per test session, the official predictor, test clips.

Weights are random (seeded) — no checkpoint is reachable in CI — with the mask
decoder's hypernetwork output layers scaled x40 so that mask logits are decisive
(random init gives logits with std ~0.05, leaving many pixels at the threshold).
The model folder is exported once per session through the real CLI.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.helpers import CONFIG, CONFIG_20, DATA, HYPERNET_SCALE, SEED, SEED_20, memoize_forward_image, run_cli

#: The fixtures that need torch and the official ``sam2`` package: a test that uses one of them,
#: directly or through another fixture (``tiny_model_dir``, ``model_copy``, ``tiny_runners``, ...),
#: exports a model or runs the official predictor, and must be marked ``slow``.
TORCH_FIXTURES = frozenset({"tiny_checkpoint", "sam20_checkpoint", "official_predictor", "sam20_predictor"})


def pytest_collection_modifyitems(config, items):
    """Refuse to run when a test that needs torch (:data:`TORCH_FIXTURES`) is not marked ``slow``.

    So ``pytest -m "not slow"`` (``make test-fast``) never exports a model, and runs without torch.
    """
    unmarked = [item.nodeid for item in items
                if TORCH_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("these tests export a model or run the official predictor (they use "
                                f"{', '.join(sorted(TORCH_FIXTURES))}) but are not marked slow:\n  "
                                + "\n  ".join(unmarked))


@pytest.fixture(scope="session")
def vtest_frames() -> pathlib.Path:
    """Folder of 16 JPEG frames (768x576) from OpenCV's vtest.avi sample (pedestrians)."""
    return DATA / "vtest16"


def random_checkpoint(tmp_path_factory, config: str, seed: int) -> pathlib.Path:
    """Write an official-format checkpoint ({'model': state_dict}) of ``config`` with
    random weights from ``seed`` (hypernetwork output x HYPERNET_SCALE); returns its path."""
    torch = pytest.importorskip("torch")
    from sam2trt.export.exporter import build_model

    model = build_model(config, seed=seed)
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(HYPERNET_SCALE)
            mlp.layers[-1].bias.mul_(HYPERNET_SCALE)
    path = tmp_path_factory.mktemp("ckpt") / f"{config}_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def export_checkpoint(tmp_path_factory, config: str, checkpoint: pathlib.Path):
    """``(model_dir, export_stderr)``: ``checkpoint`` exported with the real ``sam2trt export``."""
    out = tmp_path_factory.mktemp("model") / config
    proc = run_cli("export", "--config", config, "--checkpoint", checkpoint, "--out", out, check=True)
    return out, proc.stderr


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> pathlib.Path:
    """An official-format checkpoint ({'model': state_dict}) of sam2.1_hiera_t with seeded random weights."""
    return random_checkpoint(tmp_path_factory, CONFIG, SEED)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_checkpoint):
    """``(model_dir, export_stderr)``: the checkpoint exported once with ``sam2trt export``."""
    return export_checkpoint(tmp_path_factory, CONFIG, tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_export) -> pathlib.Path:
    """The exported model folder (four ONNX files + model.json)."""
    return tiny_export[0]


@pytest.fixture(scope="session")
def official_predictor(tiny_checkpoint):
    """The official ``SAM2VideoPredictor`` (post-processing on) with the same weights."""
    from sam2trt.export.exporter import build_model

    return memoize_forward_image(build_model(CONFIG, checkpoint=tiny_checkpoint))


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path) -> pathlib.Path:
    """A throwaway copy of the model folder made of symlinks (cheap to break)."""
    dst = tmp_path / "model"
    dst.mkdir()
    for f in tiny_model_dir.iterdir():
        (dst / f.name).symlink_to(f)
    return dst


@pytest.fixture(scope="session")
def vtest_clip6(tmp_path_factory, vtest_frames) -> pathlib.Path:
    """A 6-frame 768x576 H.264 mp4 of the first test frames (written by the overlay writer)."""
    from sam2trt.video import OverlayVideoWriter, open_frames

    path = tmp_path_factory.mktemp("clip6") / "vtest6.mp4"
    with open_frames(vtest_frames) as src, OverlayVideoWriter(path, 768, 576, 10.0) as w:
        for idx, rgb in src:
            if idx >= 6:
                break
            w.write(rgb)
    return path


@pytest.fixture(scope="session")
def tiny_runners(tiny_model_dir):
    """``(spec, runners)``: the tiny model opened once on ONNX Runtime for in-process runs."""
    from sam2trt.model_spec import load_model_spec
    from sam2trt.runtime import open_runners

    spec = load_model_spec(tiny_model_dir)
    with open_runners(spec, "onnxruntime") as runners:
        yield spec, runners


@pytest.fixture(scope="session")
def sam20_checkpoint(tmp_path_factory) -> pathlib.Path:
    """Like ``tiny_checkpoint``, for SAM 2.0 tiny (``sam2_hiera_t``), seed ``SEED_20``, same scaling."""
    return random_checkpoint(tmp_path_factory, CONFIG_20, SEED_20)


@pytest.fixture(scope="session")
def sam20_export(tmp_path_factory, sam20_checkpoint):
    """``(model_dir, export_stderr)``: ``sam20_checkpoint`` exported once with ``sam2trt export``."""
    return export_checkpoint(tmp_path_factory, CONFIG_20, sam20_checkpoint)


@pytest.fixture(scope="session")
def sam20_model_dir(sam20_export) -> pathlib.Path:
    """The exported SAM 2.0 tiny model folder."""
    return sam20_export[0]


@pytest.fixture(scope="session")
def sam20_predictor(sam20_checkpoint):
    """The official ``SAM2VideoPredictor`` (post-processing on) for ``sam2_hiera_t`` with the same weights."""
    from sam2trt.export.exporter import build_model

    return memoize_forward_image(build_model(CONFIG_20, checkpoint=sam20_checkpoint))


@pytest.fixture(scope="session")
def clip16(tmp_path_factory, vtest_frames) -> bytes:
    """The 16 test frames as an H.264 mp4 with the index up front (faststart), as bytes."""
    import av

    from sam2trt.video import open_frames

    path = tmp_path_factory.mktemp("clip16") / "c.mp4"
    c = av.open(str(path), "w", options={"movflags": "faststart"})
    s = c.add_stream("libx264", rate=10)
    s.width, s.height, s.pix_fmt = 768, 576, "yuv420p"
    with open_frames(vtest_frames) as src:
        for _, rgb in src:
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
    c.mux(s.encode(None))
    c.close()
    return path.read_bytes()
