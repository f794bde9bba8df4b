"""deploy=azure_openai: the chat-format training and validation files: uploaded (or found again), processed, and
deleted once no job needs them (a resource holds at most 50 files)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps.azure_openai import StillRunning
from sweeps.azure_openai.account import _reason
from sweeps.endpoint_calls import error_code
from sweeps.errors import ConfigError, DeployError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from openai import AzureOpenAI

FILE_DONE = ("processed", "error", "deleted")


def _upload(
    client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, tags: dict, rows: dict[str, list], folder: Path
) -> dict[str, str]:
    """Upload (or find again) the training and validation files; wait until the service has processed them."""
    import openai

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
            try:
                uploaded = client.files.create(file=(path.name, fh), purpose="fine-tune")
            except openai.BadRequestError as exc:
                if "quota" not in str(error_code(exc)).lower() and "maximum number of files" not in str(exc):
                    raise DeployError(f"Azure OpenAI refused the {split} file: {_reason(exc)}") from None
                delete_files(client, mlflow_client, run_id, ids)
                raise ConfigError(
                    f"the Azure OpenAI resource holds as many files as it may ({_reason(exc)}); delete files no job "
                    "needs (Azure AI Foundry portal > Data files, or client.files.delete(<id>)), then rerun"
                ) from None
        print(f"uploaded {split} data: {uploaded.id} ({len(examples)} examples, {uploaded.bytes} bytes)", flush=True)
        mlflow_client.set_tag(run_id, tag, uploaded.id)
        ids[split] = uploaded.id
    return ids


def delete_files(client: AzureOpenAI, mlflow_client: MlflowClient, run_id: str, ids: dict[str, str]) -> None:
    """Delete uploaded files no job needs any more (a resource holds at most 50); forget them in the run."""
    import openai

    for split, file_id in ids.items():
        try:
            client.files.delete(file_id)
        except openai.NotFoundError:
            pass
        except openai.APIError as exc:
            print(f"could not delete {split} file {file_id} ({_reason(exc)}); delete it by hand", flush=True)
            continue
        mlflow_client.delete_tag(run_id, f"azure.{split}_file")
        print(f"deleted {split} file {file_id}: no job needs it any more", flush=True)


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


def run_files(tags: dict) -> dict[str, str]:
    """The uploaded files the run's tags name, by split."""
    return {split: tags[f"azure.{split}_file"] for split in ("train", "validation") if tags.get(f"azure.{split}_file")}
