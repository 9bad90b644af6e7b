"""OpenVINO backend: the exported ONNX modules on OpenVINO's CPU plugin, in fp32 or bf16.

Install with ``pip install 'sam2trt[openvino]'``; chosen with ``--backend openvino``.
It reads the same ``<module>.onnx`` files as ONNX Runtime and runs the same NumPy
tracker core: only the module runner differs.

Compile settings (documented in the README, measured in ``scripts/bench_vs_official.py``):

- ``PERFORMANCE_HINT = LATENCY`` (one stream: the modules are a chain, one
  request at a time) and ``INFERENCE_NUM_THREADS`` = ``--threads`` (default:
  OpenVINO's choice, all physical cores);
- ``INFERENCE_PRECISION_HINT`` = ``f32`` or ``bf16`` (:func:`resolve_precision`).
  OpenVINO's CPU plugin defaults to bf16 on CPUs that have it, so fp32 is
  always set explicitly. Under bf16 the mask decoder stays fp32
  (:data:`FP32_UNDER_BF16`, :func:`module_precision`);
- ``SNIPPETS_MODE = DISABLE`` for memory attention and the image encoder
  (:data:`SNIPPETS_OFF`): OpenVINO's fused attention "snippet" kernels run
  memory attention's long-key attention (4096 queries x ~28.7k keys) no faster
  in bf16 than in fp32, while separate bf16 MatMul and Softmax nodes run it
  about twice as fast; the image encoder runs as fast either way, and its bf16
  outputs deviate 5x less from fp32 without the fused element-wise kernels
  (1.4% instead of 7.8% of the output range at most);
- constant resizes computed before compiling (:func:`fold_constant_interpolations`:
  3 minutes of compile time otherwise);
- one dynamically shaped compiled model per module, plus a static one per input
  shape signature that repeats (:data:`STATIC_AFTER`): memory attention's ``T``
  and ``P`` change on every frame while the memory bank fills, then stay.
"""

from __future__ import annotations

import os
import pathlib
import threading
from typing import Collection

import numpy as np

from sam2trt import platform
from sam2trt.errors import EnvironmentMissing, Interrupted, ModelError, RuntimeFailure, UsageError
from sam2trt.model_spec import MODULES, ModelSpec, check_io_names
from sam2trt.platform import OPENVINO_INSTALL_HINT, OpenVinoInfo
from sam2trt.runtime.base import to_host

PRECISIONS = ("auto", "fp32", "bf16")
"""``--precision`` values of the OpenVINO backend."""

_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}

FP32_UNDER_BF16 = frozenset({"mask_decoder"})
"""Modules that run fp32 when ``--precision`` resolves to bf16. The mask decoder's
static-shape bf16 compile (fused "snippet" kernels on) moved its mask logits by up
to 5 against fp32 on identical inputs, and the tracked masks to IoU 0.86 from the
second tracked frame on (``tests/test_openvino.py`` bf16 case, two objects); in
fp32 it cost about 10 ms more per call (94 against 83 ms median, a loaded 2-core run). With
it fp32 and the other three modules bf16, that case holds mean IoU 0.996."""

SNIPPETS_OFF = frozenset({"image_encoder", "memory_attention"})
"""Modules compiled with ``SNIPPETS_MODE = DISABLE`` (see the module docstring)."""

INSTALL_HINT = OPENVINO_INSTALL_HINT

STATIC_AFTER = 2
"""A module with dynamic inputs runs on one dynamically shaped compiled model; the
second call with the same input shapes compiles a static model for them, used from
then on (the steady state of tracking: memory attention with a full memory bank,
the decoder and memory encoder with the same objects). Static models ran 1.7x
faster for the mask decoder and memory encoder and about 5% faster for memory
attention; compiling one takes 0.2-1 s, so shapes seen once (while the memory bank
fills) stay dynamic."""

MAX_STATIC = 8
"""At most this many static models per module (memory: each holds its own weights)."""


def import_openvino():
    """Import ``openvino``; raises :class:`EnvironmentMissing` (exit 5) with the install command if absent."""
    try:
        import openvino as ov
    except ImportError:
        raise EnvironmentMissing(f"--backend openvino needs OpenVINO, which is not installed here: {INSTALL_HINT}") from None
    return ov


def cpu_capabilities(core) -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU device (e.g. ``["BF16", "FP32", "INT8"]``)."""
    try:
        return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # no CPU plugin: nothing runs
        return []


def resolve_precision(precision: str, capabilities: Collection[str]) -> tuple[str, str]:
    """Turn ``--precision`` into the precision this CPU runs, with the reason.

    Args:
        precision: ``auto``, ``fp32`` or ``bf16``.
        capabilities: the CPU's OpenVINO ``OPTIMIZATION_CAPABILITIES`` (:func:`cpu_capabilities`).

    Returns:
        ``("fp32" | "bf16", reason)``: ``auto`` is bf16 where the CPU reports ``BF16``, else fp32.

    Raises:
        UsageError: unknown precision (exit 2).
        EnvironmentMissing: ``bf16`` asked for on a CPU without bf16 (exit 5;
            OpenVINO would silently run fp32 instead).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    has_bf16 = "BF16" in capabilities
    if precision == "bf16" and not has_bf16:
        raise EnvironmentMissing("--precision bf16: OpenVINO reports no BF16 on this CPU: use --precision fp32 or auto")
    if precision == "auto":
        return ("bf16", "the CPU reports BF16") if has_bf16 else ("fp32", "the CPU reports no BF16")
    return precision, f"asked for with --precision {precision}"


def module_precision(module: str, precision: str) -> str:
    """The precision ``module`` runs at when the model runs at ``precision`` (``fp32`` or ``bf16``).

    ``fp32`` for the modules of :data:`FP32_UNDER_BF16` under bf16, else ``precision``.
    """
    return "fp32" if precision == "bf16" and module in FP32_UNDER_BF16 else precision


def fold_constant_interpolations(core, model) -> int:
    """Replace each ``Interpolate`` whose inputs are all constants by its computed output; returns how many.

    The image encoder's position embedding is a constant bicubic resize
    (``F.interpolate(pos_embed, mode="bicubic")`` in the official Hiera
    ``_get_pos_embed``: ``[1, 96, 7, 7]`` -> ``[1, 96, 256, 256]`` for SAM 2.1
    tiny). OpenVINO's compiler would fold it with its reference
    implementation, which takes about three minutes on a 2-core CPU; run as an
    ordinary node on the CPU plugin, it takes a fraction of a second. Same
    values as ONNX Runtime's Resize within float rounding (1e-6 of the output
    range at the image encoder's outputs).

    Args:
        core: an ``openvino.Core``.
        model: an ``openvino.Model``, changed in place.
    """
    import openvino as ov
    import openvino.opset13 as ops

    folded = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Interpolate":
            continue
        sources = [op.input_value(i).get_node() for i in range(op.get_input_size())]
        if not all(src.get_type_name() == "Constant" for src in sources):
            continue
        data = sources[0]
        param = ops.parameter(data.get_output_partial_shape(0), data.get_output_element_type(0))
        op.input(0).replace_source_output(param.output(0))
        compiled = core.compile_model(ov.Model([op.output(0)], [param]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        value = compiled.create_infer_request().infer([data.get_data()])[0].copy()
        op.output(0).replace(ops.constant(value).output(0))
        folded += 1
    if folded:
        model.validate_nodes_and_infer_types()
    return folded


def compile_config(module: str, precision: str, threads: int | None) -> dict:
    """The ``compile_model`` properties of one module (see the module docstring).

    ``precision``: ``fp32`` or ``bf16``; ``threads``: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default).
    """
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if module in SNIPPETS_OFF:
        config["SNIPPETS_MODE"] = "DISABLE"
    return config


class OpenVinoRunner:
    """Runs one ONNX module on OpenVINO's CPU plugin.

    Args:
        path: the ``.onnx`` file.
        module: the module's name, one of :data:`sam2trt.model_spec.MODULES`.
        precision: ``fp32`` or ``bf16`` (already resolved, :func:`resolve_precision`).
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's, all physical cores).
        spec: the model whose ``model.json`` lists this module's input and output
            names; with it, ``__enter__`` checks the file's names against them.
        core: a shared ``openvino.Core`` (default: a new one).
        precision_reason: why this precision (for the ``backend:`` log line).

    ``__enter__`` reads and compiles the model (ModelError, exit 3, if the file is
    unreadable or its names are not the module's; RuntimeFailure, exit 4, if
    OpenVINO cannot compile it). ``infer(feed)`` returns ``{output name: array}``.
    ``cancel()`` (safe from a signal handler or another thread) stops a running
    ``infer`` (``InferRequest.cancel``), which then raises :class:`Interrupted`,
    and makes later calls raise too until ``cancel(False)``.
    """

    def __init__(self, path: str | os.PathLike, module: str, precision: str = "fp32", threads: int | None = None,
                 spec: ModelSpec | None = None, core=None, precision_reason: str = ""):
        if precision not in _OV_PRECISION:
            raise UsageError(f"unknown precision {precision!r}: use fp32 or bf16")
        self.path = pathlib.Path(path)
        self.name = module
        self.precision = precision
        self.precision_reason = precision_reason
        self.threads = threads
        self.spec = spec
        self.core = core
        self.compiled = None
        self.request = self._running = None
        self._model = None
        self._dynamic = False
        self._static: dict = {}
        self._seen: dict = {}
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self._cancelled = threading.Event()

    def __enter__(self) -> "OpenVinoRunner":
        ov = import_openvino()
        core = self.core = self.core or ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot load {self.path} ({first[:160]}): re-export the model with `sam2trt export`") from None
        self.input_names = [p.get_any_name() for p in model.inputs]
        self.output_names = [p.get_any_name() for p in model.outputs]
        if self.spec is not None:
            check_io_names(self.spec, self.name, self.input_names, self.output_names)
        try:
            fold_constant_interpolations(core, model)
            self.compiled = core.compile_model(model, "CPU", self._config())
        except Exception as e:
            raise self._compile_error(e) from None
        self._model = model
        self._dynamic = any(p.get_partial_shape().is_dynamic for p in model.inputs)
        self.request = self.compiled.create_infer_request()
        self._static, self._seen = {}, {}
        return self

    @property
    def static_shapes(self) -> list[dict]:
        """The input shapes (``{name: shape}``) that have a static compiled model of their own so far."""
        return [dict(signature) for signature in self._static]

    def _config(self) -> dict:
        return compile_config(self.name, self.precision, self.threads)

    def _compile_error(self, e: Exception) -> RuntimeFailure:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return RuntimeFailure(f"OpenVINO cannot compile {self.path} for the CPU ({first[:160]}): "
                              "try --precision fp32, or --backend onnxruntime")

    def _request_for(self, arrays: dict):
        """The infer request for these input shapes: a static compile once a signature repeats (:data:`STATIC_AFTER`)."""
        if not self._dynamic:
            return self.request
        signature = tuple((name, arrays[name].shape) for name in self.input_names if name in arrays)
        request = self._static.get(signature)
        if request is not None:
            return request
        seen = self._seen[signature] = self._seen.get(signature, 0) + 1
        if seen < STATIC_AFTER or len(self._static) >= MAX_STATIC:
            return self.request
        model = self._model.clone()
        model.reshape(dict(signature))
        try:
            request = self.core.compile_model(model, "CPU", self._config()).create_infer_request()
        except Exception as e:
            raise self._compile_error(e) from None
        self._static[signature] = request
        return request

    def __exit__(self, *exc) -> None:
        self.request = self._running = None
        self.compiled = self._model = None
        self._static = {}

    def cancel(self, flag: bool = True) -> None:
        """``flag`` True: stop a running ``infer`` and refuse later ones; False: accept calls again."""
        if not flag:
            self._cancelled.clear()
            return
        self._cancelled.set()
        request = self._running
        if request is not None:
            try:
                request.cancel()
            except Exception:  # nothing running, or the request is closing
                pass

    def infer(self, feed: dict, keep: Collection[str] = ()) -> dict[str, np.ndarray]:
        """Run the module; returns every output by name as a new NumPy array.

        Args:
            feed: every input name mapped to an array, or a nested list of arrays
                to stack (see :class:`~sam2trt.runtime.base.Runner`).
            keep: accepted for the runner interface; outputs are NumPy arrays either way.

        Raises:
            Interrupted: ``cancel()`` was called before or during the call.
            RuntimeFailure: OpenVINO cannot compile the model for a new input shape.
        """
        if self._cancelled.is_set():
            raise Interrupted("interrupted")
        arrays = {k: np.ascontiguousarray(to_host(v)) for k, v in feed.items()}
        request = self._running = self._request_for(arrays)
        try:
            # start_async + wait: the GIL is released while OpenVINO runs, and
            # InferRequest.cancel from another thread stops the request.
            request.start_async(arrays, share_inputs=True)
            if self._cancelled.is_set():  # cancelled between the check above and the start
                request.cancel()
            request.wait()
        except Exception:
            if self._cancelled.is_set():
                raise Interrupted("interrupted") from None
            raise
        if self._cancelled.is_set():
            raise Interrupted("interrupted")
        return {name: request.get_tensor(name).data.copy() for name in self.output_names}


def make_runners(spec: ModelSpec, threads: int | None = None, precision: str = "auto") -> dict[str, OpenVinoRunner]:
    """One (not yet activated) runner per module of ``spec``, sharing one ``openvino.Core``.

    Args:
        spec: the loaded model folder.
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's).
        precision: ``auto``, ``fp32`` or ``bf16`` (:func:`resolve_precision`).

    Each runner's ``precision`` is :func:`module_precision` of the resolved one:
    under bf16 the mask decoder runs fp32. The runners read and check their
    files when entered (:class:`OpenVinoRunner`).

    Raises:
        EnvironmentMissing: OpenVINO is not installed, or bf16 asked for on a CPU without it.
        UsageError: unknown precision.
    """
    ov = import_openvino()
    core = ov.Core()
    chosen, why = resolve_precision(precision, cpu_capabilities(core))
    if chosen == "bf16":
        why += f"; the {', '.join(sorted(FP32_UNDER_BF16)).replace('_', ' ')} runs fp32"
    return {name: OpenVinoRunner(spec.path(name), name, precision=module_precision(name, chosen), threads=threads,
                                 spec=spec, core=core, precision_reason=why)
            for name in MODULES}


def doctor_lines(info: OpenVinoInfo | None = None) -> list[str]:
    """The OpenVINO part of ``sam2trt doctor``: :func:`sam2trt.platform.openvino_lines`, then what ``--precision auto`` runs.

    Args:
        info: a precomputed :func:`sam2trt.platform.detect_openvino` result (default: detect now).

    Never raises: without OpenVINO the line says how to install it.
    """
    info = info or platform.detect_openvino()
    lines = platform.openvino_lines(info)
    cpu = info.device("CPU") if info.error is None else None
    if cpu is not None:
        chosen, why = resolve_precision("auto", cpu.capabilities)
        lines.append(f"  track --backend openvino --precision auto: {chosen} ({why})")
    return lines
