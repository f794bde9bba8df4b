"""How a run is stopped from outside: the sweeper's prune decision (read through sweeps.channel), and SIGTERM or
Ctrl-C (a launcher pruning or cancelling the trial, or the user)."""

from __future__ import annotations

import signal
import threading

from sweeps import distributed


class Pruned(Exception):
    """The sweeper pruned this trial at `step`."""

    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step


class StopSignals:
    """SIGTERM (a launcher pruning or cancelling the trial) stops the run as Ctrl-C does. One process stops at
    once (KeyboardInterrupt); several ranks stop together at the next step (SIGINT too), so that none is left
    waiting in a collective for a rank that has gone."""

    def __init__(self, ranks: distributed.Ranks, device: str) -> None:
        self.ranks, self.device = ranks, device
        self.received: int | None = None
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT) if ranks.world > 1 else (signal.SIGTERM,):
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.ranks.world == 1:
            raise KeyboardInterrupt(f"signal {signum}")
        self.received = signum

    def stopped(self) -> bool:
        """Whether any rank received a stop signal (every rank calls it at the same step)."""
        return self.ranks.world > 1 and distributed.any_rank(self.received is not None, self.ranks, self.device)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
