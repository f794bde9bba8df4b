"""Shared fixtures: the ../shared data, CLI runs as real subprocesses, a real MLflow server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SWEEPS_SHARED", ROOT.parent / "shared")).resolve()
IMDB = SHARED / "data" / "imdb"
SST2 = SHARED / "data" / "sst2"
GPT2_TOKENIZER = SHARED / "tokenizers" / "gpt2"

# A model small enough to train in seconds on a CPU.
TINY = [
    "model.init=scratch",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
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


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture(scope="session", autouse=True)
def _shared_data_present() -> None:
    if not (IMDB / "train.jsonl").is_file() or not (GPT2_TOKENIZER / "vocab.json").is_file():
        pytest.exit(f"the shared data is missing: expected {IMDB} and {GPT2_TOKENIZER} (set SWEEPS_SHARED)", 2)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 with its own SQLite store; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=(root / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", timeout=90)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
