"""What the deploy targets share: the champion (the registry's `champion` alias), its eval set, and scoring a chat
endpoint on it beside the champion run's metrics."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from sweeps.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run


@dataclass
class Champion:
    """The registered version the champion alias points at, the run that produced it, and that run's config."""

    model_name: str
    version: str
    alias: str
    run: Run
    config: DictConfig

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"


@dataclass
class EvalSet:
    """The examples sent through an endpoint, with their labels and what identifies them."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    fingerprint: str
    whole_split: bool


def load_champion(cfg: DictConfig) -> Champion:
    """The champion and its run's resolved config; no champion is bad input."""
    from sweeps import registry, tracking

    uri = tracking.resolve_uri(cfg.tracking)
    errors = registry.problems(cfg.registry, uri) or tracking.problems(cfg.tracking)
    if errors:
        raise ConfigError(*errors)
    client = registry.client(cfg)
    version = registry.champion(client, cfg.registry)
    if version is None:
        raise ConfigError(
            f"registry.model_name={cfg.registry.model_name}: no version has the '{cfg.registry.champion_alias}' alias "
            f"at {uri}; promote one first: python -m sweeps promote"
        )
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(version.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            config = OmegaConf.load(client.download_artifacts(run.info.run_id, "config/resolved.yaml", tmp))
    except (MlflowException, OSError) as exc:
        raise ConfigError(
            f"registry.model_name={cfg.registry.model_name}: champion version {version.version} comes from run "
            f"{version.run_id}, whose config/resolved.yaml cannot be read ({str(exc).splitlines()[0]}); promote a "
            "run trained by python -m sweeps train"
        ) from None
    return Champion(cfg.registry.model_name, str(version.version), cfg.registry.champion_alias, run, config)


def load_data(champion: Champion, eval_size: int | None) -> tuple[pd.DataFrame, EvalSet]:
    """The champion run's train split and (the first `eval_size` examples of) its test split, as it saw them: the
    split it was scored on once, at the end, so the endpoint's scores compare with its test_* metrics."""
    import hashlib

    from sweeps import tracking
    from sweeps.dataset import DatasetConfig, load_splits

    known = DatasetConfig.__dataclass_fields__
    recorded = {k: v for k, v in OmegaConf.to_container(champion.config.dataset).items() if k in known}
    data = OmegaConf.merge(OmegaConf.structured(DatasetConfig), recorded)
    splits = load_splits(data, tracking.outputs_dir() / "cache" / "splits")
    expected = champion.run.data.tags.get("dataset.test_fingerprint")
    if expected and splits.test_fingerprint != expected:
        raise ConfigError(
            f"dataset: the test data of champion run {champion.run.info.run_id} ({splits.source}) changed since it was "
            f"scored (fingerprint {splits.test_fingerprint}, was {expected}); restore it, or promote a run trained "
            "on the current data"
        )
    frame = splits.test if eval_size is None else splits.test.iloc[:eval_size]
    whole = len(frame) == len(splits.test)
    fingerprint = (
        splits.test_fingerprint
        if whole
        else hashlib.sha256(f"{splits.test_fingerprint}:{len(frame)}".encode()).hexdigest()[:16]
    )
    texts = [str(t) for t in frame["text"].tolist()]
    evals = EvalSet(texts, frame["label"].to_numpy(), list(data.label_names), fingerprint, whole)
    return splits.train, evals


def system_message(template: str, label_names: list[str]) -> str:
    words = label_names[0] if len(label_names) == 1 else ", ".join(label_names[:-1]) + " or " + label_names[-1]
    return template.format(labels=words)


def parse_label(answer: str, label_names: list[str]) -> int:
    """The label word that comes first in the answer (case-insensitive, whole words); -1 when there is none."""
    text = answer.lower()
    found = []
    for index, name in enumerate(label_names):
        match = re.search(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])", text)
        if match:
            found.append((match.start(), index))
    return min(found)[1] if found else -1


def chat_eval(
    client: Any,
    model: str,
    evals: EvalSet,
    system_prompt: str | None,
    concurrency: int,
    *,
    max_retries: int = 6,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Send each eval example as a chat completion; score the label word in each answer.

    `client` is an `openai.OpenAI` or `openai.AzureOpenAI`. Throttled requests wait out the service's retry-after
    (until `deadline`, time.monotonic()); a prompt the content filter refuses is an unanswered example (wrong),
    counted in `content_filtered`; other errors propagate.
    """
    import numpy as np

    from sweeps import metrics
    from sweeps.endpoint_calls import Progress, ask_all

    system = system_message(system_prompt, evals.label_names) if system_prompt else None
    progress = Progress(len(evals.texts))
    answers = ask_all(
        client, model, evals.texts, system, concurrency, max_retries=max_retries, deadline=deadline, progress=progress
    )
    predicted = np.array([-1 if a is None else parse_label(a, evals.label_names) for a in answers])
    values = metrics.scores(evals.labels, predicted, len(evals.label_names))
    filtered = sum(a is None for a in answers)
    values["unparsed_answers"] = float(sum(a is not None and p < 0 for a, p in zip(answers, predicted, strict=True)))
    values["content_filtered"] = float(filtered)
    values["eval_examples"] = float(len(evals.texts))
    if filtered:
        print(
            f"content filter: {filtered} of {len(evals.texts)} prompts refused (counted as unanswered, i.e. wrong)",
            flush=True,
        )
    return {"metrics": values, "answers": answers, "predicted": predicted, "throttled": progress.throttled}


def log_eval(client: MlflowClient, run_id: str, result: dict[str, Any], evals: EvalSet) -> None:
    """The eval metrics, tags that make them comparable with local runs, and each answer as an artifact."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in result["metrics"].items()])
    client.set_tag(run_id, "dataset.test_fingerprint", evals.fingerprint)
    client.set_tag(run_id, "deploy.eval_whole_split", str(evals.whole_split).lower())
    rows = [
        {
            "label": evals.label_names[int(y)],
            "answer": a,
            "predicted": evals.label_names[p] if p >= 0 else None,
            **({"content_filtered": True} if a is None else {}),
        }
        for y, a, p in zip(evals.labels, result["answers"], result["predicted"].tolist(), strict=True)
    ]
    client.log_text(run_id, "\n".join(json.dumps(r) for r in rows) + "\n", "deploy/answers.jsonl")


def comparison(champion: Champion, values: dict[str, float], evals: EvalSet) -> str:
    """The endpoint's metrics beside the champion run's, one line each."""
    lines = [f"{'metric':<10} {'endpoint':>9} {'champion':>9}"]
    for key in ("accuracy", "precision", "recall", "f1"):
        local = champion.run.data.metrics.get(f"test_{key}")
        lines.append(f"{key:<10} {values[key]:>9.4f} {'-' if local is None else format(local, '.4f'):>9}")
    if not evals.whole_split:
        lines.append(f"(endpoint: the first {len(evals.texts)} test examples; champion: its whole test split)")
    return "\n".join(lines)
