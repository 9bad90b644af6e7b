"""Mixed-precision ONNX: fp16 weights and compute with fp32 islands.

``sam2trt build-engines`` builds *strongly typed* networks (TensorRT 10 and
11): the precision of every layer is the type written in the ONNX graph, so an
fp16 engine is built from an fp16 ONNX file, and :data:`FP32_OPS` is the one
fp32-island policy of the project. This module writes that file
(``<module>.fp16.onnx``) from the fp32 export: ``sam2trt convert-fp16
MODEL_DIR`` (or ``build-engines``, which writes what is missing or stale). It
is a plain ONNX model that also runs in ONNX Runtime (the CPU provider inserts
casts around ops that lack fp16 kernels).

Needs ``onnx`` (imported when a file is converted). Of the package it imports
only :mod:`sam2trt.errors`, :mod:`sam2trt.fileio` and :mod:`sam2trt.model_spec`:
the ONNX Runtime backend reads its paths without the TensorRT build.

Rules (one pass over each graph, subgraphs of ``If`` included):

- Float initializers and ``Constant`` values become float16 where an fp16 op
  reads them (values beyond +-65504 saturate, inf/nan are kept); ops in
  :data:`FP32_OPS` read fp32 copies.
- Ops in :data:`FP32_OPS` ("fp32 islands") compute in float32: their float
  inputs are cast up, their outputs stay float32 and are cast down where an
  fp16 op reads them. The list, and why:

  * ``LayerNormalization`` / ``*Normalization``, ``Reduce*`` and ``Pow`` /
    ``Sqrt``: variance and mean over hundreds of channels overflow or lose all
    precision in fp16 (``x**2`` overflows for ``|x| > 256``); the decomposed
    ``LayerNorm2d`` of the memory encoder and mask decoder is
    ReduceMean -> Pow -> ReduceMean -> Sqrt.
  * ``Softmax`` / ``LogSoftmax``: attention over up to 7 x 4096 memory tokens
    sums many small terms; fp16 accumulation loses them.
  * ``Exp``, ``Sin``, ``Cos``: overflow (exp) or large arguments (the random
    Fourier point encoding); the tensors are tiny, so this is free.
  * ``Resize``, ``Range``, ``CumSum``, ``TopK``, ``OneHot``: index/scale math and
    the bilinear upsampling of mask logits that the memory encoder thresholds
    at 0; also ops without fp16 kernels in some runtimes.

  ``Erf`` (GELU) stays fp16: its output is bounded to [-1, 1] and TensorRT
  fuses GELU in fp16; its error is that of fp16 rounding of the input.
- Comparisons and other ops with float inputs but no float output run in
  fp32 if any non-constant input is fp32 (e.g. the memory encoder's
  ``upsampled logits > 0`` reads the fp32 ``Resize`` output directly), else fp16.
- ``Shape``, ``Size`` and ``Cast`` keep their inputs; ``Cast(to=float)`` keeps
  producing float32 (shape arithmetic stays exact), cast down where needed.
- Graph inputs and outputs keep their types (``keep_io_types``): float32 in and
  out, ``point_labels`` stays int32. So the runners feed the same arrays to the
  fp32 and fp16 files.

``onnxconverter_common.float16.convert_float_to_float16`` was tried first: on
these torch exports it leaves ``Cast(to=float)`` outputs typed float32 next to
fp16 tensors and retypes ``Identity``-forwarded weights, so ONNX Runtime
rejects the result ("Type Error: ... does not match expected type"). The pass
below tracks the real type of every tensor instead. NVIDIA ModelOpt's AutoCast
was tried too (README: "fp16: why the project's own converter").
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Callable

import numpy as np

from sam2trt.errors import ModelError, RuntimeFailure
from sam2trt.fileio import atomic_output, sha256_file
from sam2trt.model_spec import MODULES, ModelSpec

#: Ops computed in float32 inside an fp16 graph (see the module docstring).
FP32_OPS = frozenset({
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "LpNormalization",
    "Softmax", "LogSoftmax",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
    "Pow", "Sqrt", "Exp", "Sin", "Cos",
    "Resize", "Upsample", "Range", "CumSum", "TopK", "OneHot", "NonMaxSuppression", "RoiAlign",
})
# Ops whose inputs are read as they are (no cast): metadata and explicit casts.
_KEEP_OPS = frozenset({"Shape", "Size", "Cast", "CastLike"})
FP16_SUFFIX = ".fp16.onnx"
_META_SOURCE = "sam2trt.fp16.source_sha256"
_FP16_MAX = 65504.0


def fp16_paths(spec: ModelSpec) -> dict[str, pathlib.Path]:
    """``{module: <model folder>/<module>.fp16.onnx}`` for the four modules (files may not exist)."""
    return {m: spec.root / f"{m}{FP16_SUFFIX}" for m in MODULES}


def _to_fp16_array(a: np.ndarray) -> np.ndarray:
    """float32 -> float16, finite values saturated to +-65504, inf/nan kept."""
    a = np.asarray(a, np.float32)
    finite = np.isfinite(a)
    return np.where(finite, np.clip(a, -_FP16_MAX, _FP16_MAX), a).astype(np.float16)


class _Converter:
    """One conversion of a model (state shared by the graph and its subgraphs)."""

    def __init__(self, model):
        import onnx

        self.onnx = onnx
        self.model = model
        self.FLOAT, self.HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
        self.top = model.graph
        self.init = {t.name: t for t in self.top.initializer}
        self.init_copies: dict[str, str] = {}   # fp32 initializer -> its fp16 copy
        self.cur: dict[str, int] = {}           # tensor name -> element type after conversion
        self.orig: dict[str, int] = {}          # tensor name -> element type in the fp32 model
        self.counter = 0

    # -- preparation ------------------------------------------------------
    def _graphs(self, graph):
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == self.onnx.AttributeProto.GRAPH:
                    yield from self._graphs(attr.g)
                for g in attr.graphs:
                    yield from self._graphs(g)

    def _rename_refs(self, old: str, new: str, graph) -> None:
        for g in self._graphs(graph):
            for node in g.node:
                for i, name in enumerate(node.input):
                    if name == old:
                        node.input[i] = new

    def prepare(self) -> None:
        """Float ``Constant`` nodes -> initializers; drop ``Identity`` of initializers; record types."""
        onnx, numpy_helper = self.onnx, self.onnx.numpy_helper
        outputs = {o.name for g in self._graphs(self.top) for o in g.output}
        for g in list(self._graphs(self.top)):
            keep = []
            for node in g.node:
                if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value" \
                        and node.attribute[0].t.data_type == self.FLOAT and node.output[0] not in outputs:
                    t = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
                    self.top.initializer.append(t)
                    self.init[t.name] = self.top.initializer[-1]
                    continue
                keep.append(node)
            del g.node[:]
            g.node.extend(keep)
        keep = []
        for node in self.top.node:
            if node.op_type == "Identity" and node.input[0] in self.init and node.output[0] not in outputs:
                self._rename_refs(node.output[0], node.input[0], self.top)
                continue
            keep.append(node)
        del self.top.node[:]
        self.top.node.extend(keep)
        inferred = onnx.shape_inference.infer_shapes(self.model)
        for g in self._graphs(inferred.graph):
            for v in list(g.value_info) + list(g.input) + list(g.output):
                if v.type.HasField("tensor_type"):
                    self.orig[v.name] = v.type.tensor_type.elem_type
            for t in g.initializer:
                self.orig[t.name] = t.data_type
        for name, t in self.init.items():
            self.cur[name] = t.data_type

    # -- conversion -------------------------------------------------------
    def _new_name(self, base: str) -> str:
        self.counter += 1
        return f"{base}__fp16mix{self.counter}"

    def _as(self, name: str, dtype: int, out: list, casts: dict) -> str:
        """``name`` as a tensor of ``dtype``: itself, an fp16 initializer copy, or a new Cast."""
        if not name or self.cur.get(name) == dtype:
            return name
        if name in self.init and dtype == self.HALF and self.init[name].data_type == self.FLOAT:
            if name not in self.init_copies:
                arr = _to_fp16_array(self.onnx.numpy_helper.to_array(self.init[name]))
                copy = self.onnx.numpy_helper.from_array(arr, self._new_name(name))
                self.top.initializer.append(copy)
                self.init_copies[name] = copy.name
                self.cur[copy.name] = self.HALF
            return self.init_copies[name]
        key = (name, dtype)
        if key not in casts:
            casts[key] = self._new_name(name)
            out.append(self.onnx.helper.make_node("Cast", [name], [casts[key]], to=dtype, name=casts[key]))
            self.cur[casts[key]] = dtype
        return casts[key]

    def _is_float(self, name: str) -> bool:
        return bool(name) and self.orig.get(name) in (self.FLOAT, self.HALF)

    def convert_graph(self, graph) -> None:
        """Rewrite ``graph`` in place; its declared outputs keep their element types."""
        onnx = self.onnx
        for v in graph.input:
            self.cur[v.name] = v.type.tensor_type.elem_type
        # Outputs produced here are renamed, then restored with a final Cast/Identity.
        produced = {o for n in graph.node for o in n.output}
        final = []
        for v in graph.output:
            if v.name in produced and v.type.tensor_type.elem_type == self.FLOAT:
                src = self._new_name(v.name)
                for node in graph.node:
                    for i, o in enumerate(node.output):
                        if o == v.name:
                            node.output[i] = src
                self._rename_refs(v.name, src, graph)
                self.orig[src] = self.FLOAT
                final.append((src, v.name))
        out: list = []
        casts: dict = {}
        for node in list(graph.node):
            op = node.op_type
            float_in = [i for i, n in enumerate(node.input) if self._is_float(n)]
            float_out = [o for o in node.output if self._is_float(o)]
            subgraphs = [a for a in node.attribute if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)]
            if subgraphs:
                for a in subgraphs:
                    for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                        self.convert_graph(g)
                mode = "keep"
            elif op in _KEEP_OPS:
                mode = "keep"
            elif op in FP32_OPS:
                mode = "fp32"
            elif op == "ConstantOfShape":
                value = [a for a in node.attribute if a.name == "value"]
                if value and value[0].t.data_type == self.FLOAT:
                    arr = _to_fp16_array(onnx.numpy_helper.to_array(value[0].t))
                    value[0].t.CopyFrom(onnx.numpy_helper.from_array(arr))
                    mode = "fp16"
                else:
                    mode = "keep"
            elif not float_out:
                if not float_in:
                    mode = "keep"
                else:
                    live = [node.input[i] for i in float_in if node.input[i] not in self.init]
                    mode = "fp32" if any(self.cur.get(n) == self.FLOAT for n in live) else "fp16"
            else:
                mode = "fp16"
            if mode != "keep":
                want = self.HALF if mode == "fp16" else self.FLOAT
                for i in float_in:
                    node.input[i] = self._as(node.input[i], want, out, casts)
            for o in node.output:
                t = self.orig.get(o)
                if op == "Cast":
                    t = next(a.i for a in node.attribute if a.name == "to")
                elif op == "CastLike":
                    t = self.cur.get(node.input[1], t)
                elif mode == "fp16" and t == self.FLOAT:
                    t = self.HALF
                if t is not None:
                    self.cur[o] = t
            out.append(node)
        for src, name in final:
            if self.cur.get(src) == self.HALF:
                out.append(onnx.helper.make_node("Cast", [src], [name], to=self.FLOAT, name=name + "__to_fp32"))
            else:
                out.append(onnx.helper.make_node("Identity", [src], [name], name=name + "__identity"))
            self.cur[name] = self.FLOAT
        del graph.node[:]
        graph.node.extend(out)
        del graph.value_info[:]

    def finish(self) -> None:
        """Drop initializers nothing reads any more (fp32 weights replaced by fp16 copies)."""
        used = set()
        for g in self._graphs(self.top):
            for node in g.node:
                used.update(node.input)
            used.update(o.name for o in g.output)
        keep = [t for t in self.top.initializer if t.name in used]
        del self.top.initializer[:]
        self.top.initializer.extend(keep)


def convert_model_fp16(model):
    """Convert an fp32 ``onnx.ModelProto`` to the mixed-precision form (in place; returned).

    See the module docstring for the rules. Raises ``ValueError`` if the model
    already holds float16 tensors.
    """
    conv = _Converter(model)
    if any(t.data_type == conv.HALF for t in model.graph.initializer):
        raise ValueError("model already holds float16 weights")
    conv.prepare()
    conv.convert_graph(model.graph)
    conv.finish()
    return model


def write_fp16_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> pathlib.Path:
    """Write the mixed-precision fp16 copy of an fp32 ONNX file.

    Args:
        src: fp32 ONNX file (as exported by ``sam2trt export``).
        dst: output path (conventionally ``<module>.fp16.onnx``); written to a
            temporary sibling and renamed into place, so a failure leaves no
            partial file.

    Returns:
        ``dst`` as a Path. The file has float32 inputs and outputs (int inputs
        unchanged), fp16 weights and compute, and fp32 :data:`FP32_OPS`; its
        ``metadata_props`` record the sha256 of ``src``.

    Raises:
        sam2trt.errors.ModelError: ``src`` is unreadable or already fp16.
        sam2trt.errors.RuntimeFailure: the result fails the ONNX checker (a bug:
            please report it with the model config).
    """
    import onnx

    src, dst = pathlib.Path(src), pathlib.Path(dst)
    try:
        model = onnx.load(str(src))
    except Exception as e:
        raise ModelError(f"cannot read {src} ({type(e).__name__}): re-export the model with `sam2trt export`") from None
    try:
        convert_model_fp16(model)
    except ValueError as e:
        raise ModelError(f"{src}: {e}; convert the fp32 export, not an fp16 file") from None
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        _META_SOURCE: sha256_file(src)})
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise RuntimeFailure(f"fp16 conversion of {src.name} produced an invalid model ({first}): please report it") from None
    with atomic_output(dst) as tmp:
        onnx.save(model, tmp)
    return dst


def fp16_source_sha256(path: str | os.PathLike) -> str | None:
    """The source sha256 recorded in an fp16 file by :func:`write_fp16_onnx` (None if absent/unreadable)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    return next((p.value for p in model.metadata_props if p.key == _META_SOURCE), None)


def write_all_fp16(spec: ModelSpec, log: Callable[[str], None] = print, force: bool = False) -> dict[str, pathlib.Path]:
    """Write ``<module>.fp16.onnx`` for the four modules of ``spec``'s folder.

    A file is kept when it exists and records the sha256 of the current fp32
    file (unless ``force``).

    Returns:
        ``{module: path}`` as :func:`fp16_paths`.
    Raises:
        As :func:`write_fp16_onnx`.
    """
    paths = fp16_paths(spec)
    for module, dst in paths.items():
        src = spec.path(module)
        if not force and dst.is_file() and fp16_source_sha256(dst) == sha256_file(src):
            log(f"{dst.name} is up to date")
            continue
        t0 = time.perf_counter()
        write_fp16_onnx(src, dst)
        log(f"wrote {dst.name} ({dst.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return paths
