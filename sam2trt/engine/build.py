"""Build TensorRT engines from a model folder, and check that built engines still fit.

``build_engines`` writes, next to the ONNX files:

- ``<module>.engine``: one serialized engine per module, one optimization
  profile each (:func:`profile_shapes`);
- ``engines.json``: TensorRT version, GPU, precision, profiles and the sha256
  of each source ONNX file, read by :func:`check_engines_meta`;
- ``timing.cache`` (default): TensorRT's tactic timing cache, reused by later
  builds on the same GPU.

Precision. ``fp16`` on TensorRT 10 (``BuilderFlag.FP16`` exists): the fp32 ONNX
is parsed into a weakly typed network, FP16 kernels are allowed, and the layers
of :data:`sam2trt.engine.fp16.FP32_OPS` (normalization, softmax, reductions,
pow/sqrt/exp, sin/cos, resize) are pinned to fp32 with
``OBEY_PRECISION_CONSTRAINTS``. On TensorRT 11 (weak typing removed) the
mixed-precision ``<module>.fp16.onnx`` (same fp32 islands, written here if
missing) is parsed into a ``STRONGLY_TYPED`` network. ``fp32`` builds the fp32
ONNX as it is (TF32 stays allowed, TensorRT's default).

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

from sam2trt.engine.compat import ENGINES_JSON
from sam2trt.errors import EnvironmentMissing, RuntimeFailure, UsageError
from sam2trt.model_spec import MODULES, ModelSpec, load_model_spec

META_FORMAT = 1
ENGINE_SUFFIX = ".engine"
TIMING_CACHE = "timing.cache"
#: Largest number of prompt points per object in the mask decoder profile
#: (a box is 2 points, so a box plus 14 clicks; tracking frames use 1). The
#: tensors are tiny, so a generous maximum costs nothing measurable.
MAX_POINTS = 16


def engine_paths(spec_or_dir: ModelSpec | str | os.PathLike) -> dict[str, pathlib.Path]:
    """``{module: <model folder>/<module>.engine}`` (files may not exist)."""
    root = spec_or_dir.root if isinstance(spec_or_dir, ModelSpec) else pathlib.Path(spec_or_dir)
    return {m: root / f"{m}{ENGINE_SUFFIX}" for m in MODULES}


def profile_shapes(spec: ModelSpec, max_objects: int) -> dict[str, dict[str, tuple[tuple, tuple, tuple]]]:
    """Optimization profile of every module input: ``(min, opt, max)`` shapes.

    Dimensions (see :mod:`sam2trt.export.modules`): objects ``B`` in
    ``1..max_objects``; memory frames ``T`` in ``1..num_maskmem`` (7: the
    conditioning frame plus ``num_maskmem - 1`` recent frames); object pointers
    ``P`` in ``1..max_obj_ptrs_in_encoder`` (16); prompt points ``N`` in
    ``1..MAX_POINTS``. ``opt`` is the steady tracking state the engines are
    tuned for: one object, full memory bank (T = 7, P = 16), one (padding)
    point. Static inputs get ``min == opt == max``; the image encoder is fully
    static (``[1, 3, S, S]``).

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
    S, H = spec.image_size, spec.feat_size
    C, Cm, L = spec.hidden_dim, spec.mem_dim, spec.low_res_size
    (c0, h0, w0), (c1, h1, w1) = spec.high_res_feat_shapes
    T, P, N, B = spec.num_maskmem, spec.max_obj_ptrs_in_encoder, MAX_POINTS, max_objects

    def static(*shape):
        return (tuple(shape),) * 3

    def dyn(lo, opt, hi):
        return tuple(lo), tuple(opt), tuple(hi)

    return {
        "image_encoder": {"image": static(1, 3, S, S)},
        "memory_attention": {
            "vision_feat": static(1, C, H, H),
            "maskmem_features": dyn((1, 1, Cm, H, H), (1, T, Cm, H, H), (B, T, Cm, H, H)),
            "memory_tpos_enc": dyn((1, Cm), (T, Cm), (T, Cm)),
            "obj_ptrs": dyn((1, 1, C), (1, P, C), (B, P, C)),
            "obj_ptr_tpos": dyn((1,), (P,), (P,)),
        },
        "mask_decoder": {
            "pix_feat": dyn((1, C, H, H), (1, C, H, H), (B, C, H, H)),
            "high_res_feat0": static(1, c0, h0, w0),
            "high_res_feat1": static(1, c1, h1, w1),
            "point_coords": dyn((1, 1, 2), (1, 1, 2), (B, N, 2)),
            "point_labels": dyn((1, 1), (1, 1), (B, N)),
            "mask_input": dyn((1, 1, L, L), (1, 1, L, L), (B, 1, L, L)),
            "has_mask_input": dyn((1,), (1,), (B,)),
        },
        "memory_encoder": {
            "vision_feat": static(1, C, H, H),
            "mask_logits": dyn((1, 1, L, L), (1, 1, L, L), (B, 1, L, L)),
            "object_score_logits": dyn((1, 1), (1, 1), (B, 1)),
            "binarize_mask": dyn((1,), (1,), (B,)),
        },
    }


def _jsonable_profiles(profiles: dict) -> dict:
    return {m: {i: [list(s) for s in mom] for i, mom in inputs.items()} for m, inputs in profiles.items()}


def _rerun(spec_root) -> str:
    return f"rerun `sam2trt build-engines {spec_root} --force`"


def check_engines_meta(spec: ModelSpec, meta: dict, env) -> str | None:
    """Whether engines described by ``meta`` (``engines.json``) can run here.

    Checks, cheapest first: the record is complete, the engine files exist,
    the GPU (device 0) has the same name and compute capability, TensorRT is
    the same version, and each module's current ONNX file has the sha256
    recorded at build time.

    Args:
        spec: the model folder.
        meta: parsed ``engines.json``.
        env: a :class:`sam2trt.engine.environment.Environment`.

    Returns:
        None when compatible, else one line naming what differs and ending with
        "rerun `sam2trt build-engines <dir> --force`".
    """
    from sam2trt.export.exporter import sha256_file

    fix = _rerun(spec.root)
    need = ("format_version", "tensorrt_version", "gpu", "compute_capability", "onnx_sha256")
    if not isinstance(meta, dict) or any(k not in meta for k in need) or meta.get("format_version") != META_FORMAT:
        return f"{spec.root / ENGINES_JSON} is incomplete or from another sam2trt version: {fix}"
    missing = [p.name for p in engine_paths(spec).values() if not p.is_file()]
    if missing:
        return f"{', '.join(missing)} missing in {spec.root}: {fix}"
    if not env.gpus:
        return f"no CUDA GPU is visible, the engines need one ({meta['gpu']}): run on that GPU or use --backend onnxruntime"
    gpu = env.gpus[0]
    if str(meta["compute_capability"]) != gpu.compute_capability:
        return (f"engines were built for {meta['gpu']} (compute capability {meta['compute_capability']}), "
                f"this GPU is {gpu.name} ({gpu.compute_capability}): {fix}")
    if meta["gpu"] != gpu.name:
        return f"engines were built on {meta['gpu']}, this GPU is {gpu.name}: {fix}"
    if meta["tensorrt_version"] != env.tensorrt_version:
        return (f"engines were built with TensorRT {meta['tensorrt_version']}, "
                f"this is TensorRT {env.tensorrt_version}: {fix}")
    for module in MODULES:
        recorded = meta["onnx_sha256"].get(module)
        if recorded != sha256_file(spec.path(module)):
            return f"{spec.path(module).name} changed since the engines were built: {fix}"
    return None


def _check_environment(env) -> None:
    """Raise :class:`EnvironmentMissing` naming what build-engines lacks (TensorRT and/or a GPU)."""
    from sam2trt.engine.environment import TRT_INSTALL_HINT

    no_gpu = "no CUDA GPU found: build-engines must run on the target NVIDIA GPU"
    if env.tensorrt_version is None:
        extra = f"; also {no_gpu}" if not env.gpus else ""
        raise EnvironmentMissing(f"TensorRT is not installed: {TRT_INSTALL_HINT}{extra}")
    if not env.gpus:
        raise EnvironmentMissing(no_gpu)


def _write_atomic(path: pathlib.Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _pin_fp32_layers(trt, network) -> int:
    """TensorRT 10 weak typing: force the fp32-island layers to fp32. Returns how many were pinned."""
    L = trt.LayerType
    unary = {trt.UnaryOperation.SQRT, trt.UnaryOperation.EXP, trt.UnaryOperation.SIN, trt.UnaryOperation.COS}
    floats = {trt.float32, trt.float16}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = layer.type
        pin = kind in (L.NORMALIZATION, L.SOFTMAX, L.REDUCE, L.RESIZE)
        if kind == L.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer
            pin = layer.op == trt.ElementWiseOperation.POW
        elif kind == L.UNARY:
            layer.__class__ = trt.IUnaryLayer
            pin = layer.op in unary
        if not pin or not all(layer.get_output(j).dtype in floats for j in range(layer.num_outputs)):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def _build_one(trt, builder, logger, onnx_path: pathlib.Path, shapes: dict, *, weak_fp16: bool,
               strongly_typed: bool, workspace_gib: float, cache) -> bytes:
    """Parse ``onnx_path`` and build one serialized engine, recording tactics in ``cache``."""
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)).strip().replace("\n", " ") for i in range(parser.num_errors)]
        raise RuntimeFailure(f"TensorRT cannot parse {onnx_path.name}: {errs[0] if errs else 'unknown error'}"
                             f"{f' (+{len(errs) - 1} more)' if len(errs) > 1 else ''}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_fp32_layers(trt, network)
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


def _engines_up_to_date(spec: ModelSpec, meta_path: pathlib.Path, want: dict, env) -> bool:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    if any(meta.get(k) != v for k, v in want.items()):
        return False
    return check_engines_meta(spec, meta, env) is None


def build_engines(model_dir: str | os.PathLike, *, precision: str = "fp16", max_objects: int = 8,
                  workspace_gib: float = 4.0, timing_cache: str | os.PathLike | None = None,
                  force: bool = False, log: Callable[[str], None] = print) -> pathlib.Path:
    """Build the four TensorRT engines of a model folder for this GPU.

    Args:
        model_dir: folder from ``sam2trt export``.
        precision: ``"fp16"`` (mixed precision, see the module docstring) or ``"fp32"``.
        max_objects: profile maximum of the object dimension (objects tracked at once).
        workspace_gib: builder workspace memory pool limit, GiB.
        timing_cache: timing cache file to load and update (default
            ``<model_dir>/timing.cache``).
        force: rebuild even when ``engines.json`` says the engines are current.
        log: receives progress lines.

    Returns:
        The model folder path.

    Raises:
        sam2trt.errors.ModelError: not a complete model folder.
        UsageError: bad precision or max_objects.
        EnvironmentMissing: TensorRT is not installed, or no CUDA GPU (exit 5).
        RuntimeFailure: TensorRT could not parse or build a module.
    """
    from sam2trt.engine.environment import detect
    from sam2trt.export.exporter import sha256_file

    if precision not in ("fp16", "fp32"):
        raise UsageError(f"precision {precision!r}: use fp16 or fp32")
    if not workspace_gib > 0:
        raise UsageError(f"workspace {workspace_gib} GiB must be positive")
    spec = load_model_spec(model_dir)
    profiles = profile_shapes(spec, max_objects)
    env = detect()
    _check_environment(env)
    meta_path = spec.root / ENGINES_JSON
    want = {"precision": precision, "max_objects": max_objects, "profiles": _jsonable_profiles(profiles)}
    if not force and meta_path.is_file() and _engines_up_to_date(spec, meta_path, want, env):
        log(f"engines in {spec.root} are up to date (use --force to rebuild)")
        return spec.root

    import tensorrt as trt

    # TensorRT 10 has weak typing (BuilderFlag.FP16); 11 removed it and builds strongly typed networks only.
    weak = (env.tensorrt_major or 0) < 11 and hasattr(trt.BuilderFlag, "FP16")
    sources = {m: spec.path(m) for m in MODULES}
    if precision == "fp16" and not weak:
        from sam2trt.engine.fp16 import write_all_fp16

        sources = write_all_fp16(spec, log=log)
    typing = "weak" if weak else "strong"
    cache_path = pathlib.Path(timing_cache) if timing_cache else spec.root / TIMING_CACHE
    onnx_sha = {m: sha256_file(spec.path(m)) for m in MODULES}  # before the build: detect edits during it
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
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
        f"with TensorRT {env.tensorrt_version} ({typing}ly typed), up to {max_objects} objects")
    meta_path.unlink(missing_ok=True)  # engines.json describes complete builds only
    for module in MODULES:
        t0 = time.perf_counter()
        data = _build_one(trt, builder, logger, sources[module], profiles[module],
                          weak_fp16=weak and precision == "fp16", strongly_typed=not weak,
                          workspace_gib=workspace_gib, cache=cache)
        path = engine_paths(spec)[module]
        _write_atomic(path, data)
        log(f"wrote {path.name} ({len(data) / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s) from {sources[module].name}")
    _write_atomic(cache_path, bytes(cache.serialize()))
    from sam2trt import __version__

    meta = {
        "format_version": META_FORMAT,
        "sam2trt_version": __version__,
        "tensorrt_version": env.tensorrt_version,
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "precision": precision,
        "typing": typing,
        "max_objects": max_objects,
        "workspace_gib": workspace_gib,
        "profiles": want["profiles"],
        "onnx_sha256": onnx_sha,
        "built_from": {m: p.name for m, p in sources.items()},
        "engines": {m: p.name for m, p in engine_paths(spec).items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_atomic(meta_path, json.dumps(meta, indent=1).encode())
    log(f"wrote {meta_path}")
    return spec.root
