"""Bad input: one clear message naming the key and the fix, exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(Exception):
    """One or more problems with the user's input; each names the key and the fix."""

    def __init__(self, *errors: str) -> None:
        self.errors = [e for e in errors if e]
        super().__init__("\n".join(self.errors))


EXIT_BAD_INPUT = 2


class DeployError(Exception):
    """A deploy target's service refused or failed (not bad input): exit status 1."""


def report(error: ConfigError) -> None:
    """Print every problem at once, one per line, to stderr."""
    lines = error.errors
    head = "error:" if len(lines) == 1 else f"error: {len(lines)} problems:"
    if len(lines) == 1:
        print(f"{head} {lines[0]}", file=sys.stderr)
    else:
        print(head, file=sys.stderr)
        for line in lines:
            print(f"  - {line}", file=sys.stderr)


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Turn a ConfigError into its message and exit status 2 (passes through Hydra's error handler)."""
    try:
        yield
    except ConfigError as error:
        report(error)
        sys.stdout.flush()
        raise SystemExit(EXIT_BAD_INPUT) from None


_started = False


def mark_started() -> None:
    """Record that a task (or a sweep's first trial) began: Hydra failures after this are not bad input."""
    global _started
    _started = True


def started() -> bool:
    return _started
