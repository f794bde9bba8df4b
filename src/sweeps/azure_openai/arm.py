"""deploy=azure_openai: the deployments of fine-tuned models through Azure Resource Manager.

ARM cannot change the model of an existing deployment (CannotChangeDeploymentModel), so each registered version of
the champion gets its own deployment, <deploy.deployment_name>-v<version> (-2, -3, ... when a retrained model of
the same version needs another); the previous ones are deleted once the new one answers. A resource holds at most
five deployments of fine-tuned models: older ones of sweeps make room first, others are never touched.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sweeps.azure_openai import StillRunning
from sweeps.azure_openai.account import Account, _arm_reason
from sweeps.errors import ConfigError, DeployError
from sweeps.schema.deploy import AzureOpenAIDeployConfig

if TYPE_CHECKING:
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient

MAX_FINE_TUNED_DEPLOYMENTS = 5
# Rate limits per capacity unit of a deployment (the quotas and limits reference).
TOKENS_PER_UNIT = 1000
REQUESTS_PER_UNIT = 6


@dataclass
class Placed:
    """Where the model is served, whether that deployment was created now, and sweeps' deployments of other
    models (by version, oldest first) to delete once it answers."""

    name: str
    created: bool
    previous: list[str] = field(default_factory=list)


def base_name(cfg: AzureOpenAIDeployConfig, version: str) -> str:
    return f"{cfg.deployment_name}-v{version}"


def _version(cfg: AzureOpenAIDeployConfig, name: str) -> tuple[int, int] | None:
    """(version, retry) of one of sweeps' deployment names under deploy.deployment_name; None for others."""
    match = re.fullmatch(re.escape(cfg.deployment_name) + r"-v(\d+)(?:-(\d+))?", name or "")
    return (int(match.group(1)), int(match.group(2) or 1)) if match else None


def ours(cfg: AzureOpenAIDeployConfig, deployments: list[Any]) -> list[Any]:
    """Sweeps' deployments under deploy.deployment_name, oldest version first."""
    found = [d for d in deployments if _version(cfg, d.name) is not None]
    return sorted(found, key=lambda d: _version(cfg, d.name))


def _model(deployment: Any) -> str:
    return (deployment.properties.model.name if deployment.properties and deployment.properties.model else "") or ""


def _deploy(
    management: CognitiveServicesManagementClient,
    account: Account,
    cfg: AzureOpenAIDeployConfig,
    model: str,
    version: str,
    deadline: float,
) -> Placed:
    """A deployment that serves `model` for registered version `version`: found again, or created."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.cognitiveservices.models import Deployment, DeploymentModel, DeploymentProperties, Sku

    operations = management.deployments
    deployments = list(operations.list(account.resource_group, account.account))
    by_name = {d.name: d for d in deployments}
    name, retry = base_name(cfg, version), 1
    while name in by_name and _model(by_name[name]) != model:
        retry += 1
        name = f"{base_name(cfg, version)}-{retry}"
    previous = [d.name for d in ours(cfg, deployments) if d.name != name and _model(d) != model]
    existing = by_name.get(name)
    if existing is not None:
        state = existing.properties.provisioning_state
        while state in ("Creating", "Updating", "Accepted"):
            if time.monotonic() > deadline:
                raise StillRunning(f"deployment {name} is still {state}; rerun to wait for it again")
            time.sleep(cfg.poll_seconds)
            state = operations.get(account.resource_group, account.account, name).properties.provisioning_state
        if state == "Succeeded":
            print(f"deployment {name} already serves {model}", flush=True)
            return Placed(name, False, previous)
    else:
        previous = _make_room(management, account, cfg, deployments, previous, deadline)
    if previous:
        print(f"deploying {model} as {name}; {', '.join(previous)} go once it answers", flush=True)
    body = Deployment(
        sku=Sku(name=cfg.sku_name.lower(), capacity=cfg.sku_capacity),
        properties=DeploymentProperties(model=DeploymentModel(format="OpenAI", name=model, version="1")),
    )
    try:
        poller = operations.begin_create_or_update(
            account.resource_group, account.account, name, body, polling_interval=cfg.poll_seconds
        )
        created = poller.result(timeout=max(1.0, deadline - time.monotonic()))
    except HttpResponseError as exc:
        raise DeployError(
            f"Azure refused deployment {name} of {model}: {_arm_reason(exc)}; {_hint(exc, name)}"
        ) from None
    if created is None or created.properties.provisioning_state != "Succeeded":
        state = created.properties.provisioning_state if created is not None else "unknown"
        raise DeployError(f"deployment {name} of {model} ended {state}")
    print(f"deployed {model} as {name} ({cfg.sku_name}, capacity {cfg.sku_capacity})", flush=True)
    return Placed(name, True, previous)


def _hint(exc: Any, name: str) -> str:
    """What to change for ARM's refusal, by its error code."""
    code = getattr(getattr(exc, "error", None), "code", "") or ""
    text = str(exc)
    if code == "CannotChangeDeploymentModel":
        return (
            f"a deployment keeps the model it was created with; remove {name} with "
            "python -m sweeps deploy delete deploy=azure_openai, or choose another deploy.deployment_name"
        )
    if "Quota" in code and "deployments" in text:
        return f"the resource holds its limit of {MAX_FINE_TUNED_DEPLOYMENTS} fine-tuned deployments; delete one"
    if "Quota" in code:
        return "lower deploy.sku_capacity, choose another deploy.sku_name, or request more quota for the account"
    if code in ("InvalidSkuName", "InvalidCapacity", "SkuNotSupported", "InvalidResourceSku"):
        return "check deploy.sku_name (standard, globalstandard or developertier) and deploy.sku_capacity"
    return "see Azure's message above"


def _make_room(
    management: CognitiveServicesManagementClient,
    account: Account,
    cfg: AzureOpenAIDeployConfig,
    deployments: list[Any],
    previous: list[str],
    deadline: float,
) -> list[str]:
    """Below the resource's limit of fine-tuned deployments before a new one: delete sweeps' older ones (never the
    newest, which serves until the new one answers); the rest of `previous` is returned."""
    fine_tuned = [d.name for d in deployments if ".ft-" in _model(d)]
    spare = list(previous[:-1])
    while len(fine_tuned) >= MAX_FINE_TUNED_DEPLOYMENTS and spare:
        victim = spare.pop(0)
        delete_deployment(management, account, cfg, victim, deadline)
        fine_tuned.remove(victim)
        previous = [p for p in previous if p != victim]
    if len(fine_tuned) >= MAX_FINE_TUNED_DEPLOYMENTS:
        raise ConfigError(
            f"account {account.account} holds {len(fine_tuned)} deployments of fine-tuned models, Azure's limit of "
            f"{MAX_FINE_TUNED_DEPLOYMENTS} per resource ({', '.join(fine_tuned)}); delete one no longer needed, or "
            "remove sweeps' own with python -m sweeps deploy delete deploy=azure_openai"
        )
    return previous


def delete_deployment(
    management: CognitiveServicesManagementClient, account: Account, cfg: AzureOpenAIDeployConfig, name: str, deadline
) -> None:
    from azure.core.exceptions import HttpResponseError

    try:
        poller = management.deployments.begin_delete(
            account.resource_group, account.account, name, polling_interval=cfg.poll_seconds
        )
        poller.result(timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
    except HttpResponseError as exc:
        raise DeployError(f"Azure refused to delete deployment {name}: {_arm_reason(exc)}") from None
    print(f"deleted deployment {name} of account {account.account}; its hourly fee stops", flush=True)


def rate_limits(cfg: AzureOpenAIDeployConfig) -> tuple[int, int]:
    """Requests and tokens a minute the deployment's capacity allows."""
    return REQUESTS_PER_UNIT * cfg.sku_capacity, TOKENS_PER_UNIT * cfg.sku_capacity
