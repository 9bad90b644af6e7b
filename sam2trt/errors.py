"""Errors a user can act on, each with the process exit code the CLI returns.

Every error carries a one-line message that names the problem and the fix; the
CLI prints ``error: <message>`` to stderr and exits with ``exit_code``.
"""

from __future__ import annotations


class Sam2TrtError(Exception):
    """Base class: a one-line, user-facing error. ``exit_code`` is the process exit code."""

    exit_code = 1

    def __init__(self, message: str):
        if "\n" in message:
            message = " ".join(part.strip() for part in message.splitlines() if part.strip())
        super().__init__(message)


class UsageError(Sam2TrtError):
    """Malformed command line: a bad box/point string, conflicting options (exit 2)."""

    exit_code = 2


class InputError(Sam2TrtError):
    """A video, frame folder, prompt or model folder that cannot be used (exit 3)."""

    exit_code = 3


class ModelError(InputError):
    """A model folder that is missing, incomplete or from another version (exit 3)."""


class RuntimeFailure(Sam2TrtError):
    """Failure while running: decoding stopped, disk full, backend error (exit 4)."""

    exit_code = 4


class EnvironmentMissing(Sam2TrtError):
    """This machine lacks what the command needs: TensorRT, cuda-python or a CUDA GPU (exit 5)."""

    exit_code = 5


class SourceUnavailable(Sam2TrtError):
    """A live source (URL, camera, pipe) that did not answer within the open timeout (exit 6).

    Distinct from :class:`InputError` (3): the command line may be right and the
    source only down for now, so a supervisor can retry later.
    """

    exit_code = 6


class StreamLost(SourceUnavailable):
    """A live source lost mid-run and not regained within ``--reconnect`` attempts (exit 6).

    Raised after every frame received before the loss was delivered, so the
    outputs are valid up to then.
    """


class BelowThreshold(Sam2TrtError):
    """``verify``: the tested backend's J&F against the fp32 reference is below ``--min-jf`` (exit 7)."""

    exit_code = 7


class Interrupted(Sam2TrtError):
    """SIGINT / SIGTERM received; outputs were closed cleanly up to the last frame (exit 130)."""

    exit_code = 130


def as_runtime_failure(exc: BaseException, where: str = "") -> Sam2TrtError:
    """Map any exception raised while running to the one-line error the CLI reports (the one place that does).

    A :class:`Sam2TrtError` is returned as it is; ``KeyboardInterrupt`` becomes
    :class:`Interrupted`; ``MemoryError`` a :class:`RuntimeFailure` about memory;
    anything else (a backend or library error) a :class:`RuntimeFailure` naming
    its type, ``where`` (e.g. "after 12 frames") and the first line of its message.
    """
    if isinstance(exc, Sam2TrtError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"interrupted {where}".strip())
    if isinstance(exc, MemoryError):
        return RuntimeFailure("out of memory: track fewer objects at once or use a smaller model")
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return RuntimeFailure(f"{type(exc).__name__} {where}: {text}".replace("  ", " ").rstrip(": ")
                          + ": check the input and the model, or report it")
