"""deploy=local: the champion on localhost behind an OpenAI-compatible API, and `deploy test` against it.

The champion is the registry's champion alias, loaded from MLflow (its mlflow.transformers model). Neither MLflow's
model server (/invocations only; its gateway's chat route passes one message and needs string predictions) nor
`transformers serve` (generation through a chat template) can answer chat completions from a classifier, so a small
Starlette app under uvicorn does: POST /v1/chat/completions answers the label word the model picks, exactly as
training evaluated it (the classification head's argmax, or for a causal LM the likeliest label word after the
dataset's prompt); GET /v1/models lists the one model; errors have OpenAI's `{"error": {...}}` shape.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from sweeps.champion import Champion, chat_eval, comparison, load_champion, load_data, log_eval
from sweeps.errors import ConfigError
from sweeps.schema.deploy import LocalDeployConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

ROLES = ("system", "developer", "user", "assistant")


def missing_environment(cfg: LocalDeployConfig) -> list[str]:
    """The API key variable the config names, when it is not set."""
    if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
        return [
            f"{cfg.api_key_env} is not set (deploy.api_key_env names it): export it, or set deploy.api_key_env=null"
        ]
    return []


def _api_key(cfg: LocalDeployConfig) -> str | None:
    errors = missing_environment(cfg)
    if errors:
        raise ConfigError(*errors)
    return os.environ[cfg.api_key_env] if cfg.api_key_env else None


def served_name(cfg: DictConfig) -> str:
    return cfg.deploy.served_model or cfg.registry.model_name


class LabelModel:
    """The champion's model and tokenizer, answering one text with one label index."""

    def __init__(self, champion: Champion, tracking_uri: str, registry_uri: str) -> None:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri)
        uri = f"models:/{champion.model_name}/{champion.version}"
        components = mlflow.transformers.load_model(uri, return_type="components")
        self.model = components["model"].eval()
        self.tokenizer = components["tokenizer"]
        config = champion.config
        self.task = config.model.task
        self.max_length = int(config.tokenizer.max_length)
        self.label_names = list(config.dataset.label_names)
        self.prompt = str(config.dataset.prompt)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.lock = threading.Lock()

    def classify(self, text: str) -> tuple[int, int]:
        """The predicted label index and the number of prompt tokens."""
        import numpy as np

        from sweeps.loop import evaluate_classifier, evaluate_label_words
        from sweeps.tokens import Encoded, label_word_ids

        tok = self.tokenizer
        ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
        if self.task == "causal_lm":
            head, tail = self.prompt.split("{text}", 1)
            head_ids = tok(head, add_special_tokens=False)["input_ids"] if head else []
            tail_ids = tok(tail, add_special_tokens=False)["input_ids"] if tail else []
            answers = label_word_ids(tok, self.label_names)
            budget = max(0, self.max_length - len(head_ids) - len(tail_ids) - max(len(a) + 1 for a in answers))
            row = head_ids + ids[:budget] + tail_ids
        else:
            answers, row = [], ids[: self.max_length]
        enc = Encoded.from_rows([row], np.zeros(1, dtype=np.int64))
        with self.lock:
            if self.task == "causal_lm":
                result = evaluate_label_words(self.model, enc, answers, 1, self.pad_id, "cpu", nullcontext(), False)
            else:
                result = evaluate_classifier(self.model, enc, 1, self.pad_id, "cpu", nullcontext(), False)
        return int(result.y_pred[0]), len(row)


def build_app(classify, label_names: list[str], model_id: str, info: dict[str, str], api_key: str | None) -> Starlette:
    """The OpenAI-compatible app around `classify(text) -> (label index, prompt tokens)`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    created = int(time.time())

    def fail(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        return JSONResponse(body, status_code=status)

    def denied(request) -> JSONResponse | None:
        if api_key is None:
            return None
        sent = request.headers.get("authorization", "")
        if not secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
            return fail(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    async def health(request) -> JSONResponse:
        return JSONResponse({"status": "ok", **info})

    async def models(request) -> JSONResponse:
        refused = denied(request)
        if refused:
            return refused
        entry = {"id": model_id, "object": "model", "created": created, "owned_by": "sweeps", **info}
        return JSONResponse({"object": "list", "data": [entry]})

    async def chat(request) -> JSONResponse:
        refused = denied(request)
        if refused:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return fail(400, "The body is not valid JSON.")
        if not isinstance(body, dict):
            return fail(400, "The body must be a JSON object.")
        if body.get("model") != model_id:
            message = f"The model '{body.get('model')}' does not exist; this server serves '{model_id}'."
            return fail(404, message, "model", "model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return fail(400, "'messages' must be a non-empty array.", "messages")
        texts = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                return fail(400, f"messages[{i}]: unknown role.", f"messages[{i}].role")
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            if not isinstance(content, str):
                return fail(400, f"messages[{i}]: content must be text.", f"messages[{i}].content")
            if message["role"] == "user":
                texts.append(content)
        if not texts:
            return fail(400, "No user message to classify.", "messages")
        if body.get("stream"):
            return fail(400, "Streaming is not supported by this server.", "stream")
        if body.get("n", 1) != 1:
            return fail(400, "Only n=1 is supported.", "n")
        label, prompt_tokens = await run_in_threadpool(classify, texts[-1])
        return JSONResponse(
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_id,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": label_names[label], "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
            }
        )

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


def run(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    """Serve the champion until interrupted."""
    import uvicorn

    from sweeps import registry, tracking

    d = cfg.deploy
    api_key = _api_key(d)
    champion = load_champion(cfg)
    with socket.socket() as probe:
        try:
            probe.bind((d.host, d.port))
        except OSError as exc:
            raise ConfigError(
                f"deploy.port={d.port}: cannot listen on {d.host}:{d.port} ({exc.strerror}); choose another port"
            ) from None
    uri = tracking.resolve_uri(cfg.tracking)
    model = LabelModel(champion, uri, registry.registry_uri(cfg.registry, uri))
    info = {"registered_model": champion.model_name, "version": champion.version, "alias": champion.alias}
    app = build_app(model.classify, model.label_names, served_name(cfg), info, api_key)
    print(
        f"serving {champion.model_uri} (version {champion.version}, run {champion.run.info.run_id}) as "
        f"'{served_name(cfg)}' on http://{d.host}:{d.port}/v1; test it with "
        "python -m sweeps deploy test deploy=local",
        flush=True,
    )
    uvicorn.run(app, host=d.host, port=d.port, log_level="warning")
    return 0


def test(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    """Send the champion's eval set through the local endpoint with the openai client; log the metrics in MLflow."""
    import openai

    from sweeps import registry

    d = cfg.deploy
    api_key = _api_key(d)
    champion = load_champion(cfg)
    base_url = f"http://{d.host}:{d.port}/v1"
    client = openai.OpenAI(
        base_url=base_url, api_key=api_key or "no-key", max_retries=d.max_retries, timeout=d.timeout_s
    )
    try:
        served = {m.id: m for m in client.with_options(max_retries=0, timeout=10).models.list()}
    except openai.APIConnectionError:
        raise ConfigError(
            f"deploy.host={d.host} deploy.port={d.port}: nothing answers at {base_url}; start the server with "
            "python -m sweeps deploy deploy=local (with the same deploy.host/deploy.port)"
        ) from None
    except openai.AuthenticationError:
        raise ConfigError(f"deploy.api_key_env={d.api_key_env}: the server at {base_url} rejected the key") from None
    model = served_name(cfg)
    if model not in served:
        raise ConfigError(
            f"deploy.served_model={model}: the server at {base_url} serves {', '.join(served) or 'nothing'}; "
            "set deploy.served_model (or registry.model_name) to match"
        )
    version = getattr(served[model], "version", None)
    if version is not None and str(version) != champion.version:
        print(f"note: the server loaded version {version}; the champion is now version {champion.version}")
    _, evals = load_data(champion, d.eval_size)
    print(f"evaluating {base_url} ({model}) on {len(evals.texts)} examples", flush=True)
    try:
        result = chat_eval(client, model, evals, d.system_prompt, d.eval_concurrency)
    except openai.APIConnectionError:
        raise ConfigError(f"deploy.port={d.port}: the server at {base_url} stopped answering; restart it") from None
    mlflow_client = registry.client(cfg)
    tags = {
        "sweeps.kind": "deploy",
        "deploy.target": "local",
        "deploy.action": "test",
        "deploy.source_run": champion.run.info.run_id,
        "deploy.model": f"{champion.model_name}/{version or champion.version}",
        "deploy.endpoint": base_url,
    }
    test_run = mlflow_client.create_run(champion.run.info.experiment_id, run_name=f"local test {model}", tags=tags)
    log_eval(mlflow_client, test_run.info.run_id, result, evals)
    mlflow_client.set_terminated(test_run.info.run_id, "FINISHED")
    print(comparison(champion, result["metrics"], evals))
    print(f"MLflow run {test_run.info.run_id}")
    return 0


def delete(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    raise ConfigError(
        "deploy delete: deploy=local creates nothing to delete; stop `python -m sweeps deploy deploy=local` (Ctrl-C)"
    )


def cancel(cfg: DictConfig, restart: bool = False) -> int:  # noqa: ARG001
    raise ConfigError("deploy cancel: deploy=local runs no job; stop the server with Ctrl-C")
