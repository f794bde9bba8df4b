"""Schemas of the `deploy` group (conf/deploy/): one per target; consumed by sweeps.deploy and its targets'
modules (sweeps.azure_openai, sweeps.deploy_local)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DeployConfig:
    # none: keep the checkpoint and its MLflow model; azure_openai or local: see conf/deploy/<target>.yaml.
    target: str = "none"


@dataclass
class EndpointConfig(DeployConfig):
    """What every target that answers chat completions shares: how its eval set is sent."""

    # System message of every example, in fine-tuning data and evaluation; {labels} lists the label words.
    system_prompt: str = "Classify the sentiment of the movie review. Answer with one word: {labels}."
    # Examples of the champion's eval split sent through the endpoint (null: all of them).
    eval_size: int | None = None
    # Requests in flight at once while evaluating.
    eval_concurrency: int = 4
    # Retries of a request the service fails (5xx, no answer). A throttled one (429) is retried after the
    # service's retry-after as often as it takes, within the target's wait (azure_openai: wait_minutes).
    max_retries: int = 6


@dataclass
class AzureOpenAIDeployConfig(EndpointConfig):
    target: str = "azure_openai"
    # 200 examples: an accuracy near 90% to about +-4 points (95% interval), sent in about a minute and a half at
    # the default capacity (50 units: 50,000 tokens and 300 requests a minute; an IMDB review with the prompt is
    # ~350 tokens, so ~70,000 tokens). null sends the whole eval split; `deploy` prints its estimate first.
    eval_size: int | None = 200
    # Names of the environment variables that hold the account's coordinates and key (never the values).
    endpoint_env: str = "AZURE_OPENAI_ENDPOINT"
    # The data plane takes this key when the variable is set; unset (or api_key_env null), it takes an Entra ID
    # token for https://cognitiveservices.azure.com/.default from `credential` (keyless: the identity needs the
    # Cognitive Services OpenAI Contributor role; resources with disableLocalAuth refuse keys with 403).
    api_key_env: str | None = "AZURE_OPENAI_API_KEY"
    subscription_env: str = "AZURE_SUBSCRIPTION_ID"
    resource_group_env: str = "AZURE_RESOURCE_GROUP"
    account_env: str = "AZURE_OPENAI_ACCOUNT"
    # Data-plane API version (files, fine-tuning jobs, chat completions).
    api_version: str = "2024-10-21"
    # Azure Resource Manager, where the deployment is created (sovereign clouds have their own).
    management_endpoint: str = "https://management.azure.com"
    # Token for Resource Manager (and the data plane when keyless): default (DefaultAzureCredential: environment,
    # workload or managed identity, az login, ...) or environment (EnvironmentCredential: AZURE_TENANT_ID,
    # AZURE_CLIENT_ID, AZURE_CLIENT_SECRET).
    credential: str = "default"
    # false when AZURE_AUTHORITY_HOST is an authority Microsoft's instance discovery does not know (private clouds).
    instance_discovery: bool = True
    # The Azure OpenAI model that is fine-tuned: the service trains its own models, not the local checkpoint.
    base_model: str = "gpt-4.1-mini-2025-04-14"
    # Part of the fine-tuned model's name: up to 40 letters, digits, '-' and '_' (the job reference's rule).
    suffix: str = "sweeps"
    # The job's trainingType: null leaves it out (the resource's region trains); globalstandard trains wherever
    # Azure has capacity (global training), which some base models need in some regions. It needs a data-plane
    # api_version that documents it (2025-02-01-preview or later).
    training_type: str | None = None
    # Fine-tuning hyperparameter -> the champion run's param it comes from; a number is used as is, null lets the
    # service choose. learning_rate_multiplier is the param divided by lr_reference, clamped (with a note) to
    # Azure's recommended 0.02 to 0.2; a number given here is sent as is.
    hyperparameters: dict[str, Any] = field(
        default_factory=lambda: {"n_epochs": "epochs", "batch_size": "batch_size", "learning_rate_multiplier": "lr"}
    )
    lr_reference: float = 5e-5
    # Seed of the fine-tuning job; null: the champion run's seed.
    seed: int | None = None
    # Prefix of the deployments: the champion's registered version N is served by <deployment_name>-vN (ARM cannot
    # change a deployment's model). A new champion gets its own deployment; the previous one is deleted once the
    # new one answers, so at most two of the resource's five fine-tuned deployments are sweeps'.
    deployment_name: str = "sweeps-champion"
    # Deployment type as the fine-tuning deployment reference spells it: standard, globalstandard or developertier.
    sku_name: str = "standard"
    # Capacity units; each is 1,000 tokens and 6 requests a minute. 50 sends the default eval_size in about a minute
    # and a half; 1 would take over an hour for it. The hourly hosting fee does not depend on it; quota does.
    sku_capacity: int = 50
    # Seconds between status reads; minutes to wait for the job before handing back (a rerun re-attaches).
    poll_seconds: float = 30.0
    wait_minutes: float = 720.0


@dataclass
class LocalDeployConfig(EndpointConfig):
    target: str = "local"
    host: str = "127.0.0.1"
    port: int = 8000
    # The model name clients send; null: registry.model_name.
    served_model: str | None = None
    # Name of an environment variable whose value clients must send as their API key; null: no key.
    api_key_env: str | None = None
    # Seconds a request may take.
    timeout_s: float = 60.0
