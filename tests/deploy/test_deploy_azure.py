"""deploy=azure_openai against the loopback fake of Azure OpenAI, ARM and Entra ID, through the official clients
(openai's AzureOpenAI, azure-identity, azure-mgmt-cognitiveservices), tracked on the real MLflow server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import EXPERIMENT, STUDY, Project, compose, free_port, promote_run, trained_sweep
from fakes.azure_openai import AzureOpenAIFake

from sweeps.deploy import main

API_KEY = "azkey-SECRET-9c1f3e77ab"
CLIENT_SECRET = "spn-SECRET-5d2e8a41c0"
MODEL = "aoai-champion"


@pytest.fixture(scope="module")
def project(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = trained_sweep(mlflow_server, tmp_path_factory.getbasetemp() / "deploy-project")
    promote_run(project, MODEL, project.better)
    return project


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[AzureOpenAIFake]:
    with AzureOpenAIFake(tmp_path, api_key=API_KEY, client_secret=CLIENT_SECRET) as service:
        yield service


@pytest.fixture
def azure(fake: AzureOpenAIFake, project: Project, monkeypatch: pytest.MonkeyPatch) -> AzureOpenAIFake:
    """The fake, with its account in this process's environment (for in-process CLI calls)."""
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SWEEPS_OUTPUTS", str(project.root / "outputs"))
    return fake


def _args(project: Project, fake: AzureOpenAIFake, *extra: str) -> list[str]:
    return ["deploy=azure_openai", *project.overrides(MODEL), *fake.overrides(), *extra]


def _client(project: Project):
    from mlflow import MlflowClient

    return MlflowClient(project.tracking_uri)


def _all_deploy_runs(project: Project) -> list:
    client = _client(project)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], "tags.`sweeps.kind` = 'deploy'")


def _deploy_runs(project: Project, fake: AzureOpenAIFake) -> list:
    """The runs of this fake's jobs."""
    return [r for r in _all_deploy_runs(project) if r.data.tags.get("azure.job") in fake.jobs]


@pytest.mark.slow  # the trained sweep
def test_fine_tune_deploy_evaluate_resume_test_delete(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    fake = azure
    fake.rate_limited_calls = 3  # throttled chat completions are retried after Retry-After
    outputs = []

    def cli(*args: str) -> str:
        """As a user runs it, in a fresh process."""
        done = project.cli(["deploy", *args, *_args(project, fake)], **fake.env())
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    def call(*args: str) -> str:
        """The same entry point, in this process."""
        code = main([*args, *_args(project, fake)])
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
        assert code == 0, captured.err
        return captured.out

    first = cli()
    champion = _client(project).get_run(project.better)
    params = champion.data.params

    # Files: the champion's train and eval splits as chat-format JSONL, deleted once the job no longer needs them.
    assert len(fake.file_data) == 2 and fake.files == {} and sorted(fake.deleted_files) == sorted(fake.file_data)
    (job,) = fake.jobs.values()
    train = fake.file_data[job["training_file"]]
    validation = fake.file_data[job["validation_file"]]
    assert len(train) == 64 and len(validation) == 32
    assert [m["role"] for m in train[0]["messages"]] == ["system", "user", "assistant"]
    assert {e["messages"][2]["content"] for e in train} == {"negative", "positive"}
    assert "negative or positive" in train[0]["messages"][0]["content"]
    # The job: base model, suffix, hyperparameters mapped from the champion run (the multiplier within Azure's
    # recommended 0.02 to 0.2, with a note when clamped).
    assert job["model"] == "gpt-4.1-mini-2025-04-14" and job["suffix"] == "sweeps" and job["status"] == "succeeded"
    multiplier = float(params["lr"]) / 5e-5
    assert job["hyperparameters"] == {
        "n_epochs": int(params["epochs"]),
        "batch_size": int(params["batch_size"]),
        "learning_rate_multiplier": pytest.approx(min(max(multiplier, 0.02), 0.2)),
    }
    assert ("outside Azure's recommended 0.02 to 0.2" in first) == (not 0.02 <= multiplier <= 0.2)
    # The deployment, through ARM, named after the champion's registered version.
    name = f"sweeps-champion-v{_champion_version(project, MODEL)}"
    (put,) = fake.deployment_puts
    assert put["sku"] == {"name": "standard", "capacity": 50}
    assert put["properties"]["model"] == {"format": "OpenAI", "name": job["fine_tuned_model"], "version": "1"}
    assert list(fake.deployments) == [name] and fake.deployments[name]["properties"]["provisioningState"] == "Succeeded"
    assert f"evaluating deployment {name} on 32 examples" in first and "capacity 50 allows 300 requests" in first
    assert "hourly hosting fee" in first and "deploy delete" in first

    # MLflow: one run with the ids, the job's events as metrics, and the deployment's scores on the eval set.
    (run,) = _deploy_runs(project, fake)
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags["azure.job"] == job["id"] and tags["azure.fine_tuned_model"] == job["fine_tuned_model"]
    assert tags["azure.deployment"] == name and tags["deploy.source_run"] == project.better
    assert tags["dataset.test_fingerprint"] == champion.data.tags["dataset.test_fingerprint"]
    history = _client(project).get_metric_history(run.info.run_id, "ft_train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(fake.chat_answers) == 32
    expected = _scores(project, fake)
    for key in ("accuracy", "precision", "recall", "f1"):
        assert metrics[key] == pytest.approx(expected[key])
        assert f"{key:<10} {metrics[key]:>9.4f}" in first

    # A rerun re-attaches: no second upload, job, deployment or evaluation.
    cli()
    assert (len(fake.file_data), len(fake.jobs), len(fake.deployment_puts), len(fake.chat_answers)) == (2, 1, 1, 32)
    assert len(_deploy_runs(project, fake)) == 1

    # `deploy test` evaluates the deployment again into a new run; `deploy delete` removes it.
    call("test")
    assert len(fake.chat_answers) == 64
    tested = [r for r in _all_deploy_runs(project) if r.data.tags.get("deploy.action") == "test"]
    assert tested and tested[0].data.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    call("delete")
    assert fake.deployments == {}
    assert _client(project).get_run(run.info.run_id).data.tags["azure.deployment_state"] == "Deleted"

    # No secret anywhere: output, outputs/, the MLflow server's store, params and tags.
    secrets = [API_KEY, CLIENT_SECRET, *fake.tokens]
    assert fake.tokens, "the management API was called with a token from the credential chain"
    _assert_nowhere(secrets, outputs, project)


def _champion_version(project: Project, model_name: str) -> str:
    return _client(project).get_model_version_by_alias(model_name, "champion").version


def _scores(project: Project, fake: AzureOpenAIFake) -> dict[str, float]:
    """The four metrics computed here from what the fake answered for each eval text."""
    import numpy as np
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    from sweeps.champion import load_champion, load_data

    champion = load_champion(compose([*project.overrides(MODEL)]))
    _, evals = load_data(champion, None)
    answers = dict(fake.chat_answers)
    predicted = np.array([evals.label_names.index(answers[t]) for t in evals.texts])
    precision, recall, f1, _ = precision_recall_fscore_support(
        evals.labels, predicted, average="binary", zero_division=0
    )
    return {"accuracy": accuracy_score(evals.labels, predicted), "precision": precision, "recall": recall, "f1": f1}


def _assert_nowhere(secrets: list[str], outputs: list[str], project: Project) -> None:
    for text in outputs:
        for secret in secrets:
            assert secret not in text
    stores = [project.root / "outputs", *project.root.parent.glob("mlflow-server*")]
    files = [p for folder in stores for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.name == "events.log" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret leaked into {path}"
    client = _client(project)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    for run in client.search_runs([experiment.experiment_id]):
        values = " ".join([*run.data.params.values(), *run.data.tags.values()])
        for secret in secrets:
            assert secret not in values


@pytest.mark.slow  # the trained sweep
def test_rerun_reattaches_to_a_running_job(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    azure.hold_jobs = True
    args = _args(project, azure, "deploy.wait_minutes=0.002")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "is still" in err and "rerun the same command to re-attach" in err
    assert main(args) == 1
    assert len(azure.jobs) == 1 and len(azure.files) == 2  # the running job still needs its files
    azure.hold_jobs = False
    assert main(_args(project, azure)) == 0
    out = capsys.readouterr().out
    assert "re-attached to fine-tuning job" in out
    (job,) = azure.jobs.values()
    assert job["status"] == "succeeded" and azure.files == {} and len(azure.deployment_puts) == 1
    (run,) = _deploy_runs(project, azure)
    assert run.info.status == "FINISHED" and run.data.tags["azure.job"] == job["id"]


@pytest.mark.slow  # the trained sweep
def test_cancel_stops_a_running_job(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    azure.hold_jobs = True
    assert main(_args(project, azure, "deploy.wait_minutes=0.002")) == 1
    assert main(["cancel", *_args(project, azure)]) == 0
    (job,) = azure.jobs.values()
    assert job["status"] == "cancelled" and "cancelled fine-tuning job" in capsys.readouterr().out
    assert main(_args(project, azure)) == 1
    assert "cancelled; start a new one with python -m sweeps deploy --restart" in capsys.readouterr().err
    assert len(azure.jobs) == 1


@pytest.mark.slow  # the trained sweep
def test_a_failed_job_is_reported_and_replaced_only_with_restart(project: Project, azure: AzureOpenAIFake, capsys):
    azure.fail_jobs = True
    assert main(_args(project, azure)) == 1
    err = capsys.readouterr().err
    assert "failed (server_error: The fine-tuning job failed due to an internal error.)" in err
    (run,) = _deploy_runs(project, azure)
    assert run.info.status == "FAILED"
    assert main(_args(project, azure)) == 1 and len(azure.jobs) == 1
    azure.fail_jobs = False
    assert main(["--restart", *_args(project, azure)]) == 0
    assert len(azure.jobs) == 2 and len(azure.deployment_puts) == 1
    (run,) = _deploy_runs(project, azure)
    assert run.info.status == "FINISHED" and run.data.tags["azure.previous_jobs"] in azure.jobs


@pytest.mark.slow  # the trained sweep
def test_a_rejected_file_starts_no_job(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    azure.reject_files = True
    assert main(_args(project, azure)) == 1
    err = capsys.readouterr().err
    assert "Azure OpenAI rejected the train file" in err and "prohibited content" in err
    assert azure.jobs == {} and azure.deployments == {}


@pytest.mark.slow  # the trained sweep
def test_no_deployment_quota_names_the_capacity(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    azure.quota_exhausted = True
    assert main(_args(project, azure)) == 1
    err = capsys.readouterr().err
    assert "InsufficientQuota" in err and "deploy.sku_capacity" in err
    assert azure.deployments == {} and len(azure.jobs) == 1


def _unset(*names: str):
    return lambda monkeypatch, fake: [monkeypatch.delenv(name) for name in names]


def _fake(**options):
    return lambda monkeypatch, fake: [setattr(fake, k, v) for k, v in options.items()]


def _set(name: str, value):
    return lambda monkeypatch, fake: monkeypatch.setenv(name, value(fake) if callable(value) else value)


BAD_INPUT = {
    "missing endpoint": (_unset("AZURE_OPENAI_ENDPOINT"), [], "AZURE_OPENAI_ENDPOINT is not set"),
    "no key and no Entra ID credential": (
        _unset("AZURE_OPENAI_API_KEY", "AZURE_CLIENT_SECRET"),
        ["deploy.credential=environment"],
        "deploy.credential=environment: no Entra ID token for https://cognitiveservices.azure.com/.default",
    ),
    "key auth disabled (disableLocalAuth)": (
        _fake(local_auth_disabled=True),
        [],
        "refuses keys (403 AuthenticationTypeDisabled: Key based authentication is disabled",
    ),
    "throttled first probe": (_fake(throttle_models=True), [], "throttling requests (429"),
    "suffix with a dot": (None, ["deploy.suffix=imdb.v2"], "deploy.suffix=imdb.v2: up to 40 letters"),
    "suffix over 40 characters": (None, [f"deploy.suffix={'s' * 41}"], f"deploy.suffix={'s' * 41}: up to 40"),
    "sku as the portal names it": (None, ["deploy.sku_name=developer"], "standard, globalstandard, developertier"),
    "training type on a version without it": (
        None,
        ["deploy.training_type=globalstandard"],
        "deploy.api_version=2025-02-01-preview",
    ),
    "deployment name with no room for the version": (None, [f"deploy.deployment_name={'d' * 60}"], "2 to 56"),
    "missing account": (_unset("AZURE_OPENAI_ACCOUNT"), [], "AZURE_OPENAI_ACCOUNT is not set"),
    "wrong api key": (_set("AZURE_OPENAI_API_KEY", "azkey-wrong-000000"), [], "rejected the key (401"),
    "unreachable endpoint": (
        _set("AZURE_OPENAI_ENDPOINT", lambda fake: f"http://127.0.0.1:{free_port()}"),
        [],
        "AZURE_OPENAI_ENDPOINT=http://127.0.0.1:",
    ),
    "no credential": (
        _unset("AZURE_CLIENT_SECRET"),
        ["deploy.credential=environment"],
        "deploy.credential=environment",
    ),
    "unknown account": (_set("AZURE_OPENAI_ACCOUNT", "not-mine"), [], "account not-mine not found"),
    "base model that cannot be fine-tuned": (None, ["deploy.base_model=gpt-2"], "deploy.base_model=gpt-2"),
    "unmapped hyperparameter": (None, ["deploy.hyperparameters.n_epochs=passes"], "deploy.hyperparameters.n_epochs"),
    "no champion": (None, ["registry.model_name=nobody"], "registry.model_name=nobody"),
    "unknown target": (None, ["deploy=azure"], "deploy=azure: no such option"),
    "no target": (None, ["deploy=none"], "deploy=none: nothing to deploy"),
    "value in an env-name field": (None, ["deploy.api_key_env=sk-123"], "deploy.api_key_env=sk-123"),
}


@pytest.mark.slow  # the trained sweep
@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_reported_before_anything_is_created(
    case: str, project: Project, azure: AzureOpenAIFake, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    change, overrides, expected = BAD_INPUT[case]
    if change:
        change(monkeypatch, azure)
    before = len(_all_deploy_runs(project))
    target = overrides[:1] if overrides[:1] and overrides[0].startswith("deploy=") else []
    argv = [*overrides, *project.overrides(MODEL)] if target else [*_args(project, azure), *overrides]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert API_KEY not in err and CLIENT_SECRET not in err
    assert azure.files == {} and azure.jobs == {} and azure.deployment_puts == []
    assert len(_all_deploy_runs(project)) == before


@pytest.mark.slow  # the trained sweep
def test_delete_without_a_deployment_and_test_without_one(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    assert main(["delete", *_args(project, azure)]) == 0
    assert "nothing to delete" in capsys.readouterr().out
    assert main(["test", *_args(project, azure)]) == 2
    assert "deploy.deployment_name=sweeps-champion: no such deployment" in capsys.readouterr().err


@pytest.mark.slow  # the trained sweep
def test_the_end_of_a_sweep_promotes_its_best_trial_then_deploys(project: Project, azure: AzureOpenAIFake) -> None:
    from mlflow.exceptions import MlflowException

    from sweeps.deploy import after_sweep

    assert after_sweep(compose(project.overrides("after-sweep-none")), STUDY) is None  # deploy=none: nothing
    with pytest.raises(MlflowException):
        _client(project).get_registered_model("after-sweep-none")
    cfg = compose(["deploy=azure_openai", *project.overrides("after-sweep"), *azure.overrides()])
    promotion = after_sweep(cfg, STUDY)
    assert promotion.run_id == project.better and promotion.alias == "champion"
    (job,) = azure.jobs.values()
    assert job["status"] == "succeeded"
    served = azure.deployments[f"sweeps-champion-v{_champion_version(project, 'after-sweep')}"]
    assert served["properties"]["model"]["name"] == job["fine_tuned_model"]


def test_the_fake_rejects_what_azure_rejects(fake: AzureOpenAIFake) -> None:
    import json
    import urllib.error
    import urllib.request

    import openai
    from azure.core.exceptions import HttpResponseError
    from azure.identity import ClientSecretCredential
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
    from azure.mgmt.cognitiveservices.models import Deployment, DeploymentModel, DeploymentProperties, Sku

    client = openai.AzureOpenAI(azure_endpoint=fake.endpoint, api_key=API_KEY, api_version="2024-10-21", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(azure_endpoint=fake.endpoint, api_key="nope", api_version="2024-10-21").models.list()
    with pytest.raises(urllib.error.HTTPError) as no_version:  # no api-version: Azure answers 404
        urllib.request.urlopen(urllib.request.Request(f"{fake.endpoint}/openai/files", headers={"api-key": API_KEY}))
    assert no_version.value.code == 404 and json.loads(no_version.value.read())["error"]["code"] == "404"
    good = b'{"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "positive"}]}\n'
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("train.jsonl", good), purpose="assistants")
    bad = client.files.create(
        file=("train.jsonl", b'{"messages": [{"role": "robot", "content": "x"}]}\n'), purpose="fine-tune"
    )
    rejected = client.files.retrieve(bad.id)
    assert rejected.status == "error" and "role" in rejected.status_details
    few = client.files.create(file=("train.jsonl", good * 3), purpose="fine-tune")
    assert client.files.retrieve(few.id).status == "processed"
    with pytest.raises(openai.BadRequestError, match="does not support fine-tuning"):
        client.fine_tuning.jobs.create(model="gpt-2", training_file=few.id)
    with pytest.raises(openai.BadRequestError, match="is error, not processed"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=bad.id)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=few.id)
    job = client.fine_tuning.jobs.retrieve(job.id)  # validation: too few examples
    assert job.status == "failed" and job.error.code == "invalid_training_file"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])

    credential = ClientSecretCredential(
        fake.tenant_id,
        fake.client_id,
        CLIENT_SECRET,
        authority=fake.management_endpoint,
        disable_instance_discovery=True,
        connection_verify=str(fake.ca_file),
    )
    management = CognitiveServicesManagementClient(
        credential,
        fake.subscription,
        base_url=fake.management_endpoint,
        credential_scopes=[f"{fake.management_endpoint}/.default"],
        connection_verify=str(fake.ca_file),
    )
    body = Deployment(
        sku=Sku(name="Premium", capacity=1),
        properties=DeploymentProperties(
            model=DeploymentModel(format="OpenAI", name="gpt-4o-mini-2024-07-18", version="1")
        ),
    )
    with pytest.raises(HttpResponseError) as refused:
        management.deployments.begin_create_or_update(fake.resource_group, fake.account, "d", body).result()
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidSkuName"
    with pytest.raises(HttpResponseError) as missing:
        management.accounts.get(fake.resource_group, "someone-else")
    assert missing.value.status_code == 404 and missing.value.error.code == "ResourceNotFound"

    # ARM keeps a deployment's model; our hint for that refusal does not blame the SKU.
    from sweeps.azure_openai.arm import _hint

    def model(name: str) -> Deployment:
        return Deployment(
            sku=Sku(name="standard", capacity=1),
            properties=DeploymentProperties(model=DeploymentModel(format="OpenAI", name=name, version="1")),
        )

    operations = management.deployments
    operations.begin_create_or_update(fake.resource_group, fake.account, "d2", model("gpt-4o-mini-2024-07-18")).result()
    with pytest.raises(HttpResponseError) as changed:
        operations.begin_create_or_update(fake.resource_group, fake.account, "d2", model("gpt-4o-2024-08-06")).result()
    assert changed.value.status_code == 400 and changed.value.error.code == "CannotChangeDeploymentModel"
    assert "keeps the model" in _hint(changed.value, "d2") and "sku" not in _hint(changed.value, "d2").lower()
    # Five deployments of fine-tuned models per resource.
    for i in range(5):
        fake.add_deployment(f"ft{i}", f"gpt-4o-mini-2024-07-18.ft-{i}")
    with pytest.raises(HttpResponseError) as full:
        operations.begin_create_or_update(
            fake.resource_group, fake.account, "ft5", model("gpt-4o-mini-2024-07-18.ft-0")
        )
    assert full.value.status_code == 400 and "fine-tuned model deployments (5)" in str(full.value)

    # Rate limits from the capacity: the 7th request of a minute on capacity 1 is a 429 with Azure's headers.
    for _ in range(6):
        client.chat.completions.create(model="ft1", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    with pytest.raises(openai.RateLimitError) as throttled:
        client.chat.completions.create(model="ft1", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    headers = throttled.value.response.headers
    assert 0 < int(headers["retry-after"]) <= 60 and 0 < int(headers["retry-after-ms"]) <= 60_000
    assert "exceeded call rate limit" in str(throttled.value)
    # The content filter's refusal: 400, code content_filter, the prompt's categories inside.
    fake.filtered_words = {"forbidden"}
    with pytest.raises(openai.BadRequestError) as filtered:
        client.chat.completions.create(model="ft2", messages=[{"role": "user", "content": "a forbidden text"}])
    assert filtered.value.code == "content_filter" and filtered.value.body["innererror"]["content_filter_result"]
    # disableLocalAuth: keys get 403; a token for another audience gets 401.
    fake.local_auth_disabled = True
    with pytest.raises(openai.PermissionDeniedError, match="Key based authentication is disabled"):
        client.models.list()
    token = credential.get_token(f"{fake.management_endpoint}/.default").token
    keyless = openai.AzureOpenAI(
        azure_endpoint=fake.endpoint, azure_ad_token=token, api_version="2024-10-21", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError, match="audience is incorrect"):
        keyless.models.list()
    token = credential.get_token("https://cognitiveservices.azure.com/.default").token
    keyless = openai.AzureOpenAI(
        azure_endpoint=fake.endpoint, azure_ad_token=token, api_version="2024-10-21", max_retries=0
    )
    assert keyless.models.list().data


def test_a_new_champion_gets_its_own_deployment_and_the_previous_one_goes(
    project: Project, azure: AzureOpenAIFake, capsys
) -> None:
    model = "aoai-successor"
    args = ["deploy=azure_openai", *project.overrides(model), *azure.overrides()]
    others = [f"someone-else-{i}" for i in range(3)]
    for name in others:
        azure.add_deployment(name, f"gpt-4o-mini-2024-07-18.ft-{name}")
    promote_run(project, model, project.worse)
    assert main(args) == 0
    first = f"sweeps-champion-v{_champion_version(project, model)}"
    assert set(azure.deployments) == {*others, first}

    # ARM cannot change a deployment's model: the next champion version is served by a deployment of its own,
    # and the previous one is deleted once the new one has answered the eval set.
    promote_run(project, model, project.better)
    second = f"sweeps-champion-v{_champion_version(project, model)}"
    assert second != first
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert set(azure.deployments) == {*others, second}
    assert out.index(f"evaluating deployment {second}") < out.index(f"deleted deployment {first}")
    runs = {r.data.tags["azure.deployment"]: r for r in _deploy_runs(project, azure)}
    assert runs[first].data.tags["azure.deployment_state"] == "Deleted"
    assert runs[second].data.tags["azure.deployment_state"] == "Succeeded"

    # At the resource's limit of five fine-tuned deployments (the newest of sweeps' is never deleted first), the
    # next champion is one clear message and nothing changes.
    azure.add_deployment("someone-else-3", "gpt-4o-mini-2024-07-18.ft-someone-else-3")
    promote_run(project, model, project.worse)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Azure's limit of 5 per resource" in err and "Traceback" not in err
    assert second in azure.deployments and len(azure.deployments) == 5


def test_evaluation_fits_the_deployments_rate_limits(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    azure.rate_window = 0.5  # the fake's minute: capacity 1 allows 6 requests and 1,000 tokens in it
    assert main(_args(project, azure, "deploy.sku_capacity=1", "deploy.eval_size=12")) == 0
    out = capsys.readouterr().out
    assert "on 12 examples" in out and "capacity 1 allows 6 requests and 1,000 tokens a minute, so about" in out
    assert "  evaluated 12/12" in out and "[#" not in out  # plain progress lines: not a terminal
    # Throttled (429), every request waited out the service's retry-after and was answered in the end.
    assert azure.throttled and len(azure.chat_answers) == 12
    assert len(azure.throttled) < 60, "requests were retried without waiting out retry-after"
    (run,) = _deploy_runs(project, azure)
    assert run.data.metrics["eval_examples"] == 12 and run.data.metrics["content_filtered"] == 0


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise() -> None:
    import io

    from sweeps.endpoint_calls import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = Progress(20, stream)
        for i in range(20):
            progress.add(done=1, filtered=int(i == 3))
    assert terminal.getvalue().startswith("\r  [#") and terminal.getvalue().endswith("] 20/20 (1 filtered)\n")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 10 and lines[-1] == "  evaluated 20/20 (1 filtered)"


def test_a_content_filtered_prompt_is_an_unanswered_example(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    from sweeps.champion import load_champion, load_data

    _, evals = load_data(load_champion(compose(project.overrides(MODEL))), None)
    trigger = evals.texts[2][:60].lower()
    refused = sum(trigger in t.lower() for t in evals.texts)
    azure.filtered_words = {trigger}
    assert main(_args(project, azure)) == 0
    out = capsys.readouterr().out
    assert len(azure.filtered) == refused >= 1 and len(azure.chat_answers) == 32 - refused
    assert f"content filter: {refused} of 32 prompts refused" in out
    (run,) = _deploy_runs(project, azure)
    assert run.info.status == "FINISHED" and run.data.metrics["content_filtered"] == refused
    answers = _client(project).download_artifacts(run.info.run_id, "deploy/answers.jsonl", str(project.root))
    assert Path(answers).read_text().count('"content_filtered": true') == refused


def test_keyless_the_data_plane_takes_an_entra_id_token(
    project: Project, azure: AzureOpenAIFake, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    azure.local_auth_disabled = True  # the resource refuses keys: only tokens get in
    assert main(_args(project, azure)) == 0
    captured = capsys.readouterr()
    assert "AZURE_OPENAI_API_KEY is not set: signing in" in captured.out
    assert "https://cognitiveservices.azure.com/.default" in azure.token_scopes.values()
    (run,) = _deploy_runs(project, azure)
    assert run.info.status == "FINISHED" and len(azure.chat_answers) == 32
    _assert_nowhere([API_KEY, CLIENT_SECRET, *azure.tokens], [captured.out + captured.err], project)


def test_a_full_file_quota_is_one_message_and_leaves_no_file(project: Project, azure: AzureOpenAIFake, capsys):
    for i in range(49):  # room for the training file only
        azure.files[f"file-old{i}"] = {
            "id": f"file-old{i}",
            "object": "file",
            "purpose": "fine-tune",
            "status": "processed",
        }
    assert main(_args(project, azure)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds as many files as it may" in err and "Traceback" not in err
    assert len(azure.files) == 49 and len(azure.deleted_files) == 1 and azure.jobs == {}


def test_global_training_where_the_base_model_needs_it(project: Project, azure: AzureOpenAIFake, capsys) -> None:
    azure.global_only_models = {"gpt-4.1-mini-2025-04-14"}
    assert main(_args(project, azure)) == 2
    err = capsys.readouterr().err
    assert "deploy.training_type=globalstandard" in err and "Traceback" not in err
    assert azure.jobs == {} and azure.files == {}  # the refused job's files went with it
    preview = ["deploy.training_type=globalstandard", "deploy.api_version=2025-04-01-preview"]
    assert main(_args(project, azure, *preview)) == 0
    (job,) = azure.jobs.values()
    assert job["trainingType"] == "globalstandard" and job["status"] == "succeeded"


def test_the_lr_multiplier_stays_in_azures_recommended_range_unless_given(capsys) -> None:
    from sweeps.azure_openai.finetune import hyperparameters

    mapped = compose(["deploy=azure_openai"]).deploy
    params = {"epochs": "2", "batch_size": "8"}
    assert hyperparameters(mapped, {**params, "lr": "1e-3"})["learning_rate_multiplier"] == 0.2
    assert hyperparameters(mapped, {**params, "lr": "1e-7"})["learning_rate_multiplier"] == 0.02
    assert hyperparameters(mapped, {**params, "lr": "5e-6"})["learning_rate_multiplier"] == 0.1
    assert "lr 1e-07 / lr_reference 5e-05 = 0.002, outside Azure's recommended 0.02 to 0.2" in capsys.readouterr().out
    given = compose(["deploy=azure_openai", "deploy.hyperparameters.learning_rate_multiplier=5"]).deploy
    assert hyperparameters(given, {**params, "lr": "1e-3"})["learning_rate_multiplier"] == 5.0
