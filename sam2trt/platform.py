"""What this machine has: GPUs, driver, CUDA runtime, TensorRT, ONNX Runtime, OpenVINO; and how to install what is missing.

Everything is detected lazily and never raises: a missing package, library or
binary just leaves the field empty. GPUs come from cuda-python when it is
installed (``cuda.bindings.runtime``, or the older ``cuda.cudart``), else from
``nvidia-smi``; without either, no GPU is reported. OpenVINO is probed apart
(:func:`detect_openvino`): importing it and listing its devices takes a
second, which ``track`` (it calls :func:`detect` to choose a backend) should
not pay.

A leaf: imports no other ``sam2trt`` module. ``sam2trt doctor``
(:func:`sam2trt.cli.doctor_lines`) composes these lines with what the model
folder's engines say and the backend ``track`` would choose.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

#: How to install what the TensorRT backend needs (``build-engines`` and ``--backend tensorrt``).
TRT_INSTALL_HINT = ("pip install 'sam2trt[trt]' (TensorRT wheels come from NVIDIA's index: "
                    "pip install --extra-index-url https://pypi.nvidia.com tensorrt)")
#: How to install cuda-python, which the TensorRT backend also needs.
CUDA_PYTHON_HINT = "pip install 'sam2trt[trt]' or pip install cuda-python"
#: How to install ONNX Runtime (a core dependency: missing only in a broken install).
ONNXRUNTIME_INSTALL_HINT = "pip install onnxruntime"
#: How to install OpenVINO (``--backend openvino``).
OPENVINO_INSTALL_HINT = "pip install 'sam2trt[openvino]'"


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device.

    Attributes:
        name: marketing name, e.g. ``"NVIDIA H100 80GB HBM3"``.
        compute_capability: ``"major.minor"``, e.g. ``"9.0"``.
        memory_gib: total device memory, GiB.
    """

    name: str
    compute_capability: str
    memory_gib: float


@dataclass
class Environment:
    """The result of :func:`detect`.

    Attributes:
        gpus: visible CUDA devices, in CUDA order (device 0 first); empty if none.
        driver_version: NVIDIA driver version (``nvidia-smi``), or
            ``"CUDA x.y"`` (driver API version from cuda-python), or None.
        cuda_runtime_version: ``"x.y"`` of the CUDA runtime cuda-python links, or None.
        tensorrt_version: ``tensorrt.__version__``, or None when not importable.
        tensorrt_major: its major version as int (10, 11, ...), or None.
        onnxruntime_version: ``onnxruntime.__version__``, or None.
        onnxruntime_providers: available ONNX Runtime execution providers.
        gpu_source: where ``gpus`` came from: ``"cuda-python"``, ``"nvidia-smi"`` or ``None``.
    """

    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_runtime_version: str | None = None
    tensorrt_version: str | None = None
    tensorrt_major: int | None = None
    onnxruntime_version: str | None = None
    onnxruntime_providers: list[str] = field(default_factory=list)
    gpu_source: str | None = None


@dataclass(frozen=True)
class OpenVinoDevice:
    """One OpenVINO device.

    Attributes:
        name: OpenVINO's device name, e.g. ``"CPU"``, ``"GPU.0"``.
        full_name: its ``FULL_DEVICE_NAME`` (the CPU model), or ``name`` when unreadable.
        capabilities: its ``OPTIMIZATION_CAPABILITIES``, e.g. ``["FP32", "BF16", "INT8"]``
            (empty when unreadable).
    """

    name: str
    full_name: str
    capabilities: tuple[str, ...] = ()


@dataclass
class OpenVinoInfo:
    """The result of :func:`detect_openvino`.

    Attributes:
        version: ``openvino.__version__`` (e.g. ``"2025.3.0-19807-..."``), or None when not importable.
        devices: the devices ``openvino.Core().available_devices`` lists, in its order.
        error: first line of the error raised while listing devices (a broken
            install), else None.
    """

    version: str | None = None
    devices: list[OpenVinoDevice] = field(default_factory=list)
    error: str | None = None

    def device(self, name: str) -> OpenVinoDevice | None:
        """The device called ``name`` (e.g. ``"CPU"``), or None."""
        return next((d for d in self.devices if d.name == name), None)


def import_cudart():
    """The cuda-python runtime module (``cuda.bindings.runtime`` or ``cuda.cudart``), or None."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError:
        return None


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _from_cuda_python(env: Environment) -> bool:
    """Fill GPUs and CUDA versions from cuda-python; False if unusable."""
    rt = import_cudart()
    if rt is None:
        return False
    ok = rt.cudaError_t.cudaSuccess
    try:
        err, v = rt.cudaRuntimeGetVersion()
        if err == ok:
            env.cuda_runtime_version = _cuda_version(v)
        err, v = rt.cudaDriverGetVersion()
        if err == ok and v:
            env.driver_version = f"CUDA {_cuda_version(v)}"
        err, count = rt.cudaGetDeviceCount()
        if err != ok:
            return False
        for i in range(count):
            err, prop = rt.cudaGetDeviceProperties(i)
            if err != ok:
                continue
            name = prop.name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
            env.gpus.append(GpuInfo(name, f"{prop.major}.{prop.minor}", round(prop.totalGlobalMem / 2**30, 1)))
    except Exception:  # a broken driver/library: report nothing rather than fail
        env.gpus.clear()
        return False
    env.gpu_source = "cuda-python"
    return True


def _nvidia_smi() -> tuple[list[GpuInfo], str | None] | None:
    """``(gpus, driver_version)`` from ``nvidia-smi``, or None if absent or failing."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "--query-gpu=name,compute_cap,memory.total,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    gpus, driver = [], None
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        name, cc, mem, driver = parts[0], parts[1], parts[2], parts[3]
        try:
            mem_gib = round(float(mem.split()[0]) / 1024, 1)  # MiB
        except ValueError:
            mem_gib = 0.0
        gpus.append(GpuInfo(name, cc, mem_gib))
    return gpus, driver


def detect() -> Environment:
    """Probe the machine (never raises; takes well under a second).

    Returns:
        An :class:`Environment`; fields are empty/None for what is missing.
    """
    env = Environment()
    try:
        import tensorrt as trt

        env.tensorrt_version = str(trt.__version__)
        env.tensorrt_major = int(env.tensorrt_version.split(".")[0])
    except Exception:  # ImportError, or a TensorRT whose libraries fail to load
        env.tensorrt_version = env.tensorrt_major = None
    try:
        import onnxruntime as ort

        env.onnxruntime_version = ort.__version__
        env.onnxruntime_providers = list(ort.get_available_providers())
    except Exception:
        pass
    have_cuda_python = _from_cuda_python(env)
    smi = _nvidia_smi()
    if smi is not None:
        gpus, driver = smi
        if driver:
            env.driver_version = driver
        if not have_cuda_python and gpus:
            env.gpus, env.gpu_source = gpus, "nvidia-smi"
    return env


def detect_openvino() -> OpenVinoInfo:
    """Probe OpenVINO: version and devices with their precisions (never raises; about a second).

    Returns:
        An :class:`OpenVinoInfo`; ``version`` None when OpenVINO is not installed.
    """
    info = OpenVinoInfo()
    try:
        import openvino as ov
    except ImportError:
        return info
    info.version = str(ov.__version__)
    try:
        core = ov.Core()
        names = list(core.available_devices)
    except Exception as e:  # a broken install: say so, do not fail the report
        text = str(e).strip()
        info.error = text.splitlines()[0][:120] if text else type(e).__name__
        return info
    for dev in names:
        try:
            full = core.get_property(dev, "FULL_DEVICE_NAME")
            caps = tuple(str(c) for c in core.get_property(dev, "OPTIMIZATION_CAPABILITIES"))
        except Exception:
            full, caps = dev, ()
        info.devices.append(OpenVinoDevice(dev, str(full), caps))
    return info


def openvino_lines(info: OpenVinoInfo | None = None) -> list[str]:
    """The OpenVINO part of ``sam2trt doctor``: version, then one line per device with its precisions.

    Args:
        info: a precomputed :func:`detect_openvino` result (default: detect now).

    Returns:
        Lines without trailing newlines; without OpenVINO one line with its install hint.
    """
    info = info or detect_openvino()
    if info.version is None:
        return [f"OpenVINO: not installed (--backend openvino needs it: {OPENVINO_INSTALL_HINT})"]
    if info.error is not None:
        return [f"OpenVINO {info.version}: cannot list devices ({info.error})"]
    lines = [f"OpenVINO: {info.version.split('-')[0]}, devices: {', '.join(d.name for d in info.devices) or 'none'}"]
    for d in info.devices:
        precisions = ', '.join(c for c in d.capabilities if c in ('FP32', 'BF16', 'FP16', 'INT8')) or 'unknown'
        lines.append(f"  OpenVINO {d.name}: {d.full_name}; precisions {precisions}"
                     + ("" if d.name == "CPU" else " (sam2trt runs OpenVINO on the CPU only)"))
    return lines


def machine_lines(env: Environment | None = None) -> list[str]:
    """The machine part of ``sam2trt doctor``: GPUs, driver, CUDA runtime, TensorRT, ONNX Runtime.

    Args:
        env: a precomputed :func:`detect` result (default: detect now).

    Returns:
        Lines without trailing newlines; what is missing is said with its install hint.
    """
    env = env or detect()
    lines = []
    if env.gpus:
        for i, g in enumerate(env.gpus):
            lines.append(f"GPU {i}: {g.name} (compute capability {g.compute_capability}, {g.memory_gib:g} GiB)")
    else:
        lines.append("GPU: none found (no cuda-python device and no working nvidia-smi)")
    lines.append(f"NVIDIA driver: {env.driver_version or 'not found'}")
    if env.cuda_runtime_version:
        lines.append(f"CUDA runtime: {env.cuda_runtime_version} (cuda-python)")
    else:
        lines.append("CUDA runtime: cuda-python not installed (needed by the TensorRT backend: pip install 'sam2trt[trt]')")
    if env.tensorrt_version:
        lines.append(f"TensorRT: {env.tensorrt_version}")
    else:
        lines.append(f"TensorRT: not installed: {TRT_INSTALL_HINT}")
    if env.onnxruntime_version:
        lines.append(f"ONNX Runtime: {env.onnxruntime_version} (providers: {', '.join(env.onnxruntime_providers) or 'none'})")
    else:
        lines.append(f"ONNX Runtime: not installed ({ONNXRUNTIME_INSTALL_HINT})")
    return lines
