"""deploy=azure_openai: Azure OpenAI fine-tunes one of its own base models on the champion's data (it cannot host
the local checkpoint), Azure Resource Manager deploys the result, and the eval set goes through the deployment so
its accuracy, precision, recall and F1 sit beside the local runs in MLflow.

One MLflow run per job spec (base model, hyperparameters, data, suffix, seed, system prompt) keeps every id in its
tags: files, job, last event seen, fine-tuned model, deployment. A rerun finds it and re-attaches; it never starts a
second job for the same spec, nor a second deployment.

account: the account named by environment variables, its clients and their checks, Azure's error reasons
finetune: the job spec and its MLflow run, the training files, the fine-tuning job and its events and checkpoints
arm: the deployment through Azure Resource Manager
actions: run, test, delete and cancel (what `python -m sweeps deploy` dispatches to)
This module holds what they share: StillRunning.
"""

from __future__ import annotations

from sweeps.errors import DeployError


class StillRunning(DeployError):
    """The service is still at work when the wait ends; a rerun re-attaches."""
