"""deploy=azure_openai: the account (read from the environment variables the config names), its data-plane
(openai) and Resource Manager clients with the checks that need them, and how Azure's errors read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeps.endpoint_calls import retry_after
from sweeps.errors import ConfigError
from sweeps.schema.deploy import AzureOpenAIDeployConfig

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
    from openai import AzureOpenAI


@dataclass
class Account:
    """The Azure OpenAI account, read from the environment variables the config names."""

    endpoint: str
    api_key: str | None  # None: keyless, an Entra ID token from deploy.credential
    subscription: str
    resource_group: str
    account: str


# The audience of data-plane tokens (Microsoft Entra ID auth for Azure OpenAI).
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"

ENV_HINTS = {
    "endpoint_env": "the resource's endpoint, https://<account>.openai.azure.com",
    "api_key_env": "a key from the resource's Keys and Endpoint page",
    "subscription_env": "the subscription id that holds the resource",
    "resource_group_env": "the resource group that holds the resource",
    "account_env": "the Azure OpenAI resource (account) name",
}


def missing_environment(cfg: AzureOpenAIDeployConfig, data_plane: bool, management: bool) -> list[str]:
    """One line per environment variable the config names that is not set (the key is optional: keyless)."""
    keys = (["endpoint_env"] if data_plane else []) + (
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
    values = {k: os.environ.get(getattr(cfg, k) or "", "") for k in ENV_HINTS}
    return Account(
        endpoint=values["endpoint_env"],
        api_key=values["api_key_env"] or None,
        subscription=values["subscription_env"],
        resource_group=values["resource_group_env"],
        account=values["account_env"],
    )


def _account_key(account: Account) -> str:
    """What tells accounts apart in MLflow tags (no secret in it)."""
    return f"{account.endpoint.rstrip('/')}/{account.account}"


def _openai(cfg: AzureOpenAIDeployConfig, account: Account) -> AzureOpenAI:
    """The data-plane client: with the key, or keyless with Entra ID tokens (bearer, Cognitive Services scope)."""
    from openai import AzureOpenAI

    auth: dict[str, Any] = {"api_key": account.api_key}
    if account.api_key is None:
        from azure.identity import get_bearer_token_provider

        auth = {"azure_ad_token_provider": get_bearer_token_provider(_credential(cfg), COGNITIVE_SCOPE)}
    return AzureOpenAI(
        azure_endpoint=account.endpoint,
        api_version=cfg.api_version,
        max_retries=cfg.max_retries,
        timeout=120,
        **auth,
    )


def _auth_name(cfg: AzureOpenAIDeployConfig, account: Account) -> str:
    if account.api_key is not None:
        return f"the key in {cfg.api_key_env}"
    return f"the Entra ID token of deploy.credential={cfg.credential}"


def _check_data_plane(cfg: AzureOpenAIDeployConfig, client: AzureOpenAI, account: Account, base_model: bool) -> None:
    """The endpoint answers, takes the key (or token) and the API version, and (for a job) can fine-tune
    deploy.base_model. Each refusal is one ConfigError naming what to change."""
    import openai
    from azure.core.exceptions import ClientAuthenticationError

    probe = client.with_options(max_retries=0, timeout=20)
    endpoint = f"{cfg.endpoint_env}={account.endpoint}"
    if account.api_key is None:
        print(f"{cfg.api_key_env or 'deploy.api_key_env'} is not set: signing in to {endpoint} with Entra ID")
    try:
        models = list(probe.models.list())
    except ClientAuthenticationError as exc:
        raise ConfigError(
            f"deploy.credential={cfg.credential}: no Entra ID token for {COGNITIVE_SCOPE} ({_first_line(exc)}); "
            f"set {cfg.api_key_env or 'deploy.api_key_env'} to a key of the resource, or sign in (AZURE_TENANT_ID, "
            "AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, or az login)"
        ) from None
    except openai.AuthenticationError as exc:
        if account.api_key is None:
            raise ConfigError(
                f"deploy.credential={cfg.credential}: {endpoint} rejected the Entra ID token ({_reason(exc)}); "
                "use a credential of the resource's tenant"
            ) from None
        raise ConfigError(
            f"{cfg.api_key_env}: {endpoint} rejected the key ({_reason(exc)}); set a key of that resource"
        ) from None
    except openai.PermissionDeniedError as exc:
        if account.api_key is not None:
            raise ConfigError(
                f"{cfg.api_key_env}: {endpoint} refuses keys ({_reason(exc)}: the resource has disableLocalAuth); "
                f"unset {cfg.api_key_env} (or deploy.api_key_env=null) to sign in with Entra ID, as an identity "
                "with the Cognitive Services OpenAI Contributor role"
            ) from None
        raise ConfigError(
            f"deploy.credential={cfg.credential}: {endpoint} refused the identity ({_reason(exc)}); grant it the "
            "Cognitive Services OpenAI Contributor role on the resource"
        ) from None
    except openai.RateLimitError as exc:
        wait = retry_after(exc)
        raise ConfigError(
            f"{endpoint}: the resource is throttling requests ({_reason(exc)}); rerun in "
            f"{f'{wait:g} seconds' if wait else 'a minute'}, or lower other load on the resource"
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
        raise ConfigError(
            f"deploy.credential={cfg.credential}: no Azure token for {cfg.management_endpoint} "
            f"({_first_line(exc)}); set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service "
            "principal, or sign in with az login"
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


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
