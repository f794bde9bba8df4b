"""A loopback fake of Azure OpenAI: the data plane the openai SDK's `AzureOpenAI` client calls, the ARM
`Microsoft.CognitiveServices` accounts/deployments API, and the Microsoft Entra ID token endpoint.

Real HTTP on 127.0.0.1. The data plane is plain HTTP (the SDK accepts an http:// endpoint); ARM and the token
endpoint speak TLS with a self-signed certificate (azure-identity only takes an https authority, and azure-core
refuses bearer tokens over plain HTTP), trusted by clients through REQUESTS_CA_BUNDLE. Requests are checked
against the published API (api-version, api-key or bearer token, purpose, chat-format JSONL, model names,
required fields) and answered in the service's shapes, errors in Azure's `{"error": {"code", "message"}}`.

A fine-tuning job moves validating_files -> queued -> running -> succeeded (or failed / cancelled), one step
per job read, posting message and metrics events; the fine-tuned model is a bag-of-words classifier learnt
from the uploaded training file, so a deployment of it answers chat completions with label words.
Failures can be injected: a rejected file, a failed job, 429s on chat completions, no deployment quota.

Limits and refusals follow the published references: chat completions are limited per deployment by its
capacity (1 unit: 1,000 tokens and 6 requests a minute; `rate_window` is how long the fake's minute lasts),
answering 429 with retry-after and retry-after-ms; prompts with a `filtered_words` word are refused as the
content filter refuses them (400, code content_filter); a resource holds at most 50 files and 5 deployments of
fine-tuned models; ARM refuses to change the model of an existing deployment (CannotChangeDeploymentModel);
the data plane takes an api-key or an Entra ID bearer token for https://cognitiveservices.azure.com/.default,
and with `local_auth_disabled` (the resource's disableLocalAuth) answers api-key requests with 403.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import re
import secrets
import ssl
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

DATA_PLANE_VERSIONS = {
    "2024-10-21",
    "2024-08-01-preview",
    "2025-02-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
}
ARM_VERSIONS = {"2023-05-01", "2024-10-01", "2025-04-01-preview", "2025-06-01", "2025-09-01"}
BASE_MODELS = {
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "gpt-35-turbo-0125",
}
SKUS = {"standard", "globalstandard", "developertier", "datazonestandard", "provisionedmanaged"}
# Deployment types of fine-tuned models, as the fine-tuning deployment reference spells them.
FINE_TUNED_SKUS = {"standard", "globalstandard", "developertier"}
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
MAX_FILES = 50
MAX_FINE_TUNED_DEPLOYMENTS = 5
# Per capacity unit of a deployment.
TOKENS_PER_UNIT = 1000
REQUESTS_PER_UNIT = 6
# trainingType (global training) is documented from this data-plane version on.
TRAINING_TYPE_VERSIONS = {"2025-02-01-preview", "2025-03-01-preview", "2025-04-01-preview"}
TRAINING_TYPES = {"standard", "globalstandard"}
SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,40}")
ROLES = {"system", "user", "assistant"}
HYPERPARAMETERS = {"n_epochs": int, "batch_size": int, "learning_rate_multiplier": (int, float)}
MIN_TRAINING_EXAMPLES = 10


class Reply(Exception):
    """An HTTP answer raised from a route."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def error(status: int, code: str, message: str, **extra: Any) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message, **extra}})


@dataclass
class FineTunedModel:
    """A multinomial naive Bayes over lower-cased words, learnt from chat examples."""

    counts: dict[str, Counter] = field(default_factory=dict)

    @classmethod
    def learn(cls, examples: list[dict]) -> FineTunedModel:
        model = cls()
        for example in examples:
            text = " ".join(m["content"] for m in example["messages"] if m["role"] == "user")
            answer = [m["content"] for m in example["messages"] if m["role"] == "assistant"][-1].strip()
            model.counts.setdefault(answer, Counter()).update(_words(text))
        return model

    def answer(self, text: str) -> str:
        vocab = len(set().union(*self.counts.values())) or 1
        words = _words(text)

        def score(label: str) -> float:
            counts = self.counts[label]
            total = sum(counts.values())
            return sum(math.log((counts[w] + 1) / (total + vocab)) for w in words)

        return max(sorted(self.counts), key=score)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


class AzureOpenAIFake:
    """Both servers and the service state. Use as a context manager, or start() / stop()."""

    def __init__(self, workdir: Path, *, api_key: str, client_secret: str) -> None:
        self.api_key = api_key
        self.client_secret = client_secret
        self.tenant_id = "7f3e2a1b-0c4d-4e5f-8a9b-1c2d3e4f5a6b"
        self.client_id = "3b9c1d2e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"
        self.subscription = "0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a"
        self.resource_group = "rg-sweeps"
        self.account = "sweeps-aoai"
        self.workdir = Path(workdir)
        self.lock = threading.RLock()
        self.files: dict[str, dict] = {}
        self.file_data: dict[str, list[dict]] = {}
        self.rejected: dict[str, str] = {}
        self.jobs: dict[str, dict] = {}
        self.events: dict[str, list[dict]] = {}
        self.checkpoints: dict[str, list[dict]] = {}
        self.models: dict[str, FineTunedModel] = {}
        self.deployments: dict[str, dict] = {}
        self.operations: dict[str, int] = {}
        self.tokens: set[str] = set()
        self.token_scopes: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.chat_answers: list[tuple[str, str]] = []
        self.deployment_puts: list[dict] = []
        # Injected failures.
        self.reject_files = False
        self.fail_jobs = False
        self.hold_jobs = False
        self.rate_limited_calls = 0
        self.quota_exhausted = False
        self.local_auth_disabled = False
        self.throttle_models = False
        self.filtered_words: set[str] = set()
        self.global_only_models: set[str] = set()
        # Seconds the fake's rate-limit minute lasts (tests shorten it).
        self.rate_window = 60.0
        self.usage: dict[str, deque] = {}
        self.throttled: list[float] = []
        self.filtered: list[str] = []
        self.deleted_files: list[str] = []
        self._servers: list[ThreadingHTTPServer] = []

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> AzureOpenAIFake:
        self.ca_file = self.workdir / "fake-azure-ca.pem"
        cert, key = _self_signed(self.workdir)
        self.ca_file.write_bytes(cert.read_bytes())
        data_plane = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, self._data_plane))
        management = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, self._management))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        management.socket = context.wrap_socket(management.socket, server_side=True)
        self._servers = [data_plane, management]
        for server in self._servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{data_plane.server_address[1]}"
        self.management_endpoint = f"https://127.0.0.1:{management.server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> AzureOpenAIFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, keyless: bool = False) -> dict[str, str]:
        """What a user's environment holds for this account: coordinates, key (none when keyless), service
        principal."""
        return {
            "AZURE_OPENAI_ENDPOINT": self.endpoint,
            **({} if keyless else {"AZURE_OPENAI_API_KEY": self.api_key}),
            "AZURE_SUBSCRIPTION_ID": self.subscription,
            "AZURE_RESOURCE_GROUP": self.resource_group,
            "AZURE_OPENAI_ACCOUNT": self.account,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "AZURE_AUTHORITY_HOST": self.management_endpoint,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
        }

    def overrides(self) -> list[str]:
        """Config overrides that point the deploy target at this fake's management endpoint."""
        return [
            f"deploy.management_endpoint={self.management_endpoint}",
            "deploy.instance_discovery=false",
            "deploy.poll_seconds=0.02",
        ]

    def add_deployment(self, name: str, model: str, capacity: int = 1) -> None:
        """A deployment someone else made: of a fine-tuned model (answering "ok") unless `model` is a base one."""
        with self.lock:
            if model not in BASE_MODELS:
                example = {"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "ok"}]}
                self.models.setdefault(model, FineTunedModel.learn([example]))
            self.deployments[name] = {
                "id": f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
                f"Microsoft.CognitiveServices/accounts/{self.account}/deployments/{name}",
                "name": name,
                "type": "Microsoft.CognitiveServices/accounts/deployments",
                "sku": {"name": "standard", "capacity": capacity},
                "properties": {
                    "model": {"format": "OpenAI", "name": model, "version": "1"},
                    "provisioningState": "Succeeded",
                    "capabilities": {"chatCompletion": "true"},
                },
                "_reads": 0,
            }

    # -- data plane ----------------------------------------------------------------------------------
    def _authenticate(self, request: _Request) -> None:
        """An api-key (unless local auth is disabled) or a bearer token issued for Cognitive Services."""
        key = request.headers.get("api-key")
        auth = request.headers.get("Authorization", "")
        if key is None and auth.startswith("Bearer "):
            with self.lock:
                scope = self.token_scopes.get(auth[7:])
            if scope != COGNITIVE_SCOPE:
                raise error(
                    401,
                    "401",
                    "Unauthorized. Access token is missing, invalid, audience is incorrect "
                    "(https://cognitiveservices.azure.com), or have expired.",
                )
            return
        if key is not None and self.local_auth_disabled:
            raise error(403, "AuthenticationTypeDisabled", "Key based authentication is disabled for this resource.")
        if key != self.api_key:
            raise error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource.",
            )

    def _data_plane(self, request: _Request) -> Reply:
        self._authenticate(request)
        version = request.query.get("api-version")
        if version is None:
            raise error(404, "404", "Resource not found")
        if version not in DATA_PLANE_VERSIONS:
            raise error(400, "BadRequest", f"API version {version} is not supported")
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] != ["openai"]:
            raise error(404, "404", "Resource not found")
        parts = parts[1:]
        method = request.method
        if parts == ["models"] and method == "GET":
            if self.throttle_models:
                reply = error(429, "429", "Rate limit is exceeded. Try again in 42 seconds.")
                reply.headers = {"retry-after": "42", "retry-after-ms": "42000"}
                raise reply
            return Reply(200, {"object": "list", "data": self._models()})
        if parts == ["files"] and method == "POST":
            return self._upload(request)
        if parts == ["files"] and method == "GET":
            return Reply(200, {"object": "list", "data": list(self.files.values())})
        if len(parts) == 2 and parts[0] == "files":
            file = self._file(parts[1])
            if method == "DELETE":
                del self.files[parts[1]]
                self.deleted_files.append(parts[1])
                return Reply(200, {"id": parts[1], "object": "file", "deleted": True})
            if file["status"] == "pending":
                file["status"] = "error" if parts[1] in self.rejected else "processed"
                file["status_details"] = self.rejected.get(parts[1])
            return Reply(200, file)
        if parts[:2] == ["fine_tuning", "jobs"]:
            return self._fine_tuning(request, parts[2:])
        if len(parts) == 4 and parts[0] == "deployments" and parts[2:] == ["chat", "completions"] and method == "POST":
            return self._chat(request, parts[1])
        raise error(404, "404", "Resource not found")

    def _models(self) -> list[dict]:
        """Base models (fine-tunable) and fine-tuned ones (deployable), as Azure's GET /openai/models lists them."""
        created = int(time.time())
        listed = []
        for name in sorted(BASE_MODELS) + sorted(self.models):
            base = name in BASE_MODELS
            listed.append(
                {
                    "id": name,
                    "object": "model",
                    "created_at": created,
                    "status": "succeeded",
                    "lifecycle_status": "generally-available",
                    "capabilities": {"fine_tune": base, "inference": True, "chat_completion": True},
                    **({} if base else {"model": name.split(".ft-")[0], "fine_tune": name}),
                }
            )
        return listed

    def _upload(self, request: _Request) -> Reply:
        form = request.form()
        if form.get("purpose") != "fine-tune":
            raise error(
                400, "invalidPayload", f"purpose={form.get('purpose')!r}: this test account takes fine-tune files"
            )
        if "file" not in form:
            raise error(400, "invalidPayload", "The file field is required.")
        filename, content = form["file"]
        if not filename.endswith(".jsonl"):
            raise error(400, "invalidPayload", "Fine-tune files must be JSONL (.jsonl).")
        if len(self.files) >= MAX_FILES:
            raise error(
                400,
                "QuotaExceeded",
                f"The maximum number of files ({MAX_FILES}) for this resource has been reached. Delete files you no "
                "longer need and try again.",
            )
        file_id = f"file-{secrets.token_hex(16)}"
        examples, problem = _chat_examples(content)
        if self.reject_files and problem is None:
            problem = "The file contains prohibited content and cannot be used for fine-tuning."
        if problem:
            self.rejected[file_id] = problem
        self.file_data[file_id] = examples
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": "fine-tune",
            "status": "pending",
            "status_details": None,
        }
        return Reply(201, self.files[file_id])

    def _file(self, file_id: str) -> dict:
        if file_id not in self.files:
            raise error(404, "fileNotFound", f"File with id '{file_id}' not found.")
        return self.files[file_id]

    def _fine_tuning(self, request: _Request, rest: list[str]) -> Reply:
        method = request.method
        if not rest and method == "POST":
            return self._create_job(request.json(), request.query["api-version"])
        if not rest and method == "GET":
            jobs = sorted(self.jobs.values(), key=lambda j: j["created_at"], reverse=True)
            return Reply(200, self._page(jobs, request.query))
        job = self.jobs.get(rest[0])
        if job is None:
            raise error(404, "notFound", f"Job with id '{rest[0]}' not found.")
        if len(rest) == 1 and method == "GET":
            self._advance(job)
            return Reply(200, job)
        if rest[1:] == ["events"] and method == "GET":
            return Reply(200, self._page(self.events[job["id"]][::-1], request.query))
        if rest[1:] == ["checkpoints"] and method == "GET":
            return Reply(200, self._page(self.checkpoints[job["id"]][::-1], request.query))
        if rest[1:] == ["cancel"] and method == "POST":
            if job["status"] in ("succeeded", "failed", "cancelled"):
                raise error(409, "jobNotCancellable", f"Job {job['id']} is {job['status']} and cannot be cancelled.")
            job["status"] = "cancelled"
            job["finished_at"] = int(time.time())
            self._event(job, "Job cancelled.")
            return Reply(200, job)
        raise error(404, "404", "Resource not found")

    def _page(self, items: list[dict], query: dict[str, str]) -> dict:
        if "after" in query:
            ids = [i["id"] for i in items]
            items = items[ids.index(query["after"]) + 1 :] if query["after"] in ids else []
        limit = int(query.get("limit", 20))
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}

    def _create_job(self, body: dict, version: str) -> Reply:
        for key in ("model", "training_file"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise error(400, "invalidPayload", f"The '{key}' field is required.", param=key)
        if body["model"] not in BASE_MODELS:
            raise error(400, "invalidPayload", f"The base model '{body['model']}' does not support fine-tuning.")
        for key in ("training_file", "validation_file"):
            if body.get(key) is None:
                continue
            file = self.files.get(body[key])
            if file is None:
                raise error(400, "invalidPayload", f"{key}: file '{body[key]}' not found.", param=key)
            if file["status"] != "processed":
                raise error(400, "invalidPayload", f"{key}: file '{body[key]}' is {file['status']}, not processed.")
        hyper = body.get("hyperparameters") or {}
        for name, value in hyper.items():
            kind = HYPERPARAMETERS.get(name)
            if kind is None:
                raise error(400, "invalidPayload", f"Unknown hyperparameter '{name}'.", param="hyperparameters")
            if value != "auto" and (not isinstance(value, kind) or isinstance(value, bool) or value <= 0):
                raise error(400, "invalidPayload", f"hyperparameters.{name}={value!r} must be a positive number.")
        suffix = body.get("suffix")
        if suffix is not None and not SUFFIX.fullmatch(suffix):
            raise error(
                400,
                "invalidPayload",
                f"suffix={suffix!r}: the suffix can contain up to 40 characters (a-z, A-Z, 0-9, - and _).",
                param="suffix",
            )
        training_type = body.get("trainingType")
        if training_type is not None:
            if version not in TRAINING_TYPE_VERSIONS:
                raise error(400, "invalidPayload", f"trainingType is not supported in API version {version}.")
            if training_type not in TRAINING_TYPES:
                raise error(400, "invalidPayload", f"trainingType={training_type!r} is not a training type.")
        if body["model"] in self.global_only_models and training_type != "globalstandard":
            raise error(
                400,
                "invalidPayload",
                f"The base model '{body['model']}' can only be fine-tuned with global training in this region "
                "(trainingType globalstandard).",
            )
        job_id = f"ftjob-{secrets.token_hex(16)}"
        job = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": int(time.time()),
            "finished_at": None,
            "model": body["model"],
            "fine_tuned_model": None,
            "organization_id": "",
            "result_files": [],
            "status": "validating_files",
            "hyperparameters": {
                "n_epochs": hyper.get("n_epochs", "auto"),
                "batch_size": hyper.get("batch_size", "auto"),
                "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
            },
            "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "trained_tokens": None,
            "error": None,
            "seed": body.get("seed", 0),
            "suffix": suffix,
            "trainingType": training_type,
            "estimated_finish": None,
            "integrations": [],
        }
        self.jobs[job_id] = job
        self.events[job_id] = []
        self.checkpoints[job_id] = []
        self._event(job, "Job enqueued. Validating training file.")
        return Reply(201, job)

    def _event(self, job: dict, message: str, metrics: dict | None = None) -> None:
        self.events[job["id"]].append(
            {
                "id": f"ftevent-{secrets.token_hex(12)}",
                "object": "fine_tuning.job.event",
                "created_at": int(time.time()),
                "level": "info",
                "message": message,
                "type": "metrics" if metrics else "message",
                "data": metrics,
            }
        )

    def _advance(self, job: dict) -> None:
        """One step of the job's life per read."""
        status = job["status"]
        if status == "validating_files":
            examples = self.file_data[job["training_file"]]
            if len(examples) < MIN_TRAINING_EXAMPLES:
                self._fail(job, "invalid_training_file", f"Training file has {len(examples)} examples; at least 10.")
            else:
                job["status"] = "queued"
                self._event(job, "Training file validated. Job queued.")
        elif status == "queued":
            job["status"] = "running"
            job["_step"] = 0
            self._event(job, "Fine-tuning job started.")
        elif status == "running" and not self.hold_jobs:
            step = job["_step"] = job["_step"] + 1
            loss = 1.0 / (1 + step)
            metrics = {"step": step, "train_loss": loss, "train_mean_token_accuracy": 1 - loss / 2}
            if job["validation_file"]:
                metrics.update(valid_loss=loss * 1.1, valid_mean_token_accuracy=1 - loss / 1.8)
            self._event(job, f"Step {step}: training loss={loss:.4f}", metrics)
            if self.fail_jobs:
                self._fail(job, "server_error", "The fine-tuning job failed due to an internal error.")
            elif step == 3:
                model = f"{job['model']}.ft-{job['id'][6:]}" + (f"-{job['suffix']}" if job["suffix"] else "")
                self.models[model] = FineTunedModel.learn(self.file_data[job["training_file"]])
                self.checkpoints[job["id"]].append(
                    {
                        "id": f"ftchkpt-{secrets.token_hex(12)}",
                        "object": "fine_tuning.job.checkpoint",
                        "created_at": int(time.time()),
                        "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{step}",
                        "fine_tuning_job_id": job["id"],
                        "metrics": {"step": float(step), "train_loss": loss, "full_valid_loss": loss * 1.1},
                        "step_number": step,
                    }
                )
                job.update(status="succeeded", fine_tuned_model=model, finished_at=int(time.time()))
                job["trained_tokens"] = sum(len(json.dumps(e)) // 4 for e in self.file_data[job["training_file"]])
                self._event(job, f"Fine-tuning job successfully completed. Model: {model}")

    def _fail(self, job: dict, code: str, message: str) -> None:
        job.update(
            status="failed", finished_at=int(time.time()), error={"code": code, "message": message, "param": None}
        )
        self._event(job, f"Fine-tuning job failed: {message}")

    def _chat(self, request: _Request, deployment: str) -> Reply:
        found = self.deployments.get(deployment)
        if found is None or found["properties"]["provisioningState"] != "Succeeded":
            raise error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the "
                "last 5 minutes, please wait a moment and try again.",
            )
        body = request.json()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise error(400, "invalid_request_error", "'messages' is a required property", param="messages")
        for message in messages:
            if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise error(400, "invalid_request_error", f"Invalid message: {message}", param="messages")
        user = " ".join(m["content"] for m in messages if m["role"] == "user")
        if any(word in user.lower() for word in self.filtered_words):
            with self.lock:
                self.filtered.append(user)
            raise _content_filtered()
        self._admit(deployment, found, messages, body, request.query["api-version"])
        with self.lock:
            if self.rate_limited_calls > 0:
                self.rate_limited_calls -= 1
                reply = error(
                    429,
                    "429",
                    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
                    f"{request.query['api-version']} have exceeded token rate limit of your current pricing tier. "
                    "Please retry after 1 second.",
                )
                reply.headers = {"retry-after-ms": "20", "retry-after": "1"}
                raise reply
        text = " ".join(m["content"] for m in messages if m["role"] == "user")
        model = found["properties"]["model"]["name"]
        answer = self.models[model].answer(text)
        with self.lock:
            self.chat_answers.append((text, answer))
        tokens = len(text) // 4 + 1
        return Reply(
            200,
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": tokens, "completion_tokens": 1, "total_tokens": tokens + 1},
            },
        )

    def _admit(self, name: str, found: dict, messages: list, body: dict, version: str) -> None:
        """The deployment's rate limits: requests and tokens (prompt characters / 4 plus max_tokens) in the
        last minute, from its capacity; over either, a 429 saying when the request would fit."""
        capacity = found["sku"]["capacity"]
        requests, tokens = REQUESTS_PER_UNIT * capacity, TOKENS_PER_UNIT * capacity
        cost = sum(len(m["content"]) for m in messages) // 4 + int(body.get("max_tokens") or 16)
        with self.lock:
            now = time.monotonic()
            window = self.usage.setdefault(name, deque())
            while window and window[0][0] <= now - self.rate_window:
                window.popleft()
            used = sum(t for _, t in window)
            if not window or (len(window) < requests and used + cost <= tokens):
                window.append((now, cost))  # an empty window admits any request, even one over the limit
                return
            if len(window) >= requests:
                limit, free_at = "call rate limit", window[len(window) - requests][0] + self.rate_window
            else:
                limit, freed = "token rate limit", used
                for stamp, spent in window:
                    freed -= spent
                    free_at = stamp + self.rate_window
                    if freed + cost <= tokens:
                        break
            wait = max(0.001, free_at - now)
            self.throttled.append(wait)
        seconds = max(1, math.ceil(wait))
        reply = error(
            429,
            "429",
            f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {version} have exceeded "
            f"{limit} of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go here: "
            "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
        )
        reply.headers = {"retry-after": str(seconds), "retry-after-ms": str(math.ceil(wait * 1000))}
        raise reply

    # -- Entra ID token endpoint and ARM --------------------------------------------------------------
    def _management(self, request: _Request) -> Reply:
        parts = [p for p in request.path.split("/") if p]
        if parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return Reply(200, self._openid(parts[0]))
        if parts[1:] == ["oauth2", "v2.0", "token"] and request.method == "POST":
            return self._token(parts[0], request.form())
        if parts[:1] == ["subscriptions"]:
            return self._arm(request, parts)
        raise error(404, "NotFound", f"No route for {request.path}")

    def _openid(self, tenant: str) -> dict:
        base = f"{self.management_endpoint}/{tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "response_types_supported": ["code", "id_token", "token"],
            "tenant_region_scope": "EU",
        }

    def _token(self, tenant: str, form: dict) -> Reply:
        if tenant != self.tenant_id:
            raise Reply(
                400, {"error": "invalid_request", "error_description": f"AADSTS90002: Tenant '{tenant}' not found."}
            )
        if form.get("grant_type") != "client_credentials" or form.get("client_id") != self.client_id:
            raise Reply(400, {"error": "unauthorized_client", "error_description": "AADSTS700016: unknown client."})
        if form.get("client_secret") != self.client_secret:
            raise Reply(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."})
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            raise Reply(400, {"error": "invalid_scope", "error_description": f"AADSTS70011: scope '{scope}'."})
        token = "eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(32)
        with self.lock:
            self.tokens.add(token)
            self.token_scopes[token] = scope
        return Reply(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})

    def _arm(self, request: _Request, parts: list[str]) -> Reply:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            raise Reply(
                401,
                {"error": {"code": "AuthenticationFailed", "message": "Authentication failed."}},
                {"WWW-Authenticate": f'Bearer authorization_uri="{self.management_endpoint}/{self.tenant_id}"'},
            )
        if self.token_scopes.get(auth[7:]) != f"{self.management_endpoint}/.default":
            raise error(
                401,
                "InvalidAuthenticationTokenAudience",
                "The access token has been obtained for wrong audience or resource. It should exactly match with one "
                f"of the allowed audiences '{self.management_endpoint}/'.",
            )
        version = request.query.get("api-version")
        if version is None:
            raise error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in ARM_VERSIONS:
            raise error(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid.")
        if parts[1] != self.subscription:
            raise error(404, "SubscriptionNotFound", f"The subscription '{parts[1]}' could not be found.")
        if parts[2:4] != ["resourceGroups", self.resource_group]:
            raise error(404, "ResourceGroupNotFound", f"Resource group '{parts[3]}' could not be found.")
        provider = parts[4:7]
        if provider == ["providers", "Microsoft.CognitiveServices", "locations"] and parts[8:9] == ["operationResults"]:
            return self._operation(parts[9])
        if provider != ["providers", "Microsoft.CognitiveServices", "accounts"] or parts[7] != self.account:
            name = parts[7] if len(parts) > 7 else ""
            raise error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.CognitiveServices/accounts/{name}' under resource group "
                f"'{self.resource_group}' was not found.",
            )
        account_id = "/" + "/".join(parts[:8])
        if len(parts) == 8 and request.method == "GET":
            return Reply(
                200,
                {
                    "id": account_id,
                    "name": self.account,
                    "type": "Microsoft.CognitiveServices/accounts",
                    "kind": "OpenAI",
                    "location": "swedencentral",
                    "sku": {"name": "S0"},
                    "properties": {"endpoint": self.endpoint + "/", "provisioningState": "Succeeded"},
                },
            )
        if len(parts) == 9 and parts[8] == "deployments" and request.method == "GET":
            return Reply(200, {"value": [_public(d) for d in self.deployments.values()]})
        if len(parts) == 10 and parts[8] == "deployments":
            return self._deployment(request, account_id, parts[9], version)
        raise error(404, "NotFound", f"No route for {request.path}")

    def _deployment(self, request: _Request, account_id: str, name: str, version: str) -> Reply:
        existing = self.deployments.get(name)
        if request.method == "GET":
            if existing is None:
                raise error(404, "DeploymentNotFound", f"Deployment '{name}' not found.")
            state = existing["properties"]
            if state["provisioningState"] in ("Creating", "Updating"):
                existing["_reads"] += 1
                if existing["_reads"] >= 2:
                    state["provisioningState"] = "Succeeded"
            return Reply(200, _public(existing))
        if request.method == "DELETE":
            if existing is None:
                return Reply(204)
            del self.deployments[name]
            operation = secrets.token_hex(8)
            self.operations[operation] = 0
            location = (
                f"{self.management_endpoint}/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.CognitiveServices/locations/swedencentral/operationResults/{operation}"
                f"?api-version={version}"
            )
            return Reply(202, None, {"Location": location, "Retry-After": "0"})
        if request.method != "PUT":
            raise error(405, "MethodNotAllowed", f"{request.method} is not supported here.")
        body = request.json()
        self.deployment_puts.append(body)
        sku, model = body.get("sku") or {}, (body.get("properties") or {}).get("model") or {}
        if str(sku.get("name", "")).lower() not in SKUS:
            raise error(400, "InvalidSkuName", f"sku.name={sku.get('name')!r} is not a deployment SKU.")
        if not isinstance(sku.get("capacity"), int) or sku["capacity"] < 1:
            raise error(400, "InvalidCapacity", f"sku.capacity={sku.get('capacity')!r}: a whole number >= 1.")
        if model.get("format") != "OpenAI" or not model.get("name") or not model.get("version"):
            raise error(400, "InvalidResourceProperties", "properties.model needs format 'OpenAI', name and version.")
        if model["name"] not in self.models and model["name"] not in BASE_MODELS:
            raise error(
                400,
                "DeploymentModelNotSupported",
                f"The model '{model['name']}' of format OpenAI version {model['version']} is not available.",
            )
        fine_tuned = model["name"] in self.models
        if fine_tuned and str(sku.get("name", "")).lower() not in FINE_TUNED_SKUS:
            raise error(
                400,
                "InvalidSkuName",
                f"sku.name={sku.get('name')!r}: a fine-tuned model deploys as {', '.join(sorted(FINE_TUNED_SKUS))}.",
            )
        if existing is not None and existing["properties"]["model"]["name"] != model["name"]:
            raise error(
                400,
                "CannotChangeDeploymentModel",
                f"Cannot change the model of deployment '{name}' from '{existing['properties']['model']['name']}' "
                f"to '{model['name']}'. Create a new deployment for the other model.",
            )
        others = [
            d for n, d in self.deployments.items() if n != name and d["properties"]["model"]["name"] in self.models
        ]
        if fine_tuned and existing is None and len(others) >= MAX_FINE_TUNED_DEPLOYMENTS:
            raise error(
                400,
                "QuotaExceeded",
                f"The maximum number of fine-tuned model deployments ({MAX_FINE_TUNED_DEPLOYMENTS}) for this resource "
                "has been reached. Delete a deployment of a fine-tuned model and try again.",
            )
        if self.quota_exhausted:
            raise error(
                400,
                "InsufficientQuota",
                f"This operation require {sku['capacity']} new capacity in quota Tokens Per Minute (thousands) - "
                f"{model['name']}, which is bigger than the current available capacity 0.",
            )
        self.deployments[name] = {
            "id": f"{account_id}/deployments/{name}",
            "name": name,
            "type": "Microsoft.CognitiveServices/accounts/deployments",
            "sku": {"name": sku["name"], "capacity": sku["capacity"]},
            "properties": {
                "model": {"format": "OpenAI", "name": model["name"], "version": model["version"]},
                "provisioningState": "Updating" if existing else "Creating",
                "capabilities": {"chatCompletion": "true"},
            },
            "_reads": 0,
        }
        return Reply(200 if existing else 201, _public(self.deployments[name]))

    def _operation(self, operation: str) -> Reply:
        if operation not in self.operations:
            raise error(404, "NotFound", "No such operation.")
        self.operations[operation] += 1
        return Reply(202, None, {"Retry-After": "0"}) if self.operations[operation] < 2 else Reply(204)


def _content_filtered() -> Reply:
    """The content filter's refusal of a prompt, as the service answers it."""
    return Reply(
        400,
        {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                "policy. Please modify your prompt and retry. To learn more about our content filtering policies "
                "please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {
                        "hate": {"filtered": False, "severity": "safe"},
                        "self_harm": {"filtered": False, "severity": "safe"},
                        "sexual": {"filtered": False, "severity": "safe"},
                        "violence": {"filtered": True, "severity": "medium"},
                    },
                },
            }
        },
    )


def _public(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if not k.startswith("_")}


def _chat_examples(content: bytes) -> tuple[list[dict], str | None]:
    """The file's chat examples, and the first problem found (None when every line is valid)."""
    examples = []
    for number, line in enumerate(content.decode("utf-8", "replace").split("\n"), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            return examples, f"Line {number}: invalid JSON ({exc.msg})."
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or not messages:
            return examples, f"Line {number}: each example needs a non-empty 'messages' list."
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                return examples, f"Line {number}: a message's role must be system, user or assistant."
            if not isinstance(message.get("content"), str) or not message["content"]:
                return examples, f"Line {number}: a message needs non-empty string content."
        if messages[-1]["role"] != "assistant":
            return examples, f"Line {number}: the last message must be the assistant's answer."
        examples.append(example)
    if not examples:
        return examples, "The file has no examples."
    return examples, None


class _Request:
    def __init__(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        url = urlparse(handler.path)
        self.method = handler.command
        self.path = url.path
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.headers = handler.headers
        self.body = body

    def json(self) -> dict:
        try:
            value = json.loads(self.body or b"null")
        except json.JSONDecodeError as exc:
            raise error(400, "invalid_request_error", f"The request body is not valid JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            raise error(400, "invalid_request_error", "The request body must be a JSON object.")
        return value

    def form(self) -> dict[str, Any]:
        """Fields of a urlencoded or multipart form; files as (filename, bytes)."""
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("application/x-www-form-urlencoded"):
            return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}
        if not kind.startswith("multipart/form-data"):
            raise error(400, "invalidPayload", f"Content-Type {kind!r}: expected a multipart form.")
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + kind.encode() + b"\r\n\r\n" + self.body)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            fields[name] = (filename, data) if filename else data.decode()
        return fields


def _handler(fake: AzureOpenAIFake, route) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = _Request(self, body)
            with fake.lock:
                fake.requests.append((self.command, request.path))
            try:
                if request.path.endswith("/chat/completions"):
                    reply = route(request)  # concurrent: the model answers outside the lock
                else:
                    with fake.lock:
                        reply = route(request)
            except Reply as raised:
                reply = raised
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", secrets.token_hex(16))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-azure.localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fake-azure-cert.pem", folder / "fake-azure-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
