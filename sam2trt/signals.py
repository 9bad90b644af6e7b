"""SIGINT / SIGTERM handling shared by the CLI, batches and the track pipeline.

One :class:`SignalGuard` is installed for the whole command (:func:`signal_guard`
nests: inner calls reuse it). The first signal sets ``cancelled``, calls the
registered cancel callbacks (e.g. ONNX Runtime's ``RunOptions.terminate``) and,
while the guard is ``armed``, raises ``KeyboardInterrupt`` in the main thread.
Further signals are only recorded, so a second SIGTERM cannot kill a run
that is closing its outputs: the process still ends with exit 130 and one
error line.

Long module calls run outside the main thread (see :mod:`sam2trt.pipeline`),
so the main thread is always free to run the handler promptly.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalGuard:
    """State of the installed handler.

    Attributes:
        cancelled: set on the first signal (a ``threading.Event`` any thread can poll).
        armed: while True, the first signal also raises ``KeyboardInterrupt`` in the main thread.
        received: the signal numbers received, in order.
    """

    def __init__(self):
        self.cancelled = threading.Event()
        self.armed = True
        self.received: list[int] = []
        self._callbacks: list[Callable[[], None]] = []

    def __call__(self, signum, frame) -> None:
        self.received.append(signum)
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        for cb in list(self._callbacks):
            try:
                cb()
            except Exception:  # a failing cancel hook must not hide the interrupt
                pass
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt

    @property
    def pending(self) -> bool:
        """True when a signal arrived (also one that was only recorded)."""
        return self.cancelled.is_set()

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call ``callback()`` (from the signal handler) if a signal arrives inside the block."""
        self._callbacks.append(callback)
        try:
            yield
        finally:
            self._callbacks.remove(callback)

    @contextlib.contextmanager
    def disarmed(self) -> Iterator[None]:
        """Inside the block a signal is only recorded (no ``KeyboardInterrupt``): for closing outputs."""
        was, self.armed = self.armed, False
        try:
            yield
        finally:
            self.armed = was and not self.cancelled.is_set()


_active: SignalGuard | None = None


@contextlib.contextmanager
def signal_guard() -> Iterator[SignalGuard]:
    """Install a :class:`SignalGuard` for SIGINT and SIGTERM (main thread only; nests).

    Inside an active guard, or outside the main thread (where no handler can be
    installed), yields the active guard or a fresh, uninstalled one.
    """
    global _active
    if _active is not None or threading.current_thread() is not threading.main_thread():
        yield _active or SignalGuard()
        return
    guard = _active = SignalGuard()
    old = {s: signal.signal(s, guard) for s in SIGNALS}
    try:
        yield guard
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _active = None
