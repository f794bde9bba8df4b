"""The `deploy` config group: where the champion (the registry's `champion` alias) goes, and `python -m sweeps deploy`.

python -m sweeps deploy deploy=azure_openai          fine-tune an Azure OpenAI base model on the champion's data,
                                                     deploy it, run the eval set through the deployment
python -m sweeps deploy test deploy=azure_openai     run the eval set through the deployment again
python -m sweeps deploy delete deploy=azure_openai   remove the deployment (it costs an hourly fee while it exists)
python -m sweeps deploy cancel deploy=azure_openai   cancel a fine-tuning job that is still running
python -m sweeps deploy deploy=local                 serve the champion on localhost, OpenAI-compatible
python -m sweeps deploy test deploy=local            run the eval set through it with the openai client

This module checks the group's values and environment and dispatches the actions to the target's module; the
schemas live in sweeps.schema.deploy, the sweeps.azure_openai package and deploy_local.py do the work, and
sweeps.champion holds what they share (the champion, its eval set, scoring a chat endpoint).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from sweeps.errors import EXIT_BAD_INPUT, ConfigError, DeployError, report
from sweeps.schema.deploy import AzureOpenAIDeployConfig, DeployConfig, LocalDeployConfig

if TYPE_CHECKING:
    from sweeps.registry import Promotion

TARGETS = ("none", "azure_openai", "local")
ACTIONS = ("run", "test", "delete", "cancel")
# target -> the module that does its work (each has run, test, delete and cancel)
CONSUMERS = {"azure_openai": "sweeps.azure_openai.actions", "local": "sweeps.deploy_local"}
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
CREDENTIALS = ("default", "environment")
# Deployment types of a fine-tuned model, spelled as the fine-tuning deployment reference spells them.
SKU_NAMES = ("standard", "globalstandard", "developertier")
# The job's trainingType values, and the first data-plane API version that documents it (versions sort by date).
TRAINING_TYPES = ("standard", "globalstandard")
TRAINING_TYPE_SINCE = "2025-02-01-preview"
# A job's suffix: up to 40 letters, digits, '-' and '_' (the fine-tuning job reference).
SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,40}")
# Room in ARM's 64 characters for the "-v<version>" each deployment name gets.
DEPLOYMENT_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,55}")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


__all__ = ["DeployError", "after_sweep", "environment_problems", "main", "problems"]


def problems(cfg: DeployConfig) -> list[str]:
    """Checks of the values alone."""
    if cfg.target not in TARGETS:
        return [f"deploy.target={cfg.target}: choose one of {', '.join(TARGETS)} (e.g. deploy=none)"]
    if cfg.target == "none":
        return []
    schema = {"azure_openai": AzureOpenAIDeployConfig, "local": LocalDeployConfig}[cfg.target]
    if isinstance(cfg, DictConfig) and not issubclass(OmegaConf.get_type(cfg) or DeployConfig, schema):
        return [f"deploy.target={cfg.target}: select the target with deploy={cfg.target}, which brings its settings"]
    errors = []
    if cfg.eval_size is not None and cfg.eval_size < 1:
        errors.append(f"deploy.eval_size={cfg.eval_size}: a positive number of examples, or null for all")
    if cfg.eval_concurrency < 1:
        errors.append(f"deploy.eval_concurrency={cfg.eval_concurrency}: must be >= 1")
    if cfg.max_retries < 0:
        errors.append(f"deploy.max_retries={cfg.max_retries}: must be >= 0")
    try:
        cfg.system_prompt.format(labels="negative or positive")
    except (KeyError, IndexError, ValueError):
        errors.append("deploy.system_prompt: only {labels} is filled in; double other braces ({{ }})")
    if cfg.target == "azure_openai":
        errors += _azure_problems(cfg)
    else:
        errors += _local_problems(cfg)
    return errors


def _azure_problems(cfg: AzureOpenAIDeployConfig) -> list[str]:
    errors = []
    for key in ("endpoint_env", "api_key_env", "subscription_env", "resource_group_env", "account_env"):
        value = getattr(cfg, key)
        if key == "api_key_env" and value is None:
            continue
        if not value or not ENV_NAME.match(value):
            errors.append(f"deploy.{key}={value}: the NAME of an environment variable (the value stays in it)")
    if cfg.credential not in CREDENTIALS:
        errors.append(f"deploy.credential={cfg.credential}: choose one of {', '.join(CREDENTIALS)}")
    if not cfg.management_endpoint.startswith("https://"):
        errors.append(f"deploy.management_endpoint={cfg.management_endpoint}: an https:// URL")
    if not cfg.base_model:
        errors.append("deploy.base_model is empty: name an Azure OpenAI model that can be fine-tuned")
    if not SUFFIX.fullmatch(cfg.suffix or ""):
        fixed = re.sub(r"[^A-Za-z0-9_-]", "-", cfg.suffix or "")[:40] or "sweeps"
        errors.append(
            f"deploy.suffix={cfg.suffix}: up to 40 letters (a-z, A-Z), digits, '-' and '_', as Azure OpenAI takes "
            f"it; e.g. deploy.suffix={fixed}"
        )
    if not DEPLOYMENT_PREFIX.fullmatch(cfg.deployment_name or ""):
        errors.append(
            f"deploy.deployment_name={cfg.deployment_name}: 2 to 56 letters, digits, '-', '_' or '.', starting with a "
            "letter or digit (each deployment is named <deployment_name>-v<registered version>)"
        )
    if cfg.training_type is not None:
        if cfg.training_type not in TRAINING_TYPES:
            errors.append(
                f"deploy.training_type={cfg.training_type}: choose one of {', '.join(TRAINING_TYPES)}, or null"
            )
        elif cfg.api_version < TRAINING_TYPE_SINCE:
            errors.append(
                f"deploy.training_type={cfg.training_type}: API version {cfg.api_version} has no trainingType; set "
                f"deploy.api_version={TRAINING_TYPE_SINCE} (or later)"
            )
    for name, source in (cfg.hyperparameters or {}).items():
        if name not in HYPERPARAMETERS:
            errors.append(f"deploy.hyperparameters.{name}: unknown; the job takes {', '.join(HYPERPARAMETERS)}")
        elif isinstance(source, bool) or (isinstance(source, (int, float)) and source <= 0):
            errors.append(f"deploy.hyperparameters.{name}={source}: a positive number, a run param name, or null")
    if cfg.lr_reference <= 0:
        errors.append(f"deploy.lr_reference={cfg.lr_reference}: must be > 0")
    if cfg.sku_capacity < 1:
        errors.append(f"deploy.sku_capacity={cfg.sku_capacity}: must be >= 1")
    if (cfg.sku_name or "").lower() not in SKU_NAMES:
        errors.append(f"deploy.sku_name={cfg.sku_name}: a fine-tuned model deploys as one of {', '.join(SKU_NAMES)}")
    if cfg.poll_seconds <= 0 or cfg.wait_minutes <= 0:
        errors.append("deploy.poll_seconds and deploy.wait_minutes: must be > 0")
    return errors


def _local_problems(cfg: LocalDeployConfig) -> list[str]:
    errors = []
    if not 1 <= cfg.port <= 65535:
        errors.append(f"deploy.port={cfg.port}: a TCP port, 1 to 65535")
    if not cfg.host:
        errors.append("deploy.host is empty: e.g. 127.0.0.1")
    if cfg.api_key_env is not None and not ENV_NAME.match(cfg.api_key_env):
        errors.append(f"deploy.api_key_env={cfg.api_key_env}: the NAME of an environment variable, or null")
    if cfg.timeout_s <= 0:
        errors.append(f"deploy.timeout_s={cfg.timeout_s}: must be > 0")
    return errors


def environment_problems(cfg: DeployConfig) -> list[str]:
    """Environment variables the target needs that are not set (a sweep checks them before its first trial)."""
    if cfg.target == "azure_openai":
        from sweeps.azure_openai.account import missing_environment

        return missing_environment(cfg, data_plane=True, management=True)
    if cfg.target == "local" and cfg.api_key_env:
        from sweeps.deploy_local import missing_environment

        return missing_environment(cfg)
    return []


def after_sweep(cfg: DictConfig, study: str) -> Promotion | None:
    """The end of a sweep: promote its best trial, then deploy the champion to `deploy.target` (none: nothing)."""
    if cfg.deploy.target == "none":
        return None
    from sweeps.promote import promote_best

    promotion = promote_best(cfg, sweep=study)
    print(promotion.message, flush=True)
    if cfg.deploy.target == "azure_openai":
        from sweeps.azure_openai import actions

        actions.run(cfg)
    else:
        print("serve the champion with: python -m sweeps deploy deploy=local", flush=True)
    return promotion


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps deploy [run|test|delete|cancel]",
        description="Deploy the registry's champion to the `deploy` target (azure_openai, local), test or remove it.",
        epilog=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--restart", action="store_true", help="azure_openai: start a new fine-tuning job in place of a failed one"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. deploy=azure_openai deploy.base_model=...")
    return parser


def main(argv: list[str]) -> int:
    import os

    from sweeps.compose import compose
    from sweeps.secrets import mask_text

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    action = "run"
    if argv and not argv[0].startswith("-") and not re.search(r"[=~+]", argv[0]):
        action, argv = argv[0], argv[1:]
    args = _parser().parse_args(argv)
    try:
        if action not in ACTIONS:
            raise ConfigError(f"deploy {action}: unknown action; choose one of {', '.join(ACTIONS)}")
        cfg = compose(args.overrides)
        errors = problems(cfg.deploy)
        if errors:
            raise ConfigError(*errors)
        if cfg.deploy.target == "none":
            raise ConfigError(
                "deploy=none: nothing to deploy; choose a target: deploy=azure_openai or deploy=local (conf/deploy/)"
            )
        target = importlib.import_module(CONSUMERS[cfg.deploy.target])
        return getattr(target, action)(cfg, restart=args.restart)
    except ConfigError as error:
        error.errors = [mask_text(e) for e in error.errors]
        report(error)
        return EXIT_BAD_INPUT
    except DeployError as error:
        print(f"error: {mask_text(str(error))}", file=sys.stderr)
        return 1
