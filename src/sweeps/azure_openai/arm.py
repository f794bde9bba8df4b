"""deploy=azure_openai: the deployment of a fine-tuned model through Azure Resource Manager."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sweeps.azure_openai import StillRunning
from sweeps.azure_openai.account import Account, _arm_reason
from sweeps.errors import DeployError
from sweeps.schema.deploy import AzureOpenAIDeployConfig

if TYPE_CHECKING:
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient


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
