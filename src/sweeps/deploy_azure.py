"""deploy=azure_openai: Azure OpenAI fine-tunes one of its own base models on the champion's data (it cannot host
the local checkpoint), Azure Resource Manager deploys the result, and the eval set goes through the deployment so
its accuracy, precision, recall and F1 sit beside the local runs in MLflow.

One MLflow run per job spec (base model, hyperparameters, data, suffix, seed, system prompt) keeps every id in its
tags: files, job, last event seen, fine-tuned model, deployment. A rerun finds it and re-attaches; it never starts a
second job for the same spec, nor a second deployment.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from sweeps.champion import Champion, EvalSet, chat_eval, comparison, load_champion, load_data, log_eval, system_message
from sweeps.deploy import DeployError
from sweeps.errors import ConfigError
from sweeps.schema.deploy import AzureOpenAIDeployConfig

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from openai import AzureOpenAI
    from openai.types.fine_tuning import FineTuningJob

TERMINAL = ("succeeded", "failed", "cancelled")


FILE_DONE = ("processed", "error", "deleted")
HOURLY_FEE = (
    "The deployment costs an hourly hosting fee while it exists, used or not; remove it with "
    "python -m sweeps deploy delete deploy=azure_openai"
)


class StillRunning(DeployError):
    """The service is still at work when the wait ends; a rerun re-attaches."""


@dataclass
class Account:
    """The Azure OpenAI account, read from the environment variables the config names."""

    endpoint: str
    api_key: str
    subscription: str
    resource_group: str
    account: str


ENV_HINTS = {
    "endpoint_env": "the resource's endpoint, https://<account>.openai.azure.com",
    "api_key_env": "a key from the resource's Keys and Endpoint page",
    "subscription_env": "the subscription id that holds the resource",
    "resource_group_env": "the resource group that holds the resource",
    "account_env": "the Azure OpenAI resource (account) name",
}


def missing_environment(cfg: AzureOpenAIDeployConfig, data_plane: bool, management: bool) -> list[str]:
    """One line per environment variable the config names that is not set."""
    keys = (["endpoint_env", "api_key_env"] if data_plane else []) + (
        ["subscription_env", "resource_group_env", "account_env"] if management else []
    )
    return [
        f"{getattr(cfg, k)} is not set (deploy.{k} names it): export {getattr(cfg, k)}=<{ENV_HINTS[k]}>"
        for k in keys
        if not os.environ.get(getattr(cfg, k))
    ]


def _account(cfg: AzureOpenAIDeployConfig, data_plane: bool = True, management: bool = True) -> Account:
    errors = missing_environment(cfg, data_plane, management)
    if errors:
        raise ConfigError(*errors)
    values = {k: os.environ.get(getattr(cfg, k), "") for k in ENV_HINTS}
    return Account(
        endpoint=values["endpoint_env"],
        api_key=values["api_key_env"],
        subscription=values["subscription_env"],
        resource_group=values["resource_group_env"],
        account=values["account_env"],
    )


def _account_key(account: Account) -> str:
    """What tells accounts apart in MLflow tags (no secret in it)."""
    return f"{account.endpoint.rstrip('/')}/{account.account}"


# -- clients and the checks that need them ---------------------------------------------------------------------------


def _openai(cfg: AzureOpenAIDeployConfig, account: Account) -> AzureOpenAI:
    from openai import AzureOpenAI

    return AzureOpenAI(
        azure_endpoint=account.endpoint,
        api_key=account.api_key,
        api_version=cfg.api_version,
        max_retries=cfg.max_retries,
        timeout=120,
    )


def _check_data_plane(cfg: AzureOpenAIDeployConfig, client: AzureOpenAI, account: Account, base_model: bool) -> None:
    """The endpoint answers, takes the key and the API version, and (for a job) can fine-tune deploy.base_model."""
    import openai

    probe = client.with_options(max_retries=0, timeout=20)
    endpoint = f"{cfg.endpoint_env}={account.endpoint}"
    try:
        models = list(probe.models.list())
    except openai.AuthenticationError as exc:
        raise ConfigError(
            f"{cfg.api_key_env}: {endpoint} rejected the key ({_reason(exc)}); set a key of that resource"
        ) from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"{endpoint}: nothing answers there ({cause}); set it to {ENV_HINTS['endpoint_env']}"
        ) from None
    except openai.NotFoundError:
        raise ConfigError(
            f"{endpoint}: no Azure OpenAI API there (404); set it to {ENV_HINTS['endpoint_env']}"
        ) from None
    except openai.BadRequestError as exc:
        raise ConfigError(
            f"deploy.api_version={cfg.api_version}: {_reason(exc)}; e.g. deploy.api_version=2024-10-21"
        ) from None
    if not base_model:
        return
    tunable = sorted(m.id for m in models if (getattr(m, "capabilities", None) or {}).get("fine_tune"))
    if cfg.base_model not in tunable:
        raise ConfigError(
            f"deploy.base_model={cfg.base_model}: this resource cannot fine-tune it; choose one of "
            f"{', '.join(tunable) or '(none: pick a region that offers fine-tuning)'}"
        )


def _credential(cfg: AzureOpenAIDeployConfig) -> TokenCredential:
    from azure.identity import DefaultAzureCredential, EnvironmentCredential

    options = {} if cfg.instance_discovery else {"disable_instance_discovery": True}
    if cfg.credential == "environment":
        return EnvironmentCredential(**options)
    return DefaultAzureCredential(**options)


def _scope(cfg: AzureOpenAIDeployConfig) -> str:
    return cfg.management_endpoint.rstrip("/") + "/.default"


def _management(cfg: AzureOpenAIDeployConfig, account: Account) -> CognitiveServicesManagementClient:
    """A Resource Manager client whose token and account are checked: bad ones are a ConfigError."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient

    credential = _credential(cfg)
    try:
        credential.get_token(_scope(cfg))
    except ClientAuthenticationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"deploy.credential={cfg.credential}: no Azure token for {cfg.management_endpoint} ({first}); set "
            "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal, or sign in with az login"
        ) from None
    client = CognitiveServicesManagementClient(
        credential,
        account.subscription,
        base_url=cfg.management_endpoint,
        credential_scopes=[_scope(cfg)],
        retry_total=cfg.max_retries,
    )
    names = f"{cfg.subscription_env}, {cfg.resource_group_env}, {cfg.account_env}"
    try:
        found = client.accounts.get(account.resource_group, account.account)
    except ServiceRequestError as exc:
        raise ConfigError(f"deploy.management_endpoint={cfg.management_endpoint}: unreachable ({exc})") from None
    except HttpResponseError as exc:
        if exc.status_code in (401, 403):
            raise ConfigError(
                f"deploy.credential={cfg.credential}: the identity may not manage account {account.account} "
                f"({_arm_reason(exc)}); grant it the Cognitive Services Contributor role"
            ) from None
        raise ConfigError(f"{names}: account {account.account} not found ({_arm_reason(exc)}); check them") from None
    if (found.kind or "").lower() not in ("openai", "aiservices"):
        raise ConfigError(f"{cfg.account_env}={account.account}: a {found.kind} account, not an Azure OpenAI one")
    return client


def _reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return f"{getattr(exc, 'status_code', '')} {inner.get('code') or ''}: {inner['message']}".strip()
    return str(exc)


def _arm_reason(exc: Any) -> str:
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        return f"{error.code}: {error.message}"
    return str(exc).splitlines()[0]


# -- the job spec and its MLflow run ---------------------------------------------------------------------------------


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
                value /= cfg.lr_reference
        if name in ("n_epochs", "batch_size"):
            out[name] = max(1, round(value))
        else:
            out[name] = float(f"{value:.6g}")
    return out


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
    return {
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


# -- the steps -------------------------------------------------------------------------------------------------------


def _upload(
    client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, tags: dict, rows: dict[str, list], folder: Path
) -> dict[str, str]:
    """Upload (or find again) the training and validation files; wait until the service has processed them."""
    ids = {}
    for split, examples in rows.items():
        tag = f"azure.{split}_file"
        file_id = tags.get(tag)
        if file_id and _file_status(client, file_id) not in ("error", "deleted", "gone"):
            ids[split] = file_id
            continue
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in examples))
        mlflow_client.log_artifact(run_id, str(path), "data")
        with path.open("rb") as fh:
            uploaded = client.files.create(file=(path.name, fh), purpose="fine-tune")
        print(f"uploaded {split} data: {uploaded.id} ({len(examples)} examples, {uploaded.bytes} bytes)", flush=True)
        mlflow_client.set_tag(run_id, tag, uploaded.id)
        ids[split] = uploaded.id
    return ids


def _file_status(client: AzureOpenAI, file_id: str) -> str:
    import openai

    try:
        return client.files.retrieve(file_id).status
    except openai.NotFoundError:
        return "gone"


def _wait_files(client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, ids: dict, cfg, deadline: float):
    for split, file_id in ids.items():
        while True:
            file = client.files.retrieve(file_id)
            if file.status in FILE_DONE:
                break
            if time.monotonic() > deadline:
                raise StillRunning(f"file {file_id} is still {file.status}; rerun to wait for it again")
            time.sleep(cfg.poll_seconds)
        if file.status != "processed":
            mlflow_client.delete_tag(run_id, f"azure.{split}_file")
            reason = file.status_details or "no reason given"
            raise DeployError(f"Azure OpenAI rejected the {split} file {file_id} ({file.status}): {reason}")


def _job(
    client: AzureOpenAI,
    mlflow_client: MlflowClient,
    run_id: str,
    tags: dict,
    files: dict,
    spec: dict,
    restart: bool,
) -> FineTuningJob:
    """The run's job (re-attached), or a new one; a failed or cancelled job is replaced only with --restart."""
    import openai

    job_id = tags.get("azure.job")
    job = None
    if job_id:
        try:
            job = client.fine_tuning.jobs.retrieve(job_id)
        except openai.NotFoundError:
            print(f"fine-tuning job {job_id} no longer exists in the account; starting a new one", flush=True)
            mlflow_client.delete_tag(run_id, "azure.last_event")
    if job is not None:
        if job.status not in ("failed", "cancelled"):
            print(f"re-attached to fine-tuning job {job.id} ({job.status})", flush=True)
            return job
        if not restart:
            raise DeployError(
                f"fine-tuning job {job.id} {job.status}{_job_error(job)}; start a new one with "
                "python -m sweeps deploy --restart deploy=azure_openai ..."
            )
        previous = ",".join(filter(None, [tags.get("azure.previous_jobs"), job.id]))
        mlflow_client.set_tag(run_id, "azure.previous_jobs", previous)
        mlflow_client.delete_tag(run_id, "azure.last_event")
    try:
        job = client.fine_tuning.jobs.create(
            model=spec["base_model"],
            training_file=files["train"],
            validation_file=files["validation"],
            hyperparameters=spec["hyperparameters"],
            suffix=spec["suffix"],
            seed=spec["seed"],
        )
    except openai.BadRequestError as exc:
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


def _deploy(
    management: CognitiveServicesManagementClient,
    account: Account,
    cfg: AzureOpenAIDeployConfig,
    model: str,
    deadline: float,
) -> bool:
    """Create or update the deployment so it serves `model`; False when it already did."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.mgmt.cognitiveservices.models import Deployment, DeploymentModel, DeploymentProperties, Sku

    operations = management.deployments
    name = cfg.deployment_name
    try:
        existing = operations.get(account.resource_group, account.account, name)
    except ResourceNotFoundError:
        existing = None
    if existing is not None and existing.properties.model.name == model:
        state = existing.properties.provisioning_state
        while state in ("Creating", "Updating", "Accepted"):
            if time.monotonic() > deadline:
                raise StillRunning(f"deployment {name} is still {state}; rerun to wait for it again")
            time.sleep(cfg.poll_seconds)
            state = operations.get(account.resource_group, account.account, name).properties.provisioning_state
        if state == "Succeeded":
            print(f"deployment {name} already serves {model}", flush=True)
            return False
    if existing is not None and existing.properties.model.name != model:
        print(f"deployment {name}: replacing {existing.properties.model.name} with {model}", flush=True)
    body = Deployment(
        sku=Sku(name=cfg.sku_name, capacity=cfg.sku_capacity),
        properties=DeploymentProperties(model=DeploymentModel(format="OpenAI", name=model, version="1")),
    )
    try:
        poller = operations.begin_create_or_update(
            account.resource_group, account.account, name, body, polling_interval=cfg.poll_seconds
        )
        created = poller.result(timeout=max(1.0, deadline - time.monotonic()))
    except HttpResponseError as exc:
        code = getattr(getattr(exc, "error", None), "code", "") or ""
        hint = (
            "lower deploy.sku_capacity, choose another deploy.sku_name, or request more quota for the account"
            if "Quota" in code
            else "check deploy.sku_name and deploy.sku_capacity"
        )
        raise DeployError(f"Azure refused deployment {name} of {model}: {_arm_reason(exc)}; {hint}") from None
    if created is None or created.properties.provisioning_state != "Succeeded":
        state = created.properties.provisioning_state if created is not None else "unknown"
        raise DeployError(f"deployment {name} of {model} ended {state}")
    print(f"deployed {model} as {name} ({cfg.sku_name}, capacity {cfg.sku_capacity})", flush=True)
    return True


# -- the actions -----------------------------------------------------------------------------------------------------


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
