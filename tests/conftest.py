"""Session fixtures: the ../shared data must be there; a real MLflow server on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import GPT2_TOKENIZER, IMDB, free_port, wait_http


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
        wait_http(f"{uri}/health", timeout=300, proc=proc)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(autouse=True)
def _hydra_version_base_as_in_a_new_process():
    """Each test meets Hydra as a new process would: compose API calls elsewhere set a global version base
    (hydra.version), which would otherwise change defaults such as hydra.job.chdir for later tests."""
    from hydra import version

    base = version.VersionBase.instance()
    saved = base.version_base
    base.version_base = version._UNSPECIFIED_
    yield
    base.version_base = saved
