"""Secrets from the environment never reach logs, MLflow, saved configs or outputs/."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import OFFLINE_IMDB, run_cli

from sweeps.secrets import MASK, mask

SECRETS = {
    "DATABRICKS_TOKEN": "dapi-SECRET-0f3c9a7e51",
    "AZURE_OPENAI_API_KEY": "azkey-SECRET-77ab31c9e2",
    "HF_TOKEN": "hf_SECRETtoken4d9e0a",
    "AZURE_CLIENT_SECRET": "spn-SECRET-c0ffee1234",
}


def test_mask_hides_secret_keys_and_values(monkeypatch) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    flat = mask({"deploy.api_key": "literal", "x.url": f"https://h/?t={SECRETS['HF_TOKEN']}", "lr": 0.1})
    assert flat == {"deploy.api_key": MASK, "x.url": f"https://h/?t={MASK}", "lr": 0.1}


@pytest.mark.slow
def test_no_secret_in_outputs_logs_or_mlflow(tmp_path: Path) -> None:
    args = [*OFFLINE_IMDB, "max_steps=4", "dataset.train_size=64", "dataset.validation_size=32", "dataset.test_size=32"]
    done = run_cli(["train", *args], tmp_path, **SECRETS)
    assert done.returncode == 0, done.stderr[-3000:]
    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.name == "resolved.yaml" for p in files)
    for value in SECRETS.values():
        assert value not in done.stdout + done.stderr
        for path in files:
            assert value.encode() not in path.read_bytes(), f"{value} leaked into {path}"
