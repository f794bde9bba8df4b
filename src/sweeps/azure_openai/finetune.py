"""deploy=azure_openai: the fine-tuning job: its spec and hyperparameters, the MLflow run that keeps its ids, the
chat-format training and validation files, and the job itself (created or re-attached, followed to its end, its
events and checkpoints logged to the run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from sweeps.azure_openai import StillRunning
from sweeps.azure_openai.account import Account, _account_key, _reason
from sweeps.azure_openai.files import delete_files, run_files
from sweeps.champion import Champion, EvalSet
from sweeps.errors import ConfigError, DeployError
from sweeps.schema.deploy import AzureOpenAIDeployConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from openai import AzureOpenAI
    from openai.types.fine_tuning import FineTuningJob

TERMINAL = ("succeeded", "failed", "cancelled")
# Azure's recommended learning_rate_multiplier range ("values in the range 0.02 to 0.2"); a mapped value outside
# it is clamped, a number in deploy.hyperparameters is sent as is.
LR_MULTIPLIER_RANGE = (0.02, 0.2)


def hyperparameters(cfg: AzureOpenAIDeployConfig, params: dict[str, str]) -> dict[str, int | float]:
    """The job's hyperparameters from the champion run's params, by the config's mapping."""
    out: dict[str, int | float] = {}
    for name, source in (cfg.hyperparameters or {}).items():
        if source is None:
            continue
        if isinstance(source, (int, float)):
            value = float(source)
        else:
            if source not in params:
                raise ConfigError(
                    f"deploy.hyperparameters.{name}={source}: the champion run has no param '{source}'; name one of "
                    "its params (epochs, batch_size, lr, ...), give a number, or null"
                )
            try:
                value = float(params[source])
            except ValueError:
                raise ConfigError(
                    f"deploy.hyperparameters.{name}={source}: the run's {source} is {params[source]!r}, not a number"
                ) from None
            if name == "learning_rate_multiplier":
                value = _clamped_multiplier(value / cfg.lr_reference, source, float(params[source]), cfg)
        if name in ("n_epochs", "batch_size"):
            out[name] = max(1, round(value))
        else:
            out[name] = float(f"{value:.6g}")
    return out


def _clamped_multiplier(value: float, source: str, param: float, cfg: AzureOpenAIDeployConfig) -> float:
    low, high = LR_MULTIPLIER_RANGE
    clamped = min(max(value, low), high)
    if clamped != value:
        print(
            f"note: learning_rate_multiplier = {source} {param:g} / lr_reference {cfg.lr_reference:g} = {value:.4g}, "
            f"outside Azure's recommended {low:g} to {high:g}; using {clamped:g} (set "
            f"deploy.hyperparameters.learning_rate_multiplier={value:.4g} to send it as is)",
            flush=True,
        )
    return clamped


def chat_rows(texts: list[str], labels: list[int], label_names: list[str], system: str) -> list[dict]:
    """Chat-format fine-tuning examples: system prompt, the text, the label word."""
    return [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": str(text)},
                {"role": "assistant", "content": label_names[int(label)]},
            ]
        }
        for text, label in zip(texts, labels, strict=True)
    ]


def _spec(
    cfg: AzureOpenAIDeployConfig, champion: Champion, hyper: dict, evals: EvalSet, account: Account
) -> dict[str, Any]:
    seed = cfg.seed if cfg.seed is not None else int(champion.run.data.params.get("seed", 0) or 0)
    spec = {
        "account": _account_key(account),
        "base_model": cfg.base_model,
        "suffix": cfg.suffix,
        "hyperparameters": hyper,
        "seed": seed,
        "system_prompt": cfg.system_prompt,
        "train_fingerprint": champion.run.data.tags.get("dataset.fingerprint", ""),
        "eval_fingerprint": evals.fingerprint,
        "source_run": champion.run.info.run_id,
    }
    if cfg.training_type is not None:  # only then, so the spec (and its key) of earlier runs stays the same
        spec["training_type"] = cfg.training_type
    return spec


def _deploy_run(
    client: MlflowClient, champion: Champion, spec: dict, key: str, cfg: AzureOpenAIDeployConfig
) -> tuple[Run, bool]:
    """The MLflow run of this job spec: found again on a rerun, else created."""
    from mlflow.entities import Param

    from sweeps.secrets import mask

    experiment_id = champion.run.info.experiment_id
    query = "tags.`sweeps.kind` = 'deploy' and tags.`deploy.target` = 'azure_openai' and tags.`deploy.spec` = '{}'"
    found = client.search_runs([experiment_id], query.format(key), max_results=1, order_by=["attributes.start_time"])
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return client.get_run(found[0].info.run_id), True
    tags = {
        "sweeps.kind": "deploy",
        "deploy.target": "azure_openai",
        "deploy.spec": key,
        "deploy.source_run": champion.run.info.run_id,
        "deploy.model": f"{champion.model_name}/{champion.version}",
        "deploy.base_model": cfg.base_model,
        "azure.account": spec["account"],
        "dataset.fingerprint": spec["train_fingerprint"],
        "mlflow.note.content": f"Azure OpenAI fine-tune of {cfg.base_model} on the data of {champion.model_uri} "
        f"(version {champion.version}, run {champion.run.info.run_id})",
    }
    name = f"azure_openai {cfg.base_model} <- {champion.model_name} v{champion.version}"
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    flat = {f"deploy.{k}": v for k, v in _plain(cfg).items()}
    flat.update({f"job.{k}": v for k, v in spec["hyperparameters"].items()})
    flat.update({"job.seed": spec["seed"], "objective": champion.run.data.params.get("objective", "accuracy")})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in mask(flat).items()])
    return run, False


def _plain(cfg: AzureOpenAIDeployConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(vars(cfg))
    hyper = values.pop("hyperparameters", None) or {}
    values.update({f"hyperparameters.{k}": v for k, v in hyper.items()})
    return values


def _job(
    client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, tags: dict, restart: bool
) -> FineTuningJob | None:
    """The run's job to re-attach to, or None when a new one is to start; a failed or cancelled job is replaced
    only with --restart (its files are deleted: no job needs them)."""
    import openai

    job_id = tags.get("azure.job")
    if not job_id:
        return None
    try:
        job = client.fine_tuning.jobs.retrieve(job_id)
    except openai.NotFoundError:
        print(f"fine-tuning job {job_id} no longer exists in the account; starting a new one", flush=True)
        mlflow_client.delete_tag(run_id, "azure.last_event")
        return None
    if job.status not in ("failed", "cancelled"):
        print(f"re-attached to fine-tuning job {job.id} ({job.status})", flush=True)
        return job
    delete_files(client, mlflow_client, run_id, run_files(tags))
    if not restart:
        raise DeployError(
            f"fine-tuning job {job.id} {job.status}{_job_error(job)}; start a new one with "
            "python -m sweeps deploy --restart deploy=azure_openai ..."
        )
    previous = ",".join(filter(None, [tags.get("azure.previous_jobs"), job.id]))
    mlflow_client.set_tag(run_id, "azure.previous_jobs", previous)
    mlflow_client.delete_tag(run_id, "azure.last_event")
    return None


def _start_job(client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, files: dict, spec: dict) -> FineTuningJob:
    """A new fine-tuning job on the processed files; a refusal deletes them (no job needs them)."""
    import openai

    extra = {"trainingType": spec["training_type"]} if spec.get("training_type") else None
    try:
        job = client.fine_tuning.jobs.create(
            model=spec["base_model"],
            training_file=files["train"],
            validation_file=files["validation"],
            hyperparameters=spec["hyperparameters"],
            suffix=spec["suffix"],
            seed=spec["seed"],
            extra_body=extra,
        )
    except openai.BadRequestError as exc:
        delete_files(client, mlflow_client, run_id, files)
        if "global training" in str(exc) and not spec.get("training_type"):
            raise ConfigError(
                f"deploy.base_model={spec['base_model']}: {_reason(exc)}; set deploy.training_type=globalstandard "
                "and deploy.api_version=2025-02-01-preview (or later)"
            ) from None
        raise DeployError(f"Azure OpenAI refused the fine-tuning job: {_reason(exc)}") from None
    print(f"started fine-tuning job {job.id} on {job.model} ({spec['hyperparameters']})", flush=True)
    mlflow_client.set_tag(run_id, "azure.job", job.id)
    return job


def _job_error(job: FineTuningJob) -> str:
    if job.error and (job.error.message or job.error.code):
        return f" ({job.error.code}: {job.error.message})"
    return ""


def _follow(
    client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, job: FineTuningJob, cfg, deadline: float, log: Path
) -> FineTuningJob:
    """Poll the job until it ends, streaming its events into the run (metrics events as metrics)."""
    last = mlflow_client.get_run(run_id).data.tags.get("azure.last_event")
    while True:
        job = client.fine_tuning.jobs.retrieve(job.id)
        last = _events(client, mlflow_client, run_id, job.id, last, log)
        mlflow_client.set_tag(run_id, "azure.job_status", job.status)
        if job.status in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise StillRunning(
                f"fine-tuning job {job.id} is still {job.status} after {cfg.wait_minutes:g} minutes; it keeps running "
                "on Azure: rerun the same command to re-attach, or cancel it with "
                "python -m sweeps deploy cancel deploy=azure_openai"
            )
        time.sleep(cfg.poll_seconds)


def _events(
    client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, job_id: str, last: str | None, log: Path
) -> str | None:
    from mlflow.entities import Metric

    fresh = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=100):  # newest first, pages on by itself
        if event.id == last:
            break
        fresh.append(event)
    if not fresh:
        return last
    metrics = []
    with log.open("a") as fh:
        for event in reversed(fresh):
            line = f"{time.strftime('%H:%M:%S', time.localtime(event.created_at))} [{event.level}] {event.message}"
            print(f"  {job_id}: {event.message}", flush=True)
            fh.write(line + "\n")
            data = event.data if isinstance(event.data, dict) else {}
            if event.type == "metrics" and "step" in data:
                stamp = event.created_at * 1000
                for key, value in data.items():
                    if key != "step" and isinstance(value, (int, float)):
                        metrics.append(Metric(f"ft_{key}", float(value), stamp, int(data["step"])))
    if metrics:
        mlflow_client.log_batch(run_id, metrics=metrics)
    mlflow_client.log_artifact(run_id, str(log), "azure")
    mlflow_client.set_tag(run_id, "azure.last_event", fresh[0].id)
    return fresh[0].id


def _checkpoints(client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, job: FineTuningJob) -> None:
    from mlflow.entities import Metric

    names, metrics = [], []
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(job.id):
        names.append(checkpoint.fine_tuned_model_checkpoint)
        for key, value in checkpoint.metrics.model_dump().items():
            if key != "step" and isinstance(value, (int, float)):
                stamp = checkpoint.created_at * 1000
                metrics.append(Metric(f"ft_checkpoint_{key}", float(value), stamp, checkpoint.step_number))
    if metrics:
        mlflow_client.log_batch(run_id, metrics=metrics)
    if names:
        mlflow_client.set_tag(run_id, "azure.checkpoints", ",".join(names)[:5000])
