"""deploy=azure_openai: the actions `python -m sweeps deploy` dispatches to: run (fine-tune, deploy, evaluate,
re-attaching to what exists), test (evaluate the deployment again), delete (the deployment) and cancel (running
jobs)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from sweeps.azure_openai import StillRunning
from sweeps.azure_openai.account import (
    _account,
    _account_key,
    _arm_reason,
    _check_data_plane,
    _management,
    _openai,
    _reason,
)
from sweeps.azure_openai.arm import _deploy
from sweeps.azure_openai.finetune import (
    TERMINAL,
    _checkpoints,
    _deploy_run,
    _follow,
    _job,
    _job_error,
    _spec,
    _upload,
    _wait_files,
    chat_rows,
    hyperparameters,
)
from sweeps.champion import EvalSet, chat_eval, comparison, load_champion, load_data, log_eval, system_message
from sweeps.errors import ConfigError, DeployError
from sweeps.schema.deploy import AzureOpenAIDeployConfig

if TYPE_CHECKING:
    from openai import AzureOpenAI

HOURLY_FEE = (
    "The deployment costs an hourly hosting fee while it exists, used or not; remove it with "
    "python -m sweeps deploy delete deploy=azure_openai"
)


def run(cfg: DictConfig, restart: bool = False) -> int:
    """Fine-tune, deploy and evaluate the champion's recipe on Azure OpenAI, re-attaching to what exists."""
    from sweeps import registry, tracking

    d = cfg.deploy
    account = _account(d)
    champion = load_champion(cfg)
    train, evals = load_data(champion, d.eval_size)
    hyper = hyperparameters(d, champion.run.data.params)
    client = _openai(d, account)
    _check_data_plane(d, client, account, base_model=True)
    management = _management(d, account)

    spec = _spec(d, champion, hyper, evals, account)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    mlflow_client = registry.client(cfg)
    deploy_run, resumed = _deploy_run(mlflow_client, champion, spec, key, d)
    run_id = deploy_run.info.run_id
    print(f"{'resumed' if resumed else 'started'} MLflow run {run_id} for job spec {key}", flush=True)
    folder = tracking.outputs_dir() / "deploy" / "azure_openai" / key
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + d.wait_minutes * 60
    status = "FAILED"
    try:
        system = system_message(d.system_prompt, evals.label_names)
        rows = {
            "train": chat_rows(train["text"].tolist(), train["label"].tolist(), evals.label_names, system),
            "validation": chat_rows(evals.texts, evals.labels.tolist(), evals.label_names, system),
        }
        files = _upload(client, mlflow_client, run_id, deploy_run.data.tags, rows, folder)
        _wait_files(client, mlflow_client, run_id, files, d, deadline)
        tags = mlflow_client.get_run(run_id).data.tags
        job = _job(client, mlflow_client, run_id, tags, files, spec, restart)
        job = _follow(client, mlflow_client, run_id, job, d, deadline, folder / "events.log")
        if job.status != "succeeded":
            raise DeployError(f"fine-tuning job {job.id} {job.status}{_job_error(job)}")
        mlflow_client.set_tag(run_id, "azure.fine_tuned_model", job.fine_tuned_model)
        if job.trained_tokens:
            mlflow_client.log_metric(run_id, "ft_trained_tokens", float(job.trained_tokens))
        _checkpoints(client, mlflow_client, run_id, job)
        changed = _deploy(management, account, d, job.fine_tuned_model, deadline)
        mlflow_client.set_tag(run_id, "azure.deployment", d.deployment_name)
        mlflow_client.set_tag(run_id, "azure.deployment_state", "Succeeded")
        metrics = mlflow_client.get_run(run_id).data.metrics
        if changed or "accuracy" not in metrics:
            result = _evaluate(client, d, evals)
            log_eval(mlflow_client, run_id, result, evals)
            values = result["metrics"]
        else:
            values = metrics
            print("already evaluated; python -m sweeps deploy test deploy=azure_openai evaluates again", flush=True)
        status = "FINISHED"
    except (KeyboardInterrupt, StillRunning):
        status = "KILLED"  # the work goes on at Azure; a rerun re-attaches and resumes this run
        raise
    finally:
        mlflow_client.set_terminated(run_id, status)
    print(comparison(champion, values, evals))
    print(f"deployment {d.deployment_name} serves {job.fine_tuned_model}; MLflow run {run_id}")
    print(HOURLY_FEE)
    return 0


def _evaluate(client: AzureOpenAI, cfg: AzureOpenAIDeployConfig, evals: EvalSet) -> dict[str, Any]:
    import openai

    print(f"evaluating deployment {cfg.deployment_name} on {len(evals.texts)} examples", flush=True)
    try:
        return chat_eval(client, cfg.deployment_name, evals, cfg.system_prompt, cfg.eval_concurrency)
    except openai.NotFoundError as exc:
        raise ConfigError(
            f"deploy.deployment_name={cfg.deployment_name}: no such deployment ({_reason(exc)}); create it with "
            "python -m sweeps deploy deploy=azure_openai"
        ) from None
    except openai.APIError as exc:
        raise DeployError(f"chat completions on {cfg.deployment_name} failed: {_reason(exc)}") from None


def test(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    """Run the eval set through the deployment again; log the metrics as a new run beside the local ones."""
    from sweeps import registry

    d = cfg.deploy
    account = _account(d, management=False)
    champion = load_champion(cfg)
    _, evals = load_data(champion, d.eval_size)
    client = _openai(d, account)
    _check_data_plane(d, client, account, base_model=False)
    result = _evaluate(client, d, evals)
    mlflow_client = registry.client(cfg)
    tags = {
        "sweeps.kind": "deploy",
        "deploy.target": "azure_openai",
        "deploy.action": "test",
        "deploy.source_run": champion.run.info.run_id,
        "deploy.model": f"{champion.model_name}/{champion.version}",
        "azure.deployment": d.deployment_name,
    }
    name = f"azure_openai test {d.deployment_name}"
    test_run = mlflow_client.create_run(champion.run.info.experiment_id, run_name=name, tags=tags)
    log_eval(mlflow_client, test_run.info.run_id, result, evals)
    mlflow_client.set_terminated(test_run.info.run_id, "FINISHED")
    print(comparison(champion, result["metrics"], evals))
    print(f"MLflow run {test_run.info.run_id}")
    return 0


def delete(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    """Remove the deployment (its hourly fee stops); the fine-tuned model stays in the account."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    d = cfg.deploy
    account = _account(d, data_plane=False)
    management = _management(d, account)
    operations = management.deployments
    try:
        operations.get(account.resource_group, account.account, d.deployment_name)
    except ResourceNotFoundError:
        print(f"no deployment {d.deployment_name} in account {account.account}: nothing to delete")
        return 0
    try:
        operations.begin_delete(
            account.resource_group, account.account, d.deployment_name, polling_interval=d.poll_seconds
        ).result()
    except HttpResponseError as exc:
        raise DeployError(f"Azure refused to delete deployment {d.deployment_name}: {_arm_reason(exc)}") from None
    _mark_deleted(cfg, d.deployment_name)
    print(f"deleted deployment {d.deployment_name} of account {account.account}; its hourly fee stops")
    return 0


def _mark_deleted(cfg: DictConfig, name: str) -> None:
    from sweeps import registry

    mlflow_client = registry.client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return
    query = f"tags.`azure.deployment` = '{name}' and tags.`azure.deployment_state` = 'Succeeded'"
    for found in mlflow_client.search_runs([experiment.experiment_id], query):
        mlflow_client.set_tag(found.info.run_id, "azure.deployment_state", "Deleted")


def cancel(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    """Cancel the fine-tuning jobs recorded in MLflow that are still running."""
    import openai

    from sweeps import registry

    d = cfg.deploy
    account = _account(d, management=False)
    client = _openai(d, account)
    _check_data_plane(d, client, account, base_model=False)
    mlflow_client = registry.client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.tracking.experiment)
    runs = []
    if experiment is not None:
        query = f"tags.`azure.account` = '{_account_key(account)}' and tags.`azure.job` LIKE 'ftjob%'"
        runs = mlflow_client.search_runs([experiment.experiment_id], query)
    cancelled = 0
    for found in runs:
        try:
            job = client.fine_tuning.jobs.retrieve(found.data.tags["azure.job"])
        except openai.NotFoundError:
            continue
        if job.status in TERMINAL:
            continue
        job = client.fine_tuning.jobs.cancel(job.id)
        mlflow_client.set_tag(found.info.run_id, "azure.job_status", job.status)
        print(f"cancelled fine-tuning job {job.id} ({job.status})")
        cancelled += 1
    if not cancelled:
        print("no running fine-tuning job is recorded in MLflow: nothing to cancel")
    return 0
