"""The read side of ``engines.json``: can a model folder's TensorRT engines run here?

:func:`engines_status` answers with a typed :class:`EnginesStatus`. What it
finds falls in two kinds, with the exit codes of :mod:`sam2trt.errors`:

- this machine lacks what TensorRT needs (TensorRT, cuda-python, a CUDA GPU):
  :class:`~sam2trt.errors.EnvironmentMissing`, exit 5;
- the engines are missing, unreadable, stale (the ONNX changed) or built for
  another GPU or TensorRT version: :class:`~sam2trt.errors.ModelError`, exit 3.

The machine is checked first: without TensorRT no engine can be built or run
here, whatever the folder holds. Used by backend selection
(:mod:`sam2trt.runtime.select`), ``doctor`` and ``build-engines`` (is a rebuild
needed?). Needs neither TensorRT nor a GPU to answer "no" with the reason.
"""

from __future__ import annotations

import enum
import json
import os
import pathlib
from dataclasses import dataclass

from sam2trt.engine import environment
from sam2trt.engine.environment import TRT_INSTALL_HINT, Environment
from sam2trt.errors import EnvironmentMissing, ModelError, Sam2TrtError
from sam2trt.fileio import sha256_file
from sam2trt.model_spec import MODULES, ModelSpec

ENGINES_JSON = "engines.json"
ENGINE_SUFFIX = ".engine"
#: ``format_version`` of ``engines.json`` written by :func:`sam2trt.engine.build.build_engines`.
META_FORMAT = 1
CUDA_PYTHON_HINT = "pip install 'sam2trt[trt]' or pip install cuda-python"


def engine_paths(spec_or_dir: ModelSpec | str | os.PathLike) -> dict[str, pathlib.Path]:
    """``{module: <model folder>/<module>.engine}`` (files may not exist)."""
    root = spec_or_dir.root if isinstance(spec_or_dir, ModelSpec) else pathlib.Path(spec_or_dir)
    return {m: root / f"{m}{ENGINE_SUFFIX}" for m in MODULES}


def rebuild_hint(root) -> str:
    """The fix for stale engines: ``rerun `sam2trt build-engines <root> --force```."""
    return f"rerun `sam2trt build-engines {root} --force`"


class EnginesState(enum.Enum):
    """What :func:`engines_status` found, in the order it checks."""

    READY = "ready"
    TENSORRT_MISSING = "tensorrt missing"
    CUDA_PYTHON_MISSING = "cuda-python missing"
    NO_GPU = "no gpu"
    NO_ENGINES = "no engines"
    UNREADABLE = "unreadable"
    STALE = "stale or for another GPU"

    @property
    def error_class(self) -> type[Sam2TrtError] | None:
        """The error (and so the exit code) this state means when TensorRT was asked for."""
        if self is EnginesState.READY:
            return None
        if self in (EnginesState.TENSORRT_MISSING, EnginesState.CUDA_PYTHON_MISSING, EnginesState.NO_GPU):
            return EnvironmentMissing
        return ModelError


@dataclass(frozen=True)
class EnginesStatus:
    """Whether a model folder's engines can run here.

    Attributes:
        state: what was found (:class:`EnginesState`).
        reason: one line for the user; for a problem, it names the fix.
        meta: the parsed ``engines.json`` when it was readable, else None.
    """

    state: EnginesState
    reason: str
    meta: dict | None = None

    @property
    def usable(self) -> bool:
        """True when the engines can be loaded on this machine."""
        return self.state is EnginesState.READY

    def error(self) -> Sam2TrtError | None:
        """The error to raise when TensorRT was asked for: EnvironmentMissing (exit 5) or ModelError (exit 3)."""
        cls = self.state.error_class
        return None if cls is None else cls(self.reason)


def read_engines_meta(spec: ModelSpec) -> dict | None:
    """The parsed ``engines.json`` of ``spec``'s folder.

    Returns:
        The dict, or None when the file does not exist.
    Raises:
        ModelError: the file exists but is not readable JSON.
    """
    path = spec.root / ENGINES_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise ModelError(f"{path} is unreadable: {rebuild_hint(spec.root)}") from None


def check_engines_meta(spec: ModelSpec, meta: dict, env: Environment) -> str | None:
    """Whether engines described by ``meta`` (``engines.json``) fit this machine and folder.

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
    fix = rebuild_hint(spec.root)
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


def engines_status(spec: ModelSpec, env: Environment | None = None) -> EnginesStatus:
    """Whether the TensorRT engines in ``spec.root`` can run on this machine.

    Args:
        spec: the model folder.
        env: a precomputed :func:`sam2trt.engine.environment.detect` (default: detect now).

    Returns:
        An :class:`EnginesStatus`. Checked in order: TensorRT importable,
        cuda-python importable, a CUDA GPU visible (each missing:
        EnvironmentMissing, exit 5); then ``engines.json`` present and readable,
        and :func:`check_engines_meta` (ModelError, exit 3).
    """
    env = env if env is not None else environment.detect()
    if env.tensorrt_version is None:
        return EnginesStatus(EnginesState.TENSORRT_MISSING, f"TensorRT is not installed: {TRT_INSTALL_HINT}")
    if env.cuda_runtime_version is None:
        return EnginesStatus(EnginesState.CUDA_PYTHON_MISSING,
                             f"cuda-python is not installed (the TensorRT backend needs it): {CUDA_PYTHON_HINT}")
    if not env.gpus:
        return EnginesStatus(EnginesState.NO_GPU, "no CUDA GPU is visible: run on the GPU the engines were built for")
    try:
        meta = read_engines_meta(spec)
    except ModelError as e:
        return EnginesStatus(EnginesState.UNREADABLE, str(e))
    if meta is None:
        return EnginesStatus(EnginesState.NO_ENGINES, f"no TensorRT engines in {spec.root}: "
                                                      f"run `sam2trt build-engines {spec.root}` on this GPU")
    problem = check_engines_meta(spec, meta, env)
    if problem:
        return EnginesStatus(EnginesState.STALE, problem, meta)
    return EnginesStatus(EnginesState.READY, "engines match this GPU and TensorRT", meta)


def describe_engines(spec: ModelSpec) -> str | None:
    """One line on what ``engines.json`` records (for ``doctor``), or None without the file."""
    try:
        m = read_engines_meta(spec)
    except ModelError as e:
        return f"engines: {e}"
    if m is None:
        return None
    return (f"engines: {m.get('precision')} for {m.get('gpu')} (compute capability "
            f"{m.get('compute_capability')}), TensorRT {m.get('tensorrt_version')}, "
            f"up to {m.get('max_objects')} objects, built {m.get('created')}")
