"""TensorRT backend: one runner per module engine, on the model's shared CUDA memory.

As in Polygraphy, loading and running are apart: :class:`EngineFromPath` is a
loader (a callable returning a deserialized ``ICudaEngine``), and
:class:`TensorRTRunner` takes an engine or a loader. The four runners of one
model share one :class:`~sam2trt.runtime.cuda_memory.CudaMemory` (stream and
pool of device blocks, :mod:`sam2trt.runtime.cuda_memory`). Each runner owns,
from ``__enter__`` to ``__exit__``, its execution context and, for every I/O
tensor, one device buffer and one pinned host buffer sized for the *largest*
shape of the engine's optimization profile, so nothing is allocated per call.

What crosses PCIe (``infer(feed, keep=...)``):

- Host inputs (NumPy arrays) are copied into the pinned buffer and uploaded.
- Inputs that are :class:`~sam2trt.runtime.cuda_memory.CudaTensor` (outputs
  kept by an earlier call, of any of the four runners) are bound by address,
  without a copy when 256-byte aligned; a (nested) list of them is gathered
  into the input buffer with device-to-device copies (the memory bank's
  frames into ``maskmem_features``).
- Outputs named in ``keep`` are written by the engine straight into a block of
  the pool and returned as ``CudaTensor``; the others are downloaded into
  pinned memory and returned as new NumPy arrays. The stream is synchronized
  only when something comes back to the host.

Preprocessing (:class:`TensorRTPreprocess`, the ``preprocess`` runner of
:class:`~sam2trt.runtime.base.ModuleRunners`) runs the preprocessing graph's
engines (:mod:`sam2trt.preprocess_graph`) on the same stream: the uint8 frame
goes up at its native size (1.3 MB at 768x576 instead of 12.6 MB of float32),
the resize weights go up once per frame size and stay on the GPU, and the
image encoder input is kept on the GPU and fed to the image encoder by address.

With the tracker core (:class:`sam2trt.tracker.FrameStepper`) this keeps the
image encoder features, the memory attention output and the memory bank's
spatial features on the GPU: per frame and object, the frame goes up, the
four low-resolution masks, scores and object pointers come down (about 1 MB),
and the chosen mask (256 KB) and the selected object pointers (16 KB) go up.

Needs TensorRT (10 or 11) and cuda-python; both are imported when an engine is
loaded or a runner is activated, so importing this module works without them.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections import OrderedDict
from typing import Collection

import numpy as np

from sam2trt.engine.compat import (PREPROCESS_VARIANTS, FrameSizeProfile, engine_paths, frame_size_profile,
                                   preprocess_paths, read_engines_meta, rebuild_hint)
from sam2trt.engine.factory import create_trt_object, import_tensorrt
from sam2trt.errors import ModelError, RuntimeFailure
from sam2trt.model_spec import MODULES, ModelSpec
from sam2trt.runtime.base import to_host
from sam2trt.runtime.cuda_memory import ALIGNMENT, CudaMemory, CudaTensor, import_cudart
from sam2trt.tracker.processing import frame_resize_weights, pil_resizes_vertically_first


class EngineFromPath:
    """Loader: deserializes an engine file written by ``sam2trt build-engines``.

    Mirrors Polygraphy's ``EngineFromPath``: calling the loader returns a new
    ``tensorrt.ICudaEngine``. The loader keeps the ``tensorrt.Runtime`` that
    deserialized it and its logger, which must outlive the engine.

    Args:
        path: the ``.engine`` file.

    Raises (when called):
        EnvironmentMissing: TensorRT is not installed.
        ModelError: the file is missing or cannot be deserialized here (built
            for another GPU or TensorRT version).
        RuntimeFailure: TensorRT could not create its runtime (no usable GPU or driver).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.runtime = self.logger = None

    def __call__(self):
        trt = import_tensorrt()
        if not self.path.is_file():
            raise ModelError(f"{self.path} not found: run `sam2trt build-engines {self.path.parent}` on this GPU")
        if self.runtime is None:
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = create_trt_object(trt.Runtime, self.logger, what="runtime")
        engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ModelError(f"TensorRT cannot load {self.path} (built for another GPU or TensorRT?): "
                             f"rerun `sam2trt build-engines {self.path.parent} --force`")
        return engine


def _leaves(value) -> tuple[list, tuple[int, ...]]:
    """Flatten a nested list of tensors/arrays: ``(leaves in C order, stacked shape)``."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise RuntimeFailure("an empty list was fed as a tensor")
        parts, shapes = [], set()
        for v in value:
            p, s = _leaves(v)
            parts += p
            shapes.add(s)
        if len(shapes) != 1:
            raise RuntimeFailure(f"tensors of different shapes {sorted(shapes)} cannot be stacked")
        return parts, (len(value),) + shapes.pop()
    shape = value.shape if isinstance(value, CudaTensor) else tuple(np.shape(value))
    return [value], shape


class TensorRTRunner:
    """Runs one module's TensorRT engine (Polygraphy's ``TrtRunner`` shape).

    Args:
        engine: a ``tensorrt.ICudaEngine``, or a loader returning one when
            called (:class:`EngineFromPath`), called at ``__enter__``.
        name: module name (default: the loader's file stem, else ``"engine"``).
        memory: the :class:`~sam2trt.runtime.cuda_memory.CudaMemory` shared with
            the model's other runners (default: a private one).

    ``infer(feed, keep=())`` takes ``{input name: value}`` -- a NumPy array
    (converted to the engine's dtype, float32 or int32), a :class:`CudaTensor`
    or a nested list of them to stack -- with shapes as in
    :mod:`sam2trt.export.modules`, within the engine's profile. It returns
    ``{output name: value}``: a :class:`CudaTensor` for names in ``keep``, a new
    float32 NumPy array otherwise.

    Raises (from ``__enter__``):
        EnvironmentMissing: TensorRT or cuda-python is not installed.
        ModelError: the loader's engine file is missing or cannot be
            deserialized here (built for another GPU or TensorRT version).
        RuntimeFailure: a CUDA call failed (out of memory, no device).
    """

    def __init__(self, engine, name: str | None = None, memory: CudaMemory | None = None):
        self._source = engine
        path = getattr(engine, "path", None)
        self.path = pathlib.Path(path) if path is not None else None
        self.name = name or (self.path.stem if self.path is not None else "engine")
        self.memory = memory or CudaMemory()
        self._acquired = False
        self._reset()

    def _fix(self, what: str) -> str:
        """``sam2trt build-engines <model folder> <what>`` (the folder when known)."""
        return f"sam2trt build-engines {self.path.parent if self.path is not None else 'MODEL_DIR'} {what}".rstrip()

    def _reset(self) -> None:
        self.engine = self.context = None
        self._pending = False
        self._device: dict[str, int] = {}
        self._host_ptr: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        self.max_shapes: dict[str, tuple[int, ...]] = {}
        self._static: dict[str, bool] = {}

    # -- lifecycle ------------------------------------------------------------
    def __enter__(self) -> "TensorRTRunner":
        trt = import_tensorrt()
        self._rt = import_cudart()
        engine = self._source() if callable(self._source) else self._source
        try:
            self.memory.acquire(self._rt)
            self._acquired = True
            self._setup(trt, engine)
        except BaseException:
            self._release()
            raise
        return self

    def _setup(self, trt, engine) -> None:
        mem = self.memory
        self.engine = engine
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeFailure(f"{self.name}: TensorRT could not create an execution context (GPU out of memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for n in names:
            is_input = self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
            (self.input_names if is_input else self.output_names).append(n)
            self.dtypes[n] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
        # Largest shapes: inputs from the profile, outputs from the context at those inputs.
        for n in self.input_names:
            shape = tuple(self.engine.get_tensor_shape(n))
            self._static[n] = -1 not in shape
            if not self._static[n]:
                shape = tuple(self.engine.get_tensor_profile_shape(n, 0)[2])
                if not self.context.set_input_shape(n, shape):
                    raise RuntimeFailure(f"{self.name}: TensorRT rejected the profile maximum {shape} of {n}")
            self.max_shapes[n] = shape
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise RuntimeFailure(f"{self.name}: output {n} has a data-dependent shape {shape}; not supported")
            self.max_shapes[n] = shape
        try:
            for n in names:
                nbytes = max(1, int(np.prod(self.max_shapes[n], dtype=np.int64)) * self.dtypes[n].itemsize)
                self._device[n] = mem.malloc(nbytes, n)
                self._host_ptr[n], raw = mem.malloc_host(nbytes, n)
                self._host[n] = raw.view(self.dtypes[n])
        except RuntimeFailure as e:
            raise RuntimeFailure(f"{self.name}: {e}") from None

    def _release(self) -> None:
        mem = self.memory
        if self._acquired:
            if mem.stream is not None:
                mem.rt.cudaStreamSynchronize(mem.stream)
            for ptr in self._device.values():
                mem.free(ptr)
            self._host.clear()  # numpy views must go before their pinned memory
            for ptr in self._host_ptr.values():
                mem.free_host(ptr)
        # Context before engine (TensorRT's destruction order); a loader keeps its runtime.
        self.context = None
        self.engine = None
        self._reset()
        if self._acquired:
            self._acquired = False
            self.memory.release()

    def __exit__(self, *exc) -> None:
        self._release()

    # -- inference --------------------------------------------------------------
    def synchronize(self) -> None:
        """Wait until everything queued by the model's runners has run (for timing)."""
        if self.context is not None:
            self.memory.synchronize()
            self._pending = False

    def _set_shape(self, n: str, shape: tuple[int, ...]) -> None:
        """Set input ``n``'s shape; one-line errors naming the fix when it is outside the profile."""
        if self._static[n]:
            if shape != self.max_shapes[n]:
                raise RuntimeFailure(f"{self.name}: input {n} has shape {shape}, the engine takes "
                                     f"{self.max_shapes[n]}: rerun `{self._fix('--force')}`")
            return
        size = int(np.prod(shape, dtype=np.int64))
        if len(shape) == len(self.max_shapes[n]) and size <= self._host[n].size \
                and self.context.set_input_shape(n, shape):
            return
        hi = self.max_shapes[n]
        if n.startswith("point_") and len(shape) == len(hi) and shape[1] > hi[1]:
            raise RuntimeFailure(f"{self.name}: {shape[1]} prompt points for one object, the engines take "
                                 f"at most {hi[1]} (a box counts as 2): give fewer points or --backend onnxruntime")
        raise RuntimeFailure(f"{self.name}: input {n} of shape {shape} is outside the engine profile (max {hi}): "
                             f"rebuild with `{self._fix('--max-objects N --force')}`")

    def _bind_input(self, n: str, value) -> None:
        """Set input ``n``'s shape and address: bind a kept tensor, gather a list of them, or upload host data."""
        rt, mem = self._rt, self.memory
        d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        parts, shape = _leaves(value)
        on_device = [isinstance(p, CudaTensor) for p in parts]
        if all(on_device):
            for p in parts:
                if p.released:
                    raise RuntimeFailure(f"{self.name}: input {n} is a released tensor (no longer on the GPU)")
                if p.dtype != self.dtypes[n]:
                    raise RuntimeFailure(f"{self.name}: input {n} is a {p.dtype} tensor, the engine takes "
                                         f"{self.dtypes[n]}")
            self._set_shape(n, shape)
            if len(parts) == 1 and parts[0].ptr % ALIGNMENT == 0:
                addr = parts[0].ptr  # zero copy
            else:
                addr, offset = self._device[n], 0
                for p in parts:
                    mem.copy(addr + offset, p.ptr, p.nbytes, d2d, f"{self.name}: gather of {n} on the GPU")
                    offset += p.nbytes
        else:
            arr = np.ascontiguousarray(to_host(value), dtype=self.dtypes[n])
            self._set_shape(n, arr.shape)
            self._host[n][:arr.size] = arr.reshape(-1)
            addr = self._device[n]
            mem.copy(addr, self._host_ptr[n], arr.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                     f"{self.name}: copy of {n} to the GPU")
        if not self.context.set_tensor_address(n, addr):
            raise RuntimeFailure(f"{self.name}: TensorRT rejected the buffer address of {n}")

    def infer(self, feed: dict, keep: Collection[str] = ()) -> dict:
        """Run the engine on ``feed``; returns every output by name.

        Args:
            feed: every input by name (NumPy array, :class:`CudaTensor`, or a
                nested list of either, stacked along new leading axes).
            keep: output names to leave on the GPU, returned as :class:`CudaTensor`.
        Returns:
            Outputs in ``keep`` as :class:`CudaTensor` (new pool blocks, written
            by the engine directly); the others as new NumPy arrays (the
            stream is synchronized before returning them).
        Raises:
            RuntimeFailure: an input is missing, its shape is outside the engine's
                profile (e.g. more objects than ``--max-objects`` at build time),
                or TensorRT/CUDA fails.
        """
        if self.context is None:
            raise RuntimeFailure(f"{self.name}: runner used outside its `with` block")
        rt, mem = self._rt, self.memory
        if self._pending:  # the last call's uploads from our pinned buffers may still be queued
            mem.synchronize()
            self._pending = False
        for n in self.input_names:
            if n not in feed:
                raise RuntimeFailure(f"{self.name}: input {n} missing from the feed")
            self._bind_input(n, feed[n])
        shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.output_names}
        sizes = {n: int(np.prod(shapes[n], dtype=np.int64)) for n in self.output_names}
        kept = {}
        for n in self.output_names:
            addr = self._device[n]
            if n in keep:
                block = mem.alloc(sizes[n] * self.dtypes[n].itemsize)
                kept[n] = CudaTensor(mem, block, block.ptr, shapes[n], self.dtypes[n])
                addr = block.ptr
            if not self.context.set_tensor_address(n, addr):
                raise RuntimeFailure(f"{self.name}: TensorRT rejected the buffer address of {n}")
        if not self.context.execute_async_v3(int(mem.stream)):
            raise RuntimeFailure(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
        host = [n for n in self.output_names if n not in kept]
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for n in host:
            mem.copy(self._host_ptr[n], self._device[n], sizes[n] * self.dtypes[n].itemsize, d2h,
                     f"{self.name}: copy of {n} from the GPU")
        if host:
            mem.synchronize()
        else:
            self._pending = True
        out = {}
        for n in self.output_names:
            out[n] = kept[n] if n in kept else self._host[n][:sizes[n]].reshape(shapes[n]).copy()
        return out


class TensorRTPreprocess:
    """Frame preprocessing on the GPU: the ``preprocess`` runner of :class:`~sam2trt.runtime.base.ModuleRunners`.

    Runs the preprocessing graph (:mod:`sam2trt.preprocess_graph`), which
    mirrors ``sam2.utils.misc._load_img_as_tensor`` (PIL bicubic resize to
    ``S x S``, ``/ 255``, mean/std) as two matrix products with PIL's weights.
    Holds one :class:`TensorRTRunner` per variant
    (:data:`~sam2trt.engine.compat.PREPROCESS_VARIANTS`) on the model's shared
    :class:`~sam2trt.runtime.cuda_memory.CudaMemory`, and picks the variant per
    frame size with :func:`~sam2trt.tracker.processing.pil_resizes_vertically_first`
    (the installed Pillow's pass order).

    ``infer({"frame": uint8 [H, W, 3]}, keep=("image",))`` returns
    ``{"image": [1, 3, S, S] float32}`` -- a :class:`CudaTensor` when kept, else
    a NumPy array. The resize weights ``resize_h [S, H]`` / ``resize_w [S, W]``
    (:func:`~sam2trt.tracker.processing.frame_resize_weights`) are uploaded once
    per frame size into pool blocks and bound by address on every call; the last
    :attr:`MAX_CACHED_SIZES` sizes stay on the GPU.

    Args:
        variants: ``{vertical_first: runner}`` for ``False`` and ``True`` (not yet activated).
        image_size: ``S``, the model's input side (``model.json`` ``image_size``).
        frame_sizes: the engines' frame-size profile (``engines.json``).
        root: the model folder, named in errors (optional).

    Raises (from ``__enter__``): as :class:`TensorRTRunner`, and ModelError when
    an engine's frame profile is not the one ``engines.json`` records.
    """

    name = "preprocess"
    #: Frame sizes whose resize weights stay on the GPU (a video has one size).
    MAX_CACHED_SIZES = 4

    def __init__(self, variants: dict[bool, TensorRTRunner], image_size: int, frame_sizes: FrameSizeProfile,
                 root: str | os.PathLike | None = None):
        if set(variants) != {False, True}:
            raise ValueError("need the horizontal-first (False) and vertical-first (True) runners")
        self.variants = variants
        self.image_size = int(image_size)
        self.frame_sizes = frame_sizes
        self.root = pathlib.Path(root) if root is not None else None
        self.memory = variants[False].memory
        self._weights: OrderedDict[tuple[int, int], tuple[CudaTensor, CudaTensor]] = OrderedDict()
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "TensorRTPreprocess":
        want = (self.frame_sizes.height[2], self.frame_sizes.width[2], 3)
        with contextlib.ExitStack() as stack:
            for vertical_first in (False, True):
                runner = stack.enter_context(self.variants[vertical_first])
                got = runner.max_shapes.get("frame")
                if got != want:
                    raise ModelError(f"{runner.name}: frame profile maximum {got}, engines.json says {want}: "
                                     f"{rebuild_hint(self.root or 'MODEL_DIR')}")
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._drop_weights()
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @staticmethod
    def _release(tensor: CudaTensor) -> None:
        tensor.release()

    def _drop_weights(self) -> None:
        for pair in self._weights.values():
            for t in pair:
                self._release(t)
        self._weights.clear()

    def check_frame_size(self, height: int, width: int) -> None:
        """Refuse, before tracking, a frame size outside the engines' frame-size profile.

        Args:
            height, width: the video's frame size, pixels.
        Raises:
            ModelError: (exit 3) one line: the size, the profile, the fix
                (:meth:`sam2trt.engine.compat.FrameSizeProfile.check`).
        """
        self.frame_sizes.check(height, width)

    def variant(self, height: int, width: int) -> bool:
        """Whether a ``height x width`` frame takes the vertical-first engine (PIL's pass order)."""
        return pil_resizes_vertically_first(int(height), int(width), self.image_size, self.image_size)

    def weights(self, height: int, width: int) -> tuple[CudaTensor, CudaTensor]:
        """``(resize_h [S, H], resize_w [S, W])`` float32 on the GPU for one frame size, uploaded on first use.

        Raises:
            RuntimeFailure: outside the runner's ``with`` block, or a CUDA failure.
        """
        if self._stack is None:
            raise RuntimeFailure(f"{self.name}: runner used outside its `with` block")
        key = (int(height), int(width))
        pair = self._weights.get(key)
        if pair is None:
            rh, rw = frame_resize_weights(key[0], key[1], self.image_size)
            pair = (self.memory.upload(rh, f"{self.name}: resize_h"), self.memory.upload(rw, f"{self.name}: resize_w"))
            self._weights[key] = pair
            while len(self._weights) > self.MAX_CACHED_SIZES:
                for t in self._weights.popitem(last=False)[1]:
                    self._release(t)  # stream order: engines queued before still read it first
        else:
            self._weights.move_to_end(key)
        return pair

    def synchronize(self) -> None:
        """Wait until everything queued by the model's runners has run."""
        self.variants[False].synchronize()

    def infer(self, feed: dict, keep: Collection[str] = ()) -> dict:
        """Preprocess one frame on the GPU.

        Args:
            feed: ``{"frame": uint8 [H, W, 3]}`` RGB, ``H x W`` inside the frame-size profile.
            keep: ``("image",)`` to leave the result on the GPU (for the image encoder).
        Returns:
            ``{"image": [1, 3, S, S] float32}``: a :class:`CudaTensor` when kept, else a NumPy array.
        Raises:
            ModelError: the frame size is outside the profile (:meth:`check_frame_size`).
            RuntimeFailure: the feed is not one uint8 ``[H, W, 3]`` frame, or TensorRT/CUDA fails.
        """
        frame = feed.get("frame") if set(feed) == {"frame"} else None
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
            got = ", ".join(f"{k}: {getattr(v, 'dtype', '')} {getattr(v, 'shape', type(v).__name__)}"
                            for k, v in feed.items())
            raise RuntimeFailure(f"{self.name}: the feed must be {{frame: uint8 [H, W, 3]}}, got {{{got}}}")
        h, w = frame.shape[:2]
        self.check_frame_size(h, w)
        resize_h, resize_w = self.weights(h, w)
        return self.variants[self.variant(h, w)].infer({"frame": frame, "resize_h": resize_h, "resize_w": resize_w},
                                                       keep=keep)


def make_preprocess(spec: ModelSpec, memory: CudaMemory, meta: dict | None = None) -> TensorRTPreprocess | None:
    """The (not yet activated) preprocessing runner on ``memory``, or None when the engines have none.

    Args:
        spec: the model folder.
        memory: the :class:`CudaMemory` of the model's module runners (one stream).
        meta: the parsed ``engines.json`` (default: read it).
    Returns:
        A :class:`TensorRTPreprocess` over ``<variant>.engine``, or None when
        ``engines.json`` records no preprocessing engines (built by an older
        sam2trt: frames are then preprocessed on the host).
    Raises:
        ModelError: ``engines.json`` is unreadable or its frame-size profile malformed.
    """
    meta = read_engines_meta(spec) if meta is None else meta
    try:
        frames = frame_size_profile(meta)
    except ValueError as e:
        raise ModelError(f"{spec.root}: engines.json: {e}: {rebuild_hint(spec.root)}") from None
    if frames is None:
        return None
    paths = preprocess_paths(spec)
    variants = {vf: TensorRTRunner(EngineFromPath(paths[v][1]), name=v, memory=memory)
                for v, vf in PREPROCESS_VARIANTS.items()}
    return TensorRTPreprocess(variants, spec.image_size, frames, root=spec.root)


def make_runners(spec: ModelSpec, threads: int | None = None) -> dict:
    """One (not yet activated) runner per module, on ``<model folder>/<module>.engine``, plus ``"preprocess"``.

    Each runner loads its engine with :class:`EngineFromPath` at ``__enter__``.
    All share one :class:`~sam2trt.runtime.cuda_memory.CudaMemory` (stream
    and pool), so tensors kept by one runner feed the others. The
    ``"preprocess"`` entry (:class:`TensorRTPreprocess`, :func:`make_preprocess`)
    is there when ``engines.json`` records preprocessing engines. ``threads``
    is accepted for interface parity with ONNX Runtime and ignored.

    Raises:
        ModelError: ``engines.json`` is unreadable or malformed.
    """
    paths = engine_paths(spec)
    memory = CudaMemory()
    runners: dict = {name: TensorRTRunner(EngineFromPath(paths[name]), name=name, memory=memory) for name in MODULES}
    pre = make_preprocess(spec, memory)
    if pre is not None:
        runners["preprocess"] = pre
    return runners
