"""Model families: each conf/model option names a Hub id and states its real model's sizes; the neutral size keys
build every family with the right config; the parameter and memory estimate comes before any weights, and a model
that cannot fit is refused with the keys to change; dtype, attention kernel and gradient checkpointing reach the
model; a tiny model of each family learns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import GPT2_TOKENIZER, IMDB, OFFLINE_IMDB, ROOT, SHARED, run_cli

from sweeps import model, model_families, model_memory
from sweeps.compose import compose
from sweeps.errors import ConfigError
from sweeps.train import preflight

OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
LABELS = ["negative", "positive"]
PAD, VOCAB = 50256, 50257  # the GPT-2 tokenizer in ../shared
# The shared data and tokenizer, a model option's own sizes.
LOCAL_FILES = [f"dataset.path={IMDB}", f"tokenizer.path={GPT2_TOKENIZER}", "tokenizer.max_length=128", "compute=cpu"]
# Published parameter counts (with the LM head) and vocabulary sizes of the options' real models.
REAL = {
    "gpt2": (124_439_808, 50257),
    "llama3_2_1b": (1_235_814_400, 128256),
    "qwen2_5_0_5b": (494_032_768, 151936),
    "mistral_7b": (7_248_023_552, 32768),
    "gemma3_1b": (999_885_952, 262144),
    "phi3_5_mini": (3_821_079_552, 32064),
}
CONFIG_CLASS = {
    "gpt2": "GPT2Config",
    "llama": "LlamaConfig",
    "mistral": "MistralConfig",
    "qwen2": "Qwen2Config",
    "gemma": "GemmaConfig",
    "gemma2": "Gemma2Config",
    "gemma3_text": "Gemma3TextConfig",
    "phi3": "Phi3Config",
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPS_SHARED", str(SHARED))
    for key in ("MLFLOW_TRACKING_URI", "SWEEPS_PROGRESS_FILE", "SWEEPS_PARENT_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def problems_of(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        preflight(compose([*OFFLINE_IMDB, *overrides]))
    return caught.value.errors


def tiny(model_type: str, *extra: str) -> list[str]:
    """A 2-layer, width-64 scratch model of a family: grouped-query attention and a set head width where it has
    them."""
    sizes = ["model.heads=4", "model.kv_heads=2", "model.head_dim=32"] if model_type != "gpt2" else ["model.heads=2"]
    return [*OFFLINE_IMDB, f"model.model_type={model_type}", *sizes, *extra]


@pytest.mark.parametrize("option", OPTIONS)
def test_each_model_option_composes_and_names_a_hub_id(option: str) -> None:
    cfg = compose([f"model={option}"])
    assert re.fullmatch(r"[\w.-]+(/[\w.-]+)?", cfg.model.name), cfg.model.name
    assert cfg.model.model_type in model_families.FAMILIES
    assert cfg.tokenizer.name == cfg.model.name  # the model's own tokenizer comes with it
    header = (ROOT / "conf" / "model" / f"{option}.yaml").read_text().splitlines()[0]
    assert header.startswith("#") and "parameters" in header


@pytest.mark.parametrize("option", sorted(REAL))
def test_each_option_states_its_real_models_architecture(option: str) -> None:
    """Scratch sizes of the option with the real vocabulary: the published parameter count, counted from the sizes
    and by building the model on the meta device (shapes only)."""
    import torch
    from transformers import AutoModelForCausalLM

    published, vocab = REAL[option]
    cfg = compose([f"model={option}", "model.init=scratch", "model.task=causal_lm"])
    config = model.architecture(cfg.model, LABELS, 0, vocab)
    assert type(config).__name__ == CONFIG_CLASS[cfg.model.model_type]
    assert model.parameter_count(cfg.model, config) == published
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in shell.parameters()) == published


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
@pytest.mark.parametrize("model_type", sorted(model_families.FAMILIES))
def test_each_family_builds_from_the_neutral_keys(model_type: str, task: str) -> None:
    cfg = compose(tiny(model_type, f"model.task={task}"))
    preflight(cfg)
    net = model.build_model(cfg.model, LABELS, PAD, VOCAB)
    config = net.config
    assert type(config).__name__ == CONFIG_CLASS[model_type]
    family = model_families.FAMILIES[model_type]
    expected = {"layers": 2, "hidden": 64, "max_positions": 1024, "heads": cfg.model.heads}
    if "kv_heads" in family.keys:
        expected.update(kv_heads=2, head_dim=32)
    for key, value in expected.items():
        assert getattr(config, family.keys[key]) == value, key
    assert config.vocab_size == VOCAB and config.pad_token_id == PAD
    assert sum(p.numel() for p in net.parameters()) == model.parameter_count(cfg.model, config)
    if task == "classification":
        assert type(net).__name__.endswith("ForSequenceClassification") and config.num_labels == 2


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.kv_heads=2"], "model.kv_heads=2: gpt2 has no such option (no grouped-query attention)"),
        (["model.head_dim=32"], "model.head_dim=32: gpt2 has no such option"),
        (["model.hidden=65"], "model.hidden=65: must be a multiple of model.heads=2"),
        (["model.model_type=bert"], "model.model_type=bert: no family to build from scratch"),
        (["model.model_type=llama", "model.heads=4", "model.kv_heads=3"], "model.kv_heads=3: must divide"),
        (["model.model_type=llama", "model.intermediate=0"], "model.intermediate=0: must be positive"),
        (["model.layers=0"], "model.layers=0: must be positive"),
        (["model.dtype=float16"], "model.dtype=float16: choose one of auto, float32, bfloat16"),
        (["model.attn_implementation=flex"], "model.attn_implementation=flex: choose one of"),
    ],
)
def test_sizes_a_family_cannot_take_are_one_problem_each(overrides: list[str], key: str) -> None:
    errors = problems_of(overrides)
    assert len(errors) == 1 and errors[0].startswith(key), errors


def test_old_gpt2_size_names_are_unknown_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        compose([*OFFLINE_IMDB, "model.n_layer=2"])
    assert caught.value.errors[0].startswith("model.n_layer: no such key")


def test_flash_attention_needs_its_package_and_a_gpu() -> None:
    import importlib.util

    cfg = compose([*OFFLINE_IMDB, "model.attn_implementation=flash_attention_2"])
    if importlib.util.find_spec("flash_attn") is None:
        errors = model.problems(cfg.model)
        assert len(errors) == 1 and "the flash_attn package is not installed; use sdpa" in errors[0]
    (error,) = model.device_problems(cfg.model, "cpu")
    assert error.startswith("model.attn_implementation=flash_attention_2: needs a CUDA GPU")


def test_options_reach_the_model() -> None:
    import torch

    cfg = compose([*OFFLINE_IMDB, "model.attn_implementation=eager", "model.gradient_checkpointing=true"])
    net = model.build_model(cfg.model, LABELS, PAD, VOCAB)
    checkpointing = getattr(net, "is_activation_checkpointing", None)
    assert net.config._attn_implementation == "eager"
    assert checkpointing if checkpointing is not None else net.is_gradient_checkpointing
    chosen = model.build_model(compose(tiny("gemma2")).model, LABELS, PAD, VOCAB)
    assert chosen.config._attn_implementation == "eager"  # null: transformers' choice; Gemma 2 has no sdpa
    assert next(net.parameters()).dtype == torch.float32  # dtype=auto on the CPU
    net.train()
    batch = torch.randint(0, VOCAB, (2, 16))
    net(input_ids=batch, labels=torch.tensor([0, 1])).loss.backward()  # checkpointed blocks still get gradients
    assert net.transformer.h[0].attn.c_attn.weight.grad is not None
    bf16 = model.build_model(compose([*OFFLINE_IMDB, "model.dtype=bfloat16"]).model, LABELS, PAD, VOCAB)
    assert next(bf16.parameters()).dtype == torch.bfloat16
    assert model.weight_dtype(cfg.model, "cpu") == torch.float32


def test_an_attention_kernel_the_architecture_lacks_is_a_config_error() -> None:
    cfg = compose(tiny("gemma2", "model.attn_implementation=sdpa"))
    preflight(cfg)
    with pytest.raises(ConfigError, match=r"^model\.attn_implementation=sdpa: this architecture does not support it"):
        model.build_model(cfg.model, LABELS, PAD, VOCAB)


def test_the_tokenizer_follows_the_model() -> None:
    assert compose(["model=qwen2_5_0_5b"]).tokenizer.name == "Qwen/Qwen2.5-0.5B-Instruct"
    assert compose(["model.name=/models/mine"]).tokenizer.name == "/models/mine"
    assert compose(["model=qwen2_5_0_5b", "tokenizer=gpt2"]).tokenizer.name == "gpt2"
    assert compose(["model=qwen2_5_0_5b", f"tokenizer.path={GPT2_TOKENIZER}"]).tokenizer.path == str(GPT2_TOKENIZER)


def test_any_architecture_loads_from_a_local_folder(tmp_path: Path) -> None:
    """A family sweeps has no size table for (Qwen3), saved to a folder, loads by model.name for both tasks; its
    estimate counts the parameters on the meta device from the folder's config before the weights load."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    folder = tmp_path / "qwen3-tiny"
    config = Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, pad_token_id=PAD,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for task, kind in (("classification", "Qwen3ForSequenceClassification"), ("causal_lm", "Qwen3ForCausalLM")):
        cfg = compose([*LOCAL_FILES, f"model.name={folder}", f"model.task={task}"])
        preflight(cfg)
        fetched = model.architecture(cfg.model, LABELS, PAD, VOCAB)
        net = model.build_model(cfg.model, LABELS, PAD, VOCAB)
        assert type(net).__name__ == kind
        assert model.parameter_count(cfg.model, fetched) == sum(p.numel() for p in net.parameters())
        model.check_run(cfg, LABELS, PAD, VOCAB, "cpu")


def test_the_estimate_adds_weights_grads_optimizer_and_activations() -> None:
    cfg = compose([*OFFLINE_IMDB, "batch_size=4"])
    config = model.architecture(cfg.model, LABELS, PAD, VOCAB)
    params = model.parameter_count(cfg.model, config)
    fp32 = model_memory.estimate(cfg, config, params, 4, "cpu")
    assert fp32.weights == fp32.grads == 4 * params and fp32.optimizer == 2 * 4 * params  # AdamW: two states
    bf16 = model_memory.estimate(cfg, config, params, 2, "cpu")
    assert bf16.weights == fp32.weights / 2 and bf16.activations == fp32.activations / 2
    longer = model_memory.estimate(compose([*OFFLINE_IMDB, "batch_size=8"]), config, params, 4, "cpu")
    assert longer.activations == pytest.approx(2 * fp32.activations)
    checkpointed = compose([*OFFLINE_IMDB, "batch_size=4", "model.gradient_checkpointing=true"])
    assert model_memory.estimate(checkpointed, config, params, 4, "cpu").activations < fp32.activations
    sgd = compose([*OFFLINE_IMDB, "batch_size=4", "optimizer=sgd", "optimizer.momentum=0"])
    assert model_memory.estimate(sgd, config, params, 4, "cpu").optimizer == 0
    have, where = model_memory.available("cpu")
    assert have is not None and have > 0 and "RAM" in where


def test_a_model_that_cannot_fit_is_refused_in_process() -> None:
    cfg = compose([*OFFLINE_IMDB, "model.layers=200", "model.hidden=8192", "model.heads=64"])
    preflight(cfg)
    with pytest.raises(ConfigError) as caught:
        model.check_run(cfg, LABELS, PAD, VOCAB, "cpu")
    (error,) = caught.value.errors
    assert error.startswith("model.layers=200 model.hidden=8192: 161.") and "B parameters" in error
    assert "make it smaller (model.layers, model.hidden)" in error


def test_an_oversized_model_exits_2_before_anything_is_written(project: Path) -> None:
    result = run_cli(["train", *OFFLINE_IMDB, "model.layers=200", "model.hidden=8192", "model.heads=64"], project)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.layers=200 model.hidden=8192" in errors[0], result.stderr[-2000:]
    assert not (project / "outputs" / "mlflow.db").exists()
    assert not list((project / "outputs").glob("cache/tokens/*"))


@pytest.mark.slow
def test_llama_1b_at_its_real_sizes_builds_or_is_refused_only_when_it_cannot_fit() -> None:
    cfg = compose([*LOCAL_FILES, "model=llama3_2_1b", "model.init=scratch", "batch_size=1"])
    preflight(cfg)
    config = model.architecture(cfg.model, LABELS, PAD, VOCAB)
    params = model.parameter_count(cfg.model, config)
    guess = model_memory.estimate(cfg, config, params, 4, "cpu")
    have, _ = model_memory.available("cpu")
    if guess.total <= have:
        model.check_run(cfg, LABELS, PAD, VOCAB, "cpu")
    else:
        with pytest.raises(ConfigError, match=r"model\.layers=16 model\.hidden=2048: 1\.\d\dB parameters"):
            model.check_run(cfg, LABELS, PAD, VOCAB, "cpu")
    if guess.weights * 1.5 < have:  # the weights alone: the build itself
        net = model.build_model(cfg.model, LABELS, PAD, VOCAB)
        assert sum(p.numel() for p in net.parameters()) == params
        assert net.config.num_key_value_heads == 8 and net.config.intermediate_size == 8192


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2", "mistral", "gemma2", "gemma3_text", "phi3"])
def test_a_tiny_model_of_each_family_beats_the_majority_class(model_type: str, project: Path) -> None:
    from sweeps.train import train

    overrides = tiny(model_type, "dataset.train_size=1600", "dataset.validation_size=100", "dataset.test_size=300")
    overrides += [
        "max_steps=100",
        "batch_size=16",
        "lr=1e-3",
        "optimizer.warmup_ratio=0.1",
        "tracking.log_model=false",
        "save_checkpoint=false",
    ]
    train(compose(overrides))
    (metrics_file,) = (project / "outputs" / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    accuracy, baseline = metrics["test_accuracy"], metrics["majority_baseline"]
    print(f"{model_type}: IMDB test accuracy {accuracy:.3f} vs majority baseline {baseline:.3f}")
    assert accuracy >= baseline + 0.05
