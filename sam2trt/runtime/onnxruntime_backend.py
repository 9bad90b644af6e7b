"""ONNX Runtime backend: one ``InferenceSession`` per module.

Session settings (documented in the README):

- ``graph_optimization_level = ORT_ENABLE_ALL`` (constant folding, fusions of
  LayerNorm / GELU / attention subgraphs, layout transforms);
- ``intra_op_num_threads`` = the ``threads`` argument, default all physical
  cores seen by ``os.cpu_count()``; ``inter_op_num_threads = 1`` and sequential
  execution (the modules are chains: parallel branches gain nothing);
- the CPU memory arena on (default), so the per-frame buffers are reused;
- log level "error": shape-merge warnings from the Hiera graph are noise.
"""

from __future__ import annotations

import os
import pathlib
from typing import Collection

import numpy as np

from sam2trt.errors import ModelError, UsageError
from sam2trt.fp16 import fp16_paths
from sam2trt.model_spec import MODULES, ModelSpec, check_io_names
from sam2trt.runtime.base import to_host


def session_options(threads: int | None = None):
    """The tuned ``onnxruntime.SessionOptions`` described in the module docstring."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


class OnnxRuntimeRunner:
    """Runs one ONNX module on ONNX Runtime's CPU execution provider.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op thread count (default: all cores).

        spec: the model whose ``model.json`` lists this module's input and output
            names; with it, ``__enter__`` checks the file's names against them.

    ``__enter__`` creates the session (raises :class:`ModelError` if the file is
    unreadable or truncated, or its names are not the module's); ``infer(feed)``
    returns ``{output name: array}``. ``cancel()`` (safe from a signal handler
    or another thread) makes a running ``infer`` stop at the next node and raise.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None,
                 spec: ModelSpec | None = None):
        self.path = pathlib.Path(path)
        self.name = self.path.stem
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]
        self.session = None
        self.spec = spec
        self._run_options = None

    def __enter__(self) -> "OnnxRuntimeRunner":
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(self.path), session_options(self.threads), providers=self.providers)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot load {self.path} ({first[:160]}): re-export the model with `sam2trt export`") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.spec is not None:
            check_io_names(self.spec, self.name, self.input_names, self.output_names)
        self._run_options = ort.RunOptions()
        return self

    def cancel(self) -> None:
        """Ask a running (and every later) ``infer`` to stop: ONNX Runtime's ``RunOptions.terminate``."""
        if self._run_options is not None:
            self._run_options.terminate = True

    def __exit__(self, *exc) -> None:
        self.session = None

    def infer(self, feed: dict, keep: Collection[str] = ()) -> dict[str, np.ndarray]:
        """Run the module; returns every output by name as a new NumPy array.

        Args:
            feed: every input name mapped to an array, or a nested list of arrays
                to stack (see :class:`~sam2trt.runtime.base.Runner`).
            keep: accepted for the runner interface; host memory is this
                backend's device memory, so outputs are NumPy arrays either way.
        """
        feed = {k: np.ascontiguousarray(to_host(v)) for k, v in feed.items()}
        outs = self.session.run(self.output_names, feed, self._run_options)
        return dict(zip(self.output_names, outs))


def make_runners(spec: ModelSpec, threads: int | None = None, precision: str = "fp32") -> dict[str, OnnxRuntimeRunner]:
    """One (not yet activated) runner per module of ``spec``.

    Args:
        spec: the loaded model folder.
        threads: intra-op threads (default: all cores).
        precision: ``"fp32"`` (default) runs the exported ``<module>.onnx``;
            ``"fp16"`` runs the mixed-precision ``<module>.fp16.onnx`` written by
            :func:`sam2trt.fp16.write_all_fp16` (float32 inputs/outputs
            either way, so the tracker feeds both the same arrays).

    Raises:
        sam2trt.errors.UsageError: unknown precision.
        ModelError: ``fp16`` asked for but a ``.fp16.onnx`` file is missing.
    """
    if precision == "fp32":
        return {name: OnnxRuntimeRunner(spec.path(name), threads=threads, spec=spec) for name in MODULES}
    if precision != "fp16":
        raise UsageError(f"unknown precision {precision!r}: use fp32 or fp16")
    paths = fp16_paths(spec)
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise ModelError(f"{', '.join(missing)} missing in {spec.root}: "
                         f"write them with `sam2trt convert-fp16 {spec.root}`")
    runners = {}
    for name in MODULES:
        runners[name] = OnnxRuntimeRunner(paths[name], threads=threads)
        runners[name].name = name
    return runners
