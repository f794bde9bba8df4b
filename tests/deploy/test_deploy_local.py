"""deploy=local: the champion served on loopback behind an OpenAI-compatible API, tested with the openai client."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from deploy_support import EXPERIMENT, Project, cli_env, free_port, promote_run, trained_sweep, wait_http

from sweeps.deploy import main

# a trained sweep, promoted and served
pytestmark = pytest.mark.slow

MODEL = "local-champion"
KEY = "serve-SECRET-key-4e1d"


@pytest.fixture(scope="module")
def project(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = trained_sweep(mlflow_server, tmp_path_factory.getbasetemp() / "deploy-project")
    promote_run(project, MODEL, project.better)
    return project


@pytest.fixture(scope="module")
def server(project: Project) -> Iterator[str]:
    """`python -m sweeps deploy deploy=local` as a user starts it; yields its base URL."""
    port = free_port()
    args = ["deploy", "deploy=local", f"deploy.port={port}", "deploy.api_key_env=SWEEPS_SERVE_KEY"]
    log = (project.root / f"serve-{port}.log").open("w")
    env = cli_env(SWEEPS_SERVE_KEY=KEY, SWEEPS_OUTPUTS=str(project.root / "outputs"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps", *args, *project.overrides(MODEL)],
        cwd=project.root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=300, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_endpoint_speaks_openai(server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    (model,) = client.models.list()
    assert model.id == MODEL and model.model_extra["alias"] == "champion"
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Answer negative or positive."}, {"role": "user", "content": "Great!"}],
    )
    assert reply.choices[0].message.content in ("negative", "positive") and reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()


def test_deploy_test_scores_the_endpoint_like_training(
    project: Project, server: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("SWEEPS_SERVE_KEY", KEY)
    monkeypatch.setenv("SWEEPS_OUTPUTS", str(project.root / "outputs"))
    port = server.rsplit(":", 1)[1]
    args = ["test", "deploy=local", f"deploy.port={port}", "deploy.api_key_env=SWEEPS_SERVE_KEY"]
    assert main([*args, *project.overrides(MODEL)]) == 0
    out = capsys.readouterr().out
    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    query = "tags.`deploy.target` = 'local' and tags.`deploy.action` = 'test'"
    (run,) = client.search_runs([experiment.experiment_id], query)
    champion = client.get_run(project.better)
    assert run.data.tags["dataset.test_fingerprint"] == champion.data.tags["dataset.test_fingerprint"]
    assert run.data.metrics["eval_examples"] == 32 and run.data.metrics["unparsed_answers"] == 0
    for key in ("accuracy", "precision", "recall", "f1"):  # the same model on the same test split
        assert run.data.metrics[key] == pytest.approx(champion.data.metrics[f"test_{key}"]), key
        assert key in out
    for found in client.search_runs([experiment.experiment_id]):
        assert KEY not in " ".join([*found.data.params.values(), *found.data.tags.values()])


def test_nothing_answering_is_bad_input(project: Project, capsys) -> None:
    port = free_port()
    assert main(["test", "deploy=local", f"deploy.port={port}", *project.overrides(MODEL)]) == 2
    err = capsys.readouterr().err
    assert f"deploy.host=127.0.0.1 deploy.port={port}: nothing answers" in err


def test_a_taken_port_and_a_missing_key_are_bad_input(project: Project, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["deploy=local", f"deploy.port={port}", *project.overrides(MODEL)]) == 2
    assert f"deploy.port={port}: cannot listen" in capsys.readouterr().err
    assert main(["deploy=local", "deploy.api_key_env=SWEEPS_NO_SUCH_KEY", *project.overrides(MODEL)]) == 2
    assert "SWEEPS_NO_SUCH_KEY is not set" in capsys.readouterr().err
    assert main(["delete", "deploy=local", *project.overrides(MODEL)]) == 2
    assert "nothing to delete" in capsys.readouterr().err
