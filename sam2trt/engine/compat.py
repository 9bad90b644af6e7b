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

Preprocessing engines. ``build-engines`` also writes the two variants of the
preprocessing graph (:mod:`sam2trt.preprocess_graph`) and their engines
(:data:`PREPROCESS_VARIANTS`), recorded in ``engines.json`` under
``"preprocess"``, with their frame-size optimization profile under
``"frame_size_profile"`` (:class:`FrameSizeProfile`). When the record has
them, their engine files and ONNX sha256 are checked like the modules'. A
record without them (engines built before they existed; same
``format_version``) is still usable: the TensorRT backend then preprocesses on
the host with PIL, and rerunning ``build-engines`` (no ``--force`` needed)
adds them. :meth:`FrameSizeProfile.check` refuses a frame size outside the
profile.
"""

from __future__ import annotations

import enum
import json
import os
import pathlib
from dataclasses import dataclass

from sam2trt import platform
from sam2trt.errors import EnvironmentMissing, ModelError, Sam2TrtError
from sam2trt.fileio import sha256_file
from sam2trt.model_spec import MODULES, ModelSpec
from sam2trt.platform import CUDA_PYTHON_HINT, TRT_INSTALL_HINT, Environment

ENGINES_JSON = "engines.json"
ENGINE_SUFFIX = ".engine"
#: ``format_version`` of ``engines.json`` written by :func:`sam2trt.engine.build.build_engines`.
META_FORMAT = 1
#: The preprocessing graph's variants: ``{name: vertical_first}``. ``<name>.onnx`` and
#: ``<name>.engine`` live in the model folder; the runner picks the variant per frame size with
#: :func:`sam2trt.tracker.processing.pil_resizes_vertically_first` (PIL's pass order).
PREPROCESS_VARIANTS = {"preprocess_horizontal_first": False, "preprocess_vertical_first": True}


def engine_paths(spec_or_dir: ModelSpec | str | os.PathLike) -> dict[str, pathlib.Path]:
    """``{module: <model folder>/<module>.engine}`` (files may not exist)."""
    root = spec_or_dir.root if isinstance(spec_or_dir, ModelSpec) else pathlib.Path(spec_or_dir)
    return {m: root / f"{m}{ENGINE_SUFFIX}" for m in MODULES}


def preprocess_paths(spec_or_dir: ModelSpec | str | os.PathLike) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
    """``{variant: (<model folder>/<variant>.onnx, <model folder>/<variant>.engine)}`` (files may not exist).

    Variants: :data:`PREPROCESS_VARIANTS`.
    """
    root = spec_or_dir.root if isinstance(spec_or_dir, ModelSpec) else pathlib.Path(spec_or_dir)
    return {v: (root / f"{v}.onnx", root / f"{v}{ENGINE_SUFFIX}") for v in PREPROCESS_VARIANTS}


@dataclass(frozen=True)
class FrameSizeProfile:
    """The frame sizes the preprocessing engines take: their optimization profile over ``H`` and ``W``.

    The engines' ``frame`` input is ``[H, W, 3]`` uint8 with ``H`` in
    ``height[0]..height[2]`` and ``W`` in ``width[0]..width[2]``, in pixels
    (``resize_h`` ``[S, H]`` and ``resize_w`` ``[S, W]`` follow); the middle
    value is the optimization profile's ``opt``, the size TensorRT tunes for.
    Per dimension, so a profile of ``max 4096 x 4096`` takes landscape and
    portrait 4K alike.

    Attributes:
        height: ``(min, opt, max)`` frame height, pixels.
        width: ``(min, opt, max)`` frame width, pixels.
    """

    height: tuple[int, int, int]
    width: tuple[int, int, int]

    def __post_init__(self):
        for name in ("height", "width"):
            v = tuple(int(x) for x in getattr(self, name))
            if len(v) != 3 or not 1 <= v[0] <= v[1] <= v[2]:
                raise ValueError(f"{name} {getattr(self, name)}: need 1 <= min <= opt <= max")
            object.__setattr__(self, name, v)

    def contains(self, height: int, width: int) -> bool:
        """Whether a ``height x width`` frame is inside the profile."""
        return self.height[0] <= height <= self.height[2] and self.width[0] <= width <= self.width[2]

    def describe(self) -> str:
        """``"32x32 to 4096x4096"`` (width x height, as video sizes are written)."""
        return f"{self.width[0]}x{self.height[0]} to {self.width[2]}x{self.height[2]}"

    def check(self, height: int, width: int) -> None:
        """Refuse a frame size outside the profile, before tracking.

        Args:
            height, width: the video's frame size, pixels.
        Raises:
            ModelError: (exit 3) one line naming the size, the profile and the fix:
                resize the video into the profile, or track with
                ``--backend onnxruntime`` (host preprocessing takes any size).
        """
        if not self.contains(int(height), int(width)):
            raise ModelError(f"frame {width}x{height} (width x height) is outside the TensorRT engines' "
                             f"frame-size profile ({self.describe()}): resize the video to fit, "
                             "or track with --backend onnxruntime")

    def to_json(self) -> dict:
        """``{"frame_height": [min, opt, max], "frame_width": [min, opt, max]}`` (``engines.json``)."""
        return {"frame_height": list(self.height), "frame_width": list(self.width)}

    @classmethod
    def from_json(cls, value) -> "FrameSizeProfile":
        """Inverse of :meth:`to_json`. Raises ``ValueError`` (or ``KeyError``/``TypeError``) on a malformed value."""
        return cls(tuple(value["frame_height"]), tuple(value["frame_width"]))

    def input_shapes(self, image_size: int) -> dict[str, tuple[tuple, tuple, tuple]]:
        """``{input: (min, opt, max)}`` of the preprocessing graph for image side ``image_size`` (``S``):
        ``frame`` ``[H, W, 3]``, ``resize_h`` ``[S, H]``, ``resize_w`` ``[S, W]``."""
        (h0, h1, h2), (w0, w1, w2), s = self.height, self.width, int(image_size)
        return {"frame": ((h0, w0, 3), (h1, w1, 3), (h2, w2, 3)),
                "resize_h": ((s, h0), (s, h1), (s, h2)),
                "resize_w": ((s, w0), (s, w1), (s, w2))}


def frame_size_profile(meta: dict | None) -> FrameSizeProfile | None:
    """The frame-size profile an ``engines.json`` record has, or None (no preprocessing engines).

    Raises:
        ValueError: the record has one, but malformed.
    """
    if not isinstance(meta, dict) or meta.get("frame_size_profile") is None:
        return None
    try:
        return FrameSizeProfile.from_json(meta["frame_size_profile"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed frame_size_profile ({e})") from None


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

    Checks, cheapest first: the record is complete, the engine files exist
    (the preprocessing engines too, when the record lists them), the GPU
    (device 0) has the same name and compute capability, TensorRT is the same
    version, and each module's (and preprocessing variant's) current ONNX file
    has the sha256 recorded at build time.

    Args:
        spec: the model folder.
        meta: parsed ``engines.json``.
        env: a :class:`sam2trt.platform.Environment`.

    Returns:
        None when compatible, else one line naming what differs and ending with
        "rerun `sam2trt build-engines <dir> --force`".
    """
    fix = rebuild_hint(spec.root)
    need = ("format_version", "tensorrt_version", "gpu", "compute_capability", "onnx_sha256")
    if not isinstance(meta, dict) or any(k not in meta for k in need) or meta.get("format_version") != META_FORMAT:
        return f"{spec.root / ENGINES_JSON} is incomplete or from another sam2trt version: {fix}"
    pre = meta.get("preprocess")
    if pre is not None:
        try:
            frame_size_profile(meta)
            pre_sha = {v: pre["variants"][v]["onnx_sha256"] for v in PREPROCESS_VARIANTS}
        except (ValueError, KeyError, TypeError):
            return f"{spec.root / ENGINES_JSON} has a malformed preprocess record: {fix}"
    missing = [p.name for p in engine_paths(spec).values() if not p.is_file()]
    if pre is not None:
        missing += [e.name for _, e in preprocess_paths(spec).values() if not e.is_file()]
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
    if pre is not None:
        for variant, (onnx_path, _) in preprocess_paths(spec).items():
            if not onnx_path.is_file() or pre_sha[variant] != sha256_file(onnx_path):
                return f"{onnx_path.name} is missing or changed since the engines were built: {fix}"
    return None


def engines_status(spec: ModelSpec, env: Environment | None = None) -> EnginesStatus:
    """Whether the TensorRT engines in ``spec.root`` can run on this machine.

    Args:
        spec: the model folder.
        env: a precomputed :func:`sam2trt.platform.detect` (default: detect now).

    Returns:
        An :class:`EnginesStatus`. Checked in order: TensorRT importable,
        cuda-python importable, a CUDA GPU visible (each missing:
        EnvironmentMissing, exit 5); then ``engines.json`` present and readable,
        and :func:`check_engines_meta` (ModelError, exit 3).
    """
    env = env if env is not None else platform.detect()
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
    try:
        frames = frame_size_profile(m)
    except ValueError:
        frames = None
    pre = (f"preprocessing on the GPU for frames {frames.describe()}" if frames is not None
           else "preprocessing on the host")
    return (f"engines: {m.get('precision')} for {m.get('gpu')} (compute capability "
            f"{m.get('compute_capability')}), TensorRT {m.get('tensorrt_version')}, "
            f"up to {m.get('max_objects')} objects, {pre}, built {m.get('created')}")
