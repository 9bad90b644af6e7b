"""Build TensorRT engines from a model folder.

``build_engines`` writes, next to the ONNX files:

- ``<module>.engine``: one serialized engine per module, one optimization
  profile each (:func:`profile_shapes`);
- the preprocessing graph (:mod:`sam2trt.preprocess_graph`: uint8 frame at
  its native size in, image encoder input out) in both pass orders,
  ``preprocess_horizontal_first.onnx`` / ``preprocess_vertical_first.onnx``
  (:data:`~sam2trt.engine.compat.PREPROCESS_VARIANTS`), and an engine for
  each, with one optimization profile over the frame size
  (:data:`FRAME_SIZE_PROFILE`, see :func:`frame_profile`);
- ``engines.json``: TensorRT version, GPU, precision, profiles and the sha256
  of each source ONNX file, read back by :mod:`sam2trt.engine.compat`;
- ``timing.cache`` (default): TensorRT's tactic timing cache, reused by later
  builds on the same GPU.

Precision. Every network is created ``STRONGLY_TYPED`` (TensorRT 10 and 11
alike; 11 has no other kind): each layer runs in the type its ONNX tensors
have. ``fp16`` builds from the mixed-precision ``<module>.fp16.onnx`` (written
here if missing or stale), whose fp32 islands are
:data:`sam2trt.fp16.FP32_OPS` (normalization, softmax, reductions,
pow/sqrt/exp, sin/cos, resize, index math) -- the one fp32 policy, for
TensorRT and ONNX Runtime alike. ``fp32`` builds the fp32 export as it is
(TF32 stays allowed, TensorRT's default). No builder precision flag is set:
``BuilderFlag.FP16`` (gone in TensorRT 11) is not allowed with strong typing.
The preprocessing engines are fp32 whatever ``precision`` says, with
``BuilderFlag.TF32`` cleared (present in TensorRT 10.13 and 11.4, value 6):
TF32 keeps 10 mantissa bits of the resize weights (~5e-4 relative), which
moves sums across PIL's per-pass rounding ties far more often; in full float32
the graph stays within 1 unit of 0..255 of PIL (``tests/test_preprocess_graph.py``,
on ONNX Runtime).

Both preprocessing variants are built, not only the one this Pillow uses for
the opt size: which one a frame needs depends on its size and on the Pillow
version (:func:`sam2trt.tracker.processing.pil_resizes_vertically_first`;
Pillow 13 resizes vertically first when the height shrinks and the width does
not, e.g. 720x1280 portrait video), and each engine is small (two matrix
products, no weights: the resize weights are inputs).

Trade-off, not yet measured on a GPU: the fp32 softmax between the two
attention matmuls may keep TensorRT from fusing them into its fp16
flash-attention kernel (memory attention attends to up to 7 x 4096 tokens);
if profiling shows that, drop ``Softmax`` from ``FP32_OPS``.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Callable

from sam2trt import __version__
from sam2trt import platform
from sam2trt.engine.compat import (ENGINES_JSON, META_FORMAT, PREPROCESS_VARIANTS, FrameSizeProfile,
                                   check_engines_meta, engine_paths, preprocess_paths, read_engines_meta)
from sam2trt.engine.factory import create_trt_object
from sam2trt.errors import EnvironmentMissing, ModelError, RuntimeFailure, UsageError
from sam2trt.fileio import atomic_write, sha256_file
from sam2trt.fp16 import write_all_fp16
from sam2trt.model_spec import MODULE_IO, MODULES, ModelSpec, load_model_spec, static_dims
from sam2trt.platform import TRT_INSTALL_HINT
from sam2trt.preprocess_graph import build_preprocess_model_for

TIMING_CACHE = "timing.cache"
#: Largest number of prompt points per object in the mask decoder profile
#: (a box is 2 points, so a box plus 14 clicks; tracking frames use 1). The
#: tensors are tiny, so a generous maximum costs nothing measurable.
MAX_POINTS = 16
#: Frame sizes the preprocessing engines take, per dimension, pixels: ``(min, opt, max)``.
#: Max 4096 on each side covers 4K UHD (3840x2160) and DCI 4K (4096x2160) in landscape and
#: portrait; opt is 1080p landscape, the most common video size; min 32 (smaller frames: resize
#: them, or track with ONNX Runtime, which preprocesses any size on the host).
FRAME_SIZE_PROFILE = FrameSizeProfile(height=(32, 1080, 4096), width=(32, 1920, 4096))


def frame_profile(max_frame_side: int | None = None) -> FrameSizeProfile:
    """:data:`FRAME_SIZE_PROFILE`, with its maximum side set to ``max_frame_side`` pixels when given.

    The opt size is clipped into the new range. Raises ``UsageError`` when
    ``max_frame_side`` is below the minimum side.
    """
    if max_frame_side is None:
        return FRAME_SIZE_PROFILE
    p = FRAME_SIZE_PROFILE
    if max_frame_side < max(p.height[0], p.width[0]):
        raise UsageError(f"max frame side {max_frame_side} is below the minimum {max(p.height[0], p.width[0])} pixels")
    return FrameSizeProfile((p.height[0], min(p.height[1], max_frame_side), max_frame_side),
                            (p.width[0], min(p.width[1], max_frame_side), max_frame_side))


def dimension_ranges(spec: ModelSpec, max_objects: int) -> dict[str, tuple[int, int, int]]:
    """``(min, opt, max)`` of each dynamic symbol of :data:`~sam2trt.model_spec.DYNAMIC_DIMS`.

    Objects ``B`` in ``1..max_objects``; memory frames ``T`` in
    ``1..num_maskmem`` (7: the conditioning frame plus ``num_maskmem - 1``
    recent frames); object pointers ``P`` in ``1..max_obj_ptrs_in_encoder``
    (16); prompt points ``N`` in ``1..MAX_POINTS``. ``opt`` is the steady
    tracking state the engines are tuned for: one object, full memory bank
    (T = 7, P = 16), one (padding) point.
    """
    T, P = spec.num_maskmem, spec.max_obj_ptrs_in_encoder
    return {"B": (1, 1, max_objects), "T": (1, T, T), "P": (1, P, P), "N": (1, 1, MAX_POINTS)}


def profile_shapes(spec: ModelSpec, max_objects: int) -> dict[str, dict[str, tuple[tuple, tuple, tuple]]]:
    """Optimization profile of every module input: ``(min, opt, max)`` shapes.

    Derived from the symbolic shapes of :data:`~sam2trt.model_spec.MODULE_IO`:
    each dynamic symbol takes its range from :func:`dimension_ranges`, each
    static one its value from ``model.json``
    (:func:`~sam2trt.model_spec.static_dims`). Static inputs get ``min == opt
    == max``; the image encoder is fully static (``[1, 3, S, S]``). Every input
    the module can have is listed, also those a SAM 2.0 graph lacks (unused there).

    Args:
        spec: the loaded model folder.
        max_objects: largest object count tracked at once (>= 1).

    Returns:
        ``{module: {input name: (min, opt, max)}}``, shapes as int tuples, inputs
        in ONNX order.

    Raises:
        UsageError: ``max_objects < 1``.
    """
    if max_objects < 1:
        raise UsageError(f"max_objects {max_objects} must be at least 1")
    ranges, static = dimension_ranges(spec, max_objects), static_dims(spec.raw)
    at = [{**static, **{sym: r[k] for sym, r in ranges.items()}} for k in range(3)]  # min, opt, max
    return {module: {name: tuple(io.shape(name, dims) for dims in at) for name in io.inputs}
            for module, io in MODULE_IO.items()}


def _jsonable_profiles(profiles: dict) -> dict:
    return {m: {i: [list(s) for s in mom] for i, mom in inputs.items()} for m, inputs in profiles.items()}


def _check_environment(env) -> None:
    """Raise :class:`EnvironmentMissing` naming what build-engines lacks (TensorRT and/or a GPU)."""
    no_gpu = "no CUDA GPU found: build-engines must run on the target NVIDIA GPU"
    if env.tensorrt_version is None:
        extra = f"; also {no_gpu}" if not env.gpus else ""
        raise EnvironmentMissing(f"TensorRT is not installed: {TRT_INSTALL_HINT}{extra}")
    if not env.gpus:
        raise EnvironmentMissing(no_gpu)


def network_flags(trt) -> int:
    """``create_network`` flags: ``STRONGLY_TYPED`` (the module docstring says why)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _build_one(trt, builder, logger, onnx_path: pathlib.Path, shapes: dict, *, workspace_gib: float,
               cache, tf32: bool = True) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build one serialized engine.

    Tactic timings are read from and recorded in ``cache`` (an ``ITimingCache``).
    ``tf32=False`` clears ``BuilderFlag.TF32`` (set by default): float32 matrix
    products then run in full float32.
    """
    network = builder.create_network(network_flags(trt))
    parser = create_trt_object(trt.OnnxParser, network, logger, what="ONNX parser")
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)).strip().replace("\n", " ") for i in range(parser.num_errors)]
        raise RuntimeFailure(f"TensorRT cannot parse {onnx_path.name}: {errs[0] if errs else 'unknown error'}"
                             f"{f' (+{len(errs) - 1} more)' if len(errs) > 1 else ''}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            if tensor.name not in shapes:
                raise RuntimeFailure(f"{onnx_path.name}: no profile for dynamic input {tensor.name}: re-export the model")
            lo, opt, hi = shapes[tensor.name]
            profile.set_shape(tensor.name, lo, opt, hi)
        config.add_optimization_profile(profile)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise RuntimeFailure("TensorRT rejected the timing cache: delete it or pass --timing-cache NEW_FILE")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeFailure(f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log above); "
                             "try a larger --workspace or --precision fp32")
    return bytes(serialized)


def write_preprocess_onnx(spec: ModelSpec, log: Callable[[str], None] = print) -> dict[str, pathlib.Path]:
    """Write both preprocessing graph variants into the model folder, where missing or different.

    The graph (:func:`sam2trt.preprocess_graph.build_preprocess_model_for`) is
    built from ``model.json``'s ``image_size``, ``image_mean`` and ``image_std``;
    a file whose bytes already match is left alone (so its sha256, recorded in
    ``engines.json``, stays valid).

    Returns:
        ``{variant: ONNX path}`` (:data:`~sam2trt.engine.compat.PREPROCESS_VARIANTS`).
    Raises:
        RuntimeFailure: a file cannot be written (disk full, read-only folder).
    """
    out = {}
    for variant, (onnx_path, _) in preprocess_paths(spec).items():
        data = build_preprocess_model_for(spec, vertical_first=PREPROCESS_VARIANTS[variant]).SerializeToString()
        if not (onnx_path.is_file() and onnx_path.read_bytes() == data):
            atomic_write(onnx_path, data)
            log(f"wrote {onnx_path.name}")
        out[variant] = onnx_path
    return out


def _engines_up_to_date(spec: ModelSpec, want: dict, env) -> bool:
    try:
        meta = read_engines_meta(spec)
    except ModelError:
        return False
    if meta is None or any(meta.get(k) != v for k, v in want.items()):
        return False
    return check_engines_meta(spec, meta, env) is None


def build_engines(model_dir: str | os.PathLike, *, precision: str = "fp16", max_objects: int = 8,
                  workspace_gib: float = 4.0, timing_cache: str | os.PathLike | None = None,
                  force: bool = False, max_frame_side: int | None = None,
                  log: Callable[[str], None] = print) -> pathlib.Path:
    """Build the four module engines and the two preprocessing engines of a model folder for this GPU.

    Args:
        model_dir: folder from ``sam2trt export``.
        precision: ``"fp16"`` (mixed precision, see the module docstring) or ``"fp32"``.
        max_objects: profile maximum of the object dimension (objects tracked at once).
        workspace_gib: builder workspace memory pool limit, GiB.
        timing_cache: timing cache file to load and update (default
            ``<model_dir>/timing.cache``).
        force: rebuild even when ``engines.json`` says the engines are current.
        max_frame_side: largest frame height and width the preprocessing
            engines take, pixels (default: :data:`FRAME_SIZE_PROFILE`, 4096).
        log: receives progress lines.

    Returns:
        The model folder path.

    Raises:
        sam2trt.errors.ModelError: not a complete model folder.
        UsageError: bad precision, max_objects or max_frame_side.
        EnvironmentMissing: TensorRT is not installed, or no CUDA GPU (exit 5).
        RuntimeFailure: TensorRT could not parse or build a module, or create its builder.
    """
    if precision not in ("fp16", "fp32"):
        raise UsageError(f"precision {precision!r}: use fp16 or fp32")
    if not workspace_gib > 0:
        raise UsageError(f"workspace {workspace_gib} GiB must be positive")
    spec = load_model_spec(model_dir)
    profiles = profile_shapes(spec, max_objects)
    frames = frame_profile(max_frame_side)
    env = platform.detect()
    _check_environment(env)
    meta_path = spec.root / ENGINES_JSON
    want = {"precision": precision, "max_objects": max_objects, "profiles": _jsonable_profiles(profiles),
            "frame_size_profile": frames.to_json()}
    pre_sources = write_preprocess_onnx(spec, log=log)  # before the check: a changed graph is a changed ONNX
    if not force and _engines_up_to_date(spec, want, env):
        log(f"engines in {spec.root} are up to date (use --force to rebuild)")
        return spec.root

    import tensorrt as trt

    sources = write_all_fp16(spec, log=log) if precision == "fp16" else {m: spec.path(m) for m in MODULES}
    cache_path = pathlib.Path(timing_cache) if timing_cache else spec.root / TIMING_CACHE
    onnx_sha = {m: sha256_file(spec.path(m)) for m in MODULES}  # before the build: detect edits during it
    pre_sha = {v: sha256_file(p) for v, p in pre_sources.items()}
    logger = trt.Logger(trt.Logger.WARNING)
    builder = create_trt_object(trt.Builder, logger, what="builder")
    cache_config = builder.create_builder_config()  # owns the timing cache shared by the four builds
    cache = cache_config.create_timing_cache(cache_path.read_bytes()) if cache_path.is_file() else None
    if cache is not None and not cache_config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"timing cache {cache_path} is from another GPU or TensorRT version: starting a new one")
        cache = None
    if cache is None:
        cache = cache_config.create_timing_cache(b"")
    else:
        log(f"timing cache: {cache_path}")
    gpu = env.gpus[0]
    log(f"building {precision} engines on {gpu.name} (compute capability {gpu.compute_capability}) "
        f"with TensorRT {env.tensorrt_version} (strongly typed), up to {max_objects} objects")
    meta_path.unlink(missing_ok=True)  # engines.json describes complete builds only
    for module in MODULES:
        t0 = time.perf_counter()
        data = _build_one(trt, builder, logger, sources[module], profiles[module],
                          workspace_gib=workspace_gib, cache=cache)
        path = engine_paths(spec)[module]
        atomic_write(path, data)
        log(f"wrote {path.name} ({len(data) / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s) from {sources[module].name}")
    pre_shapes = frames.input_shapes(spec.image_size)
    pre_engines = {v: e for v, (_, e) in preprocess_paths(spec).items()}
    for variant, onnx_path in pre_sources.items():
        t0 = time.perf_counter()
        data = _build_one(trt, builder, logger, onnx_path, pre_shapes, workspace_gib=workspace_gib, cache=cache,
                          tf32=False)
        atomic_write(pre_engines[variant], data)
        log(f"wrote {pre_engines[variant].name} ({len(data) / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s, "
            f"fp32 without TF32, frames {frames.describe()}) from {onnx_path.name}")
    atomic_write(cache_path, bytes(cache.serialize()))

    meta = {
        "format_version": META_FORMAT,
        "sam2trt_version": __version__,
        "tensorrt_version": env.tensorrt_version,
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "precision": precision,
        "typing": "strong",
        "max_objects": max_objects,
        "workspace_gib": workspace_gib,
        "profiles": want["profiles"],
        "onnx_sha256": onnx_sha,
        "built_from": {m: p.name for m, p in sources.items()},
        "engines": {m: p.name for m, p in engine_paths(spec).items()},
        "frame_size_profile": want["frame_size_profile"],
        "preprocess": {
            "precision": "fp32",
            "tf32": False,
            "image_size": spec.image_size,
            "profile": _jsonable_profiles({"preprocess": pre_shapes})["preprocess"],
            "variants": {v: {"vertical_first": PREPROCESS_VARIANTS[v], "onnx": pre_sources[v].name,
                             "engine": pre_engines[v].name, "onnx_sha256": pre_sha[v]} for v in PREPROCESS_VARIANTS},
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write(meta_path, json.dumps(meta, indent=1).encode())
    log(f"wrote {meta_path}")
    return spec.root
