"""Wall time a kill at 90% of a run costs, with and without resuming from the last checkpoint.

    python benchmarks/resume.py [--steps 300] [--checkpoint-every 30] [--workdir DIR]

Three runs of the same small offline recipe (a scratch GPT-2 on the shared IMDB sample, CPU): one uninterrupted
(T seconds), one killed with SIGKILL as soon as its checkpoint at 90% of the steps is written (after t_kill
seconds), then the killed one again, with resume=auto (R seconds). Without resume the rerun starts from step 0:
the kill costs t_kill (the rerun takes T again). With resume it costs t_kill + R - T (start-up, the steps after the
checkpoint, data loading again). Prints the figures and their ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SWEEPS_SHARED", ROOT.parent / "shared")).resolve()


def recipe(steps: int, every: int) -> list[str]:
    return [
        "model.init=scratch",
        "model.n_layer=2",
        "model.n_head=2",
        "model.n_embd=64",
        "compute=cpu",
        f"tokenizer.path={SHARED / 'tokenizers' / 'gpt2'}",
        "tokenizer.max_length=128",
        f"dataset.path={SHARED / 'data' / 'imdb'}",
        "dataset.train_size=400",
        "dataset.validation_size=64",
        "dataset.test_size=64",
        f"max_steps={steps}",
        f"eval_every={every}",
        f"checkpoint_every={every}",
        "tracking.log_model=false",
        "save_checkpoint=false",
    ]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPS_"))}
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "launchers"), clean.get("PYTHONPATH", "")])
    return {**clean, "PYTHONPATH": path, "SWEEPS_SHARED": str(SHARED), "HF_HUB_OFFLINE": "1"}


def run(cwd: Path, args: list[str]) -> float:
    began = time.perf_counter()
    command = [sys.executable, "-m", "sweeps", "train", *args]
    done = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the run failed (status {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


def killed_at(cwd: Path, args: list[str], step: int) -> float:
    """Seconds until the run's checkpoint at `step` is written, when it is killed."""
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sweeps", "train", *args], cwd=cwd, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while not any(cwd.glob(f"outputs/runs/*/checkpoints/step-{step:08d}")):
        if proc.poll() is not None:
            raise SystemExit(f"the run ended (status {proc.returncode}) before its checkpoint at step {step}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--checkpoint-every", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=None)
    opts = parser.parse_args()
    kill_step = (int(opts.steps * 0.9) // opts.checkpoint_every) * opts.checkpoint_every
    args = recipe(opts.steps, opts.checkpoint_every)
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="sweeps-resume-"))
    whole, killed = work / "whole", work / "killed"
    whole.mkdir(parents=True, exist_ok=True)
    killed.mkdir(parents=True, exist_ok=True)
    uninterrupted = run(whole, args)
    t_kill = killed_at(killed, args, kill_step)
    resumed = run(killed, [*args, "resume=auto"])
    lost_without = t_kill
    lost_with = t_kill + resumed - uninterrupted
    print(f"run of {opts.steps} steps, checkpoint every {opts.checkpoint_every}, killed after step {kill_step}")
    print(f"uninterrupted run               {uninterrupted:8.1f} s")
    print(f"killed after                    {t_kill:8.1f} s")
    print(f"rerun with resume=auto          {resumed:8.1f} s")
    print(f"wall time lost, without resume  {lost_without:8.1f} s (the rerun starts at step 0)")
    print(f"wall time lost, with resume     {lost_with:8.1f} s")
    print(f"ratio                           {lost_without / max(lost_with, 1e-9):8.1f}x less lost with resume")


if __name__ == "__main__":
    main()
