"""The real TensorRT and cuda-python Python bindings on a machine without a GPU.

NVIDIA publishes the bindings as small wheels on PyPI (``tensorrt-cu12-bindings``,
``tensorrt-cu13-bindings``, ``cuda-bindings``); the native TensorRT libraries
are not there. The bindings' ``tensorrt.so`` links ``libnvinfer.so.N``,
``libnvonnxparser.so.N`` and ``libnvinfer_plugin.so.N`` for a handful of C
entry points (:data:`STUB_SYMBOLS`). Stub libraries with those sonames, whose
entry points return NULL, let ``import tensorrt_bindings`` succeed: every
class, enum and method is there with its pybind11 signature in ``__doc__``,
``trt.Logger`` works, and factories fail cleanly ("factory function returned
nullptr"). cuda-bindings imports as it is; without a driver its calls return
``cudaErrorInsufficientDriver`` (35).

:func:`prepare` installs a pinned stack (``pip install --target``) and compiles
the stubs (``cc``) under a cache folder, once; later runs reuse it (a second
or so). Run ``python -m tests.real_api`` to fill the cache by hand.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Where installed stacks live (gitignored; override with SAM2TRT_API_CACHE).
CACHE = pathlib.Path(os.environ.get("SAM2TRT_API_CACHE", ROOT / ".cache" / "trt-api"))

#: C entry points ``tensorrt.so`` needs (``nm -D --undefined-only``), by library.
STUB_SYMBOLS = {
    "nvinfer": ["createInferBuilder_INTERNAL", "createInferRuntime_INTERNAL", "createInferRefitter_INTERNAL",
                "getPluginRegistry", "getBuilderPluginRegistry"],
    "nvonnxparser": ["createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getNvOnnxParserVersion"],
    "nvinfer_plugin": ["initLibNvInferPlugins"],
}


@dataclass(frozen=True)
class Stack:
    """One pinned set of wheels: TensorRT bindings of one major version and a matching cuda-bindings."""

    name: str
    trt_major: int
    requirements: tuple[str, ...]


STACKS = {
    "trt10": Stack("trt10", 10, ("tensorrt-cu12-bindings==10.13.3.9.post1", "cuda-bindings==12.9.10",
                                 "cuda-pathfinder==1.9.0")),
    "trt11": Stack("trt11", 11, ("tensorrt-cu13-bindings==11.4.0.106", "cuda-bindings==13.5.0",
                                 "cuda-pathfinder==1.9.0")),
}


class Unavailable(Exception):
    """The stack cannot be prepared here (no C compiler, no network, no wheel for this Python)."""


def _stub_source(symbols: list[str]) -> str:
    # Every entry point returns 0/NULL: factories yield nullptr, version queries 0.
    return "\n".join(f"void *{s}(void) {{ return 0; }}" for s in symbols) + "\n"


def stack_dir(stack: Stack) -> pathlib.Path:
    """The cache folder of ``stack`` for this Python (its key: Python tag + pins)."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    key = hashlib.sha256(repr((stack.requirements, STUB_SYMBOLS)).encode()).hexdigest()[:12]
    return CACHE / f"{stack.name}-{tag}-{key}"


def prepare(stack: Stack, log=print) -> dict[str, str]:
    """Install ``stack`` and its stub libraries once; return the environment to import them.

    Returns:
        ``{"PYTHONPATH": ..., "LD_LIBRARY_PATH": ...}`` for a subprocess (the
        repository root comes first on PYTHONPATH, then the installed wheels).
    Raises:
        Unavailable: no C compiler, or pip could not get the wheels (offline,
            or none built for this Python); the message says which.
    """
    final = stack_dir(stack)
    if not (final / "complete").is_file():
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise Unavailable("no C compiler (cc) to build the TensorRT stub libraries")
        tmp = final.with_name(f"{final.name}.{os.getpid()}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "lib").mkdir(parents=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
               "--no-input", "--timeout", "20", "--retries", "1", "--target", str(tmp / "site"), *stack.requirements]
        log(f"installing {' '.join(stack.requirements)}")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["pip failed"]
            raise Unavailable(f"pip could not install {', '.join(stack.requirements)} ({last[0].strip()})")
        for lib, symbols in STUB_SYMBOLS.items():
            src = tmp / "lib" / f"{lib}.c"
            src.write_text(_stub_source(symbols))
            soname = f"lib{lib}.so.{stack.trt_major}"
            proc = subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp / "lib" / soname), f"-Wl,-soname,{soname}",
                                   str(src)], capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise Unavailable(f"cc could not build {soname}: {proc.stderr.strip()[:200]}")
        (tmp / "complete").write_text("\n".join(stack.requirements) + "\n")
        if final.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(final / "site")]),
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(final / "lib"), os.environ.get("LD_LIBRARY_PATH")]))}


if __name__ == "__main__":  # pragma: no cover
    for s in STACKS.values():
        try:
            print(s.name, prepare(s))
        except Unavailable as e:
            print(f"{s.name}: unavailable: {e}", file=sys.stderr)
