"""Ctrl-C and SIGTERM while a sweep runs: both stop it as KeyboardInterrupt, at a moment that is safe."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Deferred:
    """Ctrl-C and SIGTERM noted while `active()`, and raised by `check()` between storage writes, never in the
    middle of one."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextmanager
    def active(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.signal is None:
                log.warning(f"{signal.Signals(signum).name}: stopping the sweep")
            self.signal = signum

        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def check(self) -> None:
        """KeyboardInterrupt once a signal came."""
        if self.signal is not None:
            raise KeyboardInterrupt(signal.Signals(self.signal).name)


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the sweep as Ctrl-C does (trials marked, jobs ended)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored: the sweep is stopping already."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
