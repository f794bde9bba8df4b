"""What the tests share: the ../shared data, tiny offline model overrides, CLI runs as real subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SWEEPS_SHARED", ROOT.parent / "shared")).resolve()
IMDB = SHARED / "data" / "imdb"
SST2 = SHARED / "data" / "sst2"
GPT2_TOKENIZER = SHARED / "tokenizers" / "gpt2"

# A model small enough to train in seconds on a CPU.
TINY = [
    "model.init=scratch",
    "model.layers=2",
    "model.heads=2",
    "model.hidden=64",
    "model.dropout=0.0",
    "compute=cpu",
    f"tokenizer.path={GPT2_TOKENIZER}",
    "tokenizer.max_length=128",
]
OFFLINE_IMDB = [*TINY, f"dataset.path={IMDB}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would give: no tracking URI, Hub out of reach, the shared folder named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPS_"))}
    env.update(SWEEPS_SHARED=str(SHARED), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """`python -m sweeps ARGS` as a user runs it, in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_http(url: str, timeout: float = 300.0, proc: subprocess.Popen | None = None) -> None:
    """Wait for `url` to answer 200, as long as `proc` (the server) runs. The bound is a safety net for a hang, not
    a speed test: a server that has exited fails at once, one that starts slowly on a loaded machine is waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server for {url} exited with status {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
