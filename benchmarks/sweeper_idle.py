"""Slot idleness of Hydra's stock Optuna sweeper (synchronous batches) and ours (asynchronous).

    python benchmarks/sweeper_idle.py [--slots 3] [--scale 1.0] [--workdir DIR]

Both sweepers run the same 12 trials of uneven length (trial i sleeps DURATIONS[i] * scale seconds)
on the same launcher (hydra/launcher=sweeps_local with `slots` processes): the stock sweeper hands it
batches of `slots` trials, ours starts a trial whenever a slot frees up. Each trial records when it
started and ended; from those timestamps the script prints, for each sweeper, the wall time and the
fraction of slot-time left idle, (slots * wall - sum of trial durations) / (slots * wall), over the
whole sweep and over the part during which trials were still waiting to start (the end of a sweep,
when the last trials finish and nothing is left to start, idles under any scheduler).
Needs hydra-optuna-sweeper next to optuna 5: pip install --no-deps hydra-optuna-sweeper==1.3.0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DURATIONS = [12.0, 3.0, 6.0, 9.0, 4.0, 10.0, 3.0, 8.0, 6.0, 4.0, 9.0, 3.0]
APP_FLAG = "--as-trial-app"


def trial_app() -> None:
    """The Hydra app both sweepers run: sleep this trial's duration, record start and end."""
    import hydra
    from hydra.core.config_store import ConfigStore
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    ConfigStore.instance().store(
        name="bench", node={"x": 0.5, "scale": 1.0, "record": "???", "durations": DURATIONS, "sweeper": "?"}
    )

    @hydra.main(version_base=None, config_path=None, config_name="bench")
    def run(cfg: DictConfig) -> float:
        num = HydraConfig.get().job.num
        start = time.time()
        time.sleep(cfg.durations[num % len(cfg.durations)] * cfg.scale)
        end = time.time()
        with open(cfg.record, "a") as f:
            f.write(json.dumps({"sweeper": cfg.sweeper, "job": num, "start": start, "end": end}) + "\n")
        return (cfg.x - 0.3) ** 2

    sys.argv = [sys.argv[0], *sys.argv[2:]]
    run()


@dataclass
class Result:
    name: str
    wall: float
    busy: float
    idle: float
    idle_pending: float
    trials: int
    driver_s: float


def run_sweep(name: str, overrides: list[str], slots: int, scale: float, workdir: Path) -> Result:
    record = workdir / "record.jsonl"
    common = [
        f"hydra.sweep.dir={workdir / name}",
        f"record={record}",
        f"scale={scale}",
        f"sweeper={name}",
        "hydra/launcher=sweeps_local",
        f"hydra.launcher.n_jobs={slots}",
        f"hydra.sweeper.n_trials={len(DURATIONS)}",
        "x=interval(0, 1)",
    ]
    command = [sys.executable, __file__, APP_FLAG, "-m", *common, *overrides]
    began = time.monotonic()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    driver_s = time.monotonic() - began
    if done.returncode != 0:
        sys.exit(f"{name} sweep failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    rows = [r for r in rows if r["sweeper"] == name]
    first, last_start = min(r["start"] for r in rows), max(r["start"] for r in rows)
    wall = max(r["end"] for r in rows) - first
    busy = sum(r["end"] - r["start"] for r in rows)
    window = last_start - first
    busy_window = sum(max(0.0, min(r["end"], last_start) - r["start"]) for r in rows)
    return Result(
        name=name,
        wall=wall,
        busy=busy,
        idle=1 - busy / (slots * wall),
        idle_pending=1 - busy_window / (slots * window) if window > 0 else 0.0,
        trials=len(rows),
        driver_s=driver_s,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every trial's duration")
    parser.add_argument("--workdir", type=Path, help="where sweeps write (default: a temporary folder)")
    args = parser.parse_args()
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        print(
            "error: needs Hydra's stock Optuna sweeper: pip install --no-deps hydra-optuna-sweeper==1.3.0 "
            "(--no-deps keeps optuna 5; it pins optuna<3)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="sweeper_idle_") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        stock = run_sweep(
            "hydra_optuna_batches",
            ["hydra/sweeper=optuna", "hydra/sweeper/sampler=random", f"hydra.sweeper.n_jobs={args.slots}"],
            args.slots,
            args.scale,
            workdir,
        )
        ours = run_sweep(
            "sweeps_optuna_async",
            [
                "hydra/sweeper=sweeps_optuna",
                "hydra.sweeper.sampler.name=random",
                f"hydra.sweeper.workers={args.slots}",
                f"hydra.sweeper.storage=sqlite:///{workdir / 'optuna.db'}",
            ],
            args.slots,
            args.scale,
            workdir,
        )
    total = sum(DURATIONS) * args.scale
    print(f"{len(DURATIONS)} trials, {total:.0f} s of trial time in all, {args.slots} slots")
    print(f"{'sweeper':<22}{'wall s':>8}{'driver s':>10}{'idle, whole sweep':>19}{'idle, trials waiting':>22}")
    for r in (stock, ours):
        print(f"{r.name:<22}{r.wall:>8.1f}{r.driver_s:>10.1f}{r.idle:>19.1%}{r.idle_pending:>22.1%}")
    print(
        f"ours / stock: wall {ours.wall / stock.wall:.2f}, idle {ours.idle / stock.idle:.2f} (whole sweep), "
        f"{ours.idle_pending / max(stock.idle_pending, 1e-9):.2f} (while trials wait)"
    )
    goal = "met" if ours.idle_pending <= 0.05 else "missed"
    print(f"goal, ours idles <= 5% of slot-time while trials wait: {goal}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == APP_FLAG:
        trial_app()
    else:
        sys.exit(main())
