"""A trial that sleeps, reports a curve to the sweeper (sweeps.channel) and returns its last value."""

from __future__ import annotations

import json
import os
import signal
import time

import hydra
import optuna
from omegaconf import DictConfig

from sweeps import channel
from sweeps.errors import ConfigError


def record(cfg: DictConfig, event: str, **fields: object) -> None:
    if cfg.record:
        line = {"event": event, "trial": _number(), "pid": os.getpid()}
        line["parent_run"] = channel.parent_run_id()
        line.update(time=time.time(), x=cfg.x, y=cfg.y, **fields)
        with open(cfg.record, "a") as f:
            f.write(json.dumps(line) + "\n")


def _number() -> int:
    number = channel.trial_number()
    return -1 if number is None else number


def curve(cfg: DictConfig, step: int) -> float:
    if cfg.x > cfg.bad_above:
        return 10.0 - 0.01 * step
    return (cfg.x - 0.3) ** 2 + 1.0 / step


def extra_space(cfg: DictConfig, trial: optuna.Trial) -> None:
    """custom_search_space: one more parameter, suggested in Python."""
    trial.suggest_int("y", 1, 3)


def preflight(cfg: DictConfig) -> None:
    if cfg.preflight_rejects:
        raise ConfigError("preflight_rejects=true: the preflight check refuses this sweep; set it to false")


@hydra.main(version_base=None, config_path=".", config_name="trial")
def main(cfg: DictConfig) -> float | list[float]:
    number = _number()
    durations = list(cfg.durations)
    duration = durations[min(number, len(durations) - 1)] if number >= 0 else durations[0]
    record(cfg, "start")
    value = float("nan")
    for step in range(1, cfg.steps + 1):
        time.sleep(duration / cfg.steps)
        if cfg.fail_all or number in cfg.fail_trials:
            raise RuntimeError(f"deliberate failure in trial {number}")
        if number in cfg.crash_trials:
            os.kill(os.getpid(), signal.SIGKILL)
        value = curve(cfg, step)
        channel.report(step, value)
        record(cfg, "step", step=step)
        if channel.pruned():
            break
    record(cfg, "end", value=value)
    return [value, float(cfg.x)] if cfg.multi else value


if __name__ == "__main__":
    main()
