"""deploy=azure_openai: the actions `python -m sweeps deploy` dispatches to: run (fine-tune, deploy, evaluate,
re-attaching to what exists), test (evaluate the deployment again), delete (the deployment) and cancel (running
jobs)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING

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
from sweeps.azure_openai.arm import _deploy, base_name, delete_deployment, ours, rate_limits
from sweeps.azure_openai.files import _upload, _wait_files, delete_files, run_files
from sweeps.azure_openai.finetune import (
    TERMINAL,
    _checkpoints,
    _deploy_run,
    _follow,
    _job,
    _job_error,
    _spec,
    _start_job,
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
        job = _job(client, mlflow_client, run_id, deploy_run.data.tags, restart)
        if job is None:
            system = system_message(d.system_prompt, evals.label_names)
            rows = {
                "train": chat_rows(train["text"].tolist(), train["label"].tolist(), evals.label_names, system),
                "validation": chat_rows(evals.texts, evals.labels.tolist(), evals.label_names, system),
            }
            tags = mlflow_client.get_run(run_id).data.tags
            files = _upload(client, mlflow_client, run_id, tags, rows, folder)
            _wait_files(client, mlflow_client, run_id, files, d, deadline)
            job = _start_job(client, mlflow_client, run_id, files, spec)
        job = _follow(client, mlflow_client, run_id, job, d, deadline, folder / "events.log")
        delete_files(client, mlflow_client, run_id, run_files(mlflow_client.get_run(run_id).data.tags))
        if job.status != "succeeded":
            raise DeployError(f"fine-tuning job {job.id} {job.status}{_job_error(job)}")
        mlflow_client.set_tag(run_id, "azure.fine_tuned_model", job.fine_tuned_model)
        if job.trained_tokens:
            mlflow_client.log_metric(run_id, "ft_trained_tokens", float(job.trained_tokens))
        _checkpoints(client, mlflow_client, run_id, job)
        placed = _deploy(management, account, d, job.fine_tuned_model, champion.version, deadline)
        mlflow_client.set_tag(run_id, "azure.deployment", placed.name)
        mlflow_client.set_tag(run_id, "azure.deployment_state", "Succeeded")
        metrics = mlflow_client.get_run(run_id).data.metrics
        answered = True
        if placed.created or "accuracy" not in metrics:
            result = _evaluate(client, d, evals, placed.name, deadline)
            log_eval(mlflow_client, run_id, result, evals)
            values = result["metrics"]
            answered = values["content_filtered"] < len(evals.texts)
        else:
            values = metrics
            print("already evaluated; python -m sweeps deploy test deploy=azure_openai evaluates again", flush=True)
        if answered:  # the new deployment answers: the previous ones go
            for name in placed.previous:
                delete_deployment(management, account, d, name, deadline)
                _mark_deleted(cfg, name)
        elif placed.previous:
            print(f"{placed.name} answered no example; {', '.join(placed.previous)} stay", flush=True)
        status = "FINISHED"
    except (KeyboardInterrupt, StillRunning):
        status = "KILLED"  # the work goes on at Azure; a rerun re-attaches and resumes this run
        raise
    finally:
        mlflow_client.set_terminated(run_id, status)
    print(comparison(champion, values, evals))
    print(f"deployment {placed.name} serves {job.fine_tuned_model}; MLflow run {run_id}")
    print(HOURLY_FEE)
    return 0


def _estimate(cfg: AzureOpenAIDeployConfig, evals: EvalSet, name: str) -> str:
    """What the evaluation sends and how long the deployment's rate limits make it take."""
    from sweeps.endpoint_calls import prompt_tokens

    tokens = prompt_tokens(evals.texts, system_message(cfg.system_prompt, evals.label_names), 8)
    requests, per_minute = rate_limits(cfg)
    minutes = max(len(evals.texts) / requests, tokens / per_minute)
    took = (
        "under a minute"
        if minutes < 1
        else f"about {minutes:.1f} minutes"
        if minutes < 10
        else f"about {minutes:.0f} minutes"
    )
    return (
        f"evaluating deployment {name} on {len(evals.texts)} examples (~{tokens:,} tokens): capacity "
        f"{cfg.sku_capacity} allows {requests:,} requests and {per_minute:,} tokens a minute, so {took}"
    )


def _evaluate(client: AzureOpenAI, cfg: AzureOpenAIDeployConfig, evals: EvalSet, name: str, deadline: float):
    import openai

    from sweeps.endpoint_calls import Throttled

    print(_estimate(cfg, evals, name), flush=True)
    try:
        return chat_eval(
            client, name, evals, cfg.system_prompt, cfg.eval_concurrency, max_retries=cfg.max_retries, deadline=deadline
        )
    except openai.NotFoundError as exc:
        raise ConfigError(
            f"deploy.deployment_name={cfg.deployment_name}: no such deployment {name} ({_reason(exc)}); create it "
            "with python -m sweeps deploy deploy=azure_openai"
        ) from None
    except Throttled as exc:
        raise DeployError(
            f"deployment {name} still throttles after deploy.wait_minutes={cfg.wait_minutes:g} ({exc}); raise "
            "deploy.sku_capacity or lower deploy.eval_size"
        ) from None
    except openai.APIError as exc:
        raise DeployError(f"chat completions on {name} failed: {_reason(exc)}") from None


def _served_by(cfg: DictConfig, champion) -> str:
    """The deployment that serves the champion's version: as its deploy run recorded it, else the usual name."""
    from sweeps import registry

    mlflow_client = registry.client(cfg)
    query = (
        "tags.`deploy.target` = 'azure_openai' and tags.`azure.deployment_state` = 'Succeeded' and "
        f"tags.`deploy.model` = '{champion.model_name}/{champion.version}'"
    )
    found = mlflow_client.search_runs(
        [champion.run.info.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return found[0].data.tags["azure.deployment"] if found else base_name(cfg.deploy, champion.version)


def test(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    """Run the eval set through the deployment again; log the metrics as a new run beside the local ones."""
    from sweeps import registry

    d = cfg.deploy
    account = _account(d, management=False)
    champion = load_champion(cfg)
    _, evals = load_data(champion, d.eval_size)
    client = _openai(d, account)
    _check_data_plane(d, client, account, base_model=False)
    name = _served_by(cfg, champion)
    result = _evaluate(client, d, evals, name, time.monotonic() + d.wait_minutes * 60)
    mlflow_client = registry.client(cfg)
    tags = {
        "sweeps.kind": "deploy",
        "deploy.target": "azure_openai",
        "deploy.action": "test",
        "deploy.source_run": champion.run.info.run_id,
        "deploy.model": f"{champion.model_name}/{champion.version}",
        "azure.deployment": name,
    }
    test_run = mlflow_client.create_run(
        champion.run.info.experiment_id, run_name=f"azure_openai test {name}", tags=tags
    )
    log_eval(mlflow_client, test_run.info.run_id, result, evals)
    mlflow_client.set_terminated(test_run.info.run_id, "FINISHED")
    print(comparison(champion, result["metrics"], evals))
    print(f"MLflow run {test_run.info.run_id}")
    return 0


def delete(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    """Remove sweeps' deployments under deploy.deployment_name (their hourly fee stops); the fine-tuned models stay
    in the account."""
    from azure.core.exceptions import HttpResponseError

    d = cfg.deploy
    account = _account(d, data_plane=False)
    management = _management(d, account)
    try:
        found = ours(d, list(management.deployments.list(account.resource_group, account.account)))
    except HttpResponseError as exc:
        raise DeployError(f"Azure refused to list the deployments of {account.account}: {_arm_reason(exc)}") from None
    if not found:
        print(f"no deployment {d.deployment_name}-v<version> in account {account.account}: nothing to delete")
        return 0
    for deployment in found:
        delete_deployment(management, account, d, deployment.name, None)
        _mark_deleted(cfg, deployment.name)
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
