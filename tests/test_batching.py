"""Batches: packed causal-LM rows equal their documents run one by one; padding stays small."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweeps.loop import lm_loss
from sweeps.tokens import Encoded, collate, collate_packed, length_grouped_order, pack_rows


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=97,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config).eval()


def _docs(lengths: list[int], seed: int = 1) -> Encoded:
    rng = np.random.default_rng(seed)
    return Encoded.from_rows([rng.integers(1, 97, n).tolist() for n in lengths], np.zeros(len(lengths)))


def test_packed_loss_equals_documents_one_by_one(tiny_lm) -> None:
    enc = _docs([5, 9, 3, 12, 7, 2])
    rows = pack_rows(enc.lengths, np.arange(len(enc)), seq_len=20)
    assert sorted(d for row in rows for d in row) == list(range(len(enc)))
    assert all(enc.lengths[row].sum() <= 20 for row in rows)
    batch = collate_packed(enc, rows, seq_len=20, pad_id=0)
    assert int(batch.pop("real_tokens")) == enc.lengths.sum()
    with torch.no_grad():
        packed = lm_loss(tiny_lm, batch, reduction="sum")
        alone = sum(
            lm_loss(tiny_lm, collate(enc, np.array([i]), pad_id=0, lm_labels=True), reduction="sum")
            for i in range(len(enc))
        )
    assert float(packed) == pytest.approx(float(alone), rel=1e-4)
    first_row = batch["position_ids"][0].tolist()
    assert first_row[: enc.lengths[rows[0][0]]] == list(range(enc.lengths[rows[0][0]]))


def test_packing_fills_rows() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 512, 2000)
    rows = pack_rows(lengths, rng.permutation(2000), seq_len=1024)
    fill = lengths.sum() / (len(rows) * 1024)
    assert fill > 0.95, fill


def test_length_grouping_cuts_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 1024, 4000)
    grouped = length_grouped_order(lengths, 16, rng)
    assert sorted(np.concatenate(grouped).tolist()) == list(range(4000))
    padded = sum(len(b) * lengths[b].max() for b in grouped)
    shuffled = rng.permutation(4000)
    random_padded = sum(16 * lengths[shuffled[i : i + 16]].max() for i in range(0, 4000, 16))
    assert lengths.sum() / padded > 0.9 and padded < 0.7 * random_padded


def test_recomputed_chunks_give_the_same_gradients(tiny_lm, monkeypatch) -> None:
    import sweeps.loop

    enc = _docs([30, 17, 25])
    batch = collate(enc, np.arange(3), pad_id=0, lm_labels=True)
    batch.pop("real_tokens")
    grads = []
    for budget in (1 << 40, 0):  # keep every chunk's logits, then recompute them in the backward pass
        monkeypatch.setattr(sweeps.loop, "LOGIT_BUDGET", budget)
        monkeypatch.setattr(sweeps.loop, "LOGIT_CHUNK", 16)
        tiny_lm.zero_grad()
        lm_loss(tiny_lm, batch).backward()
        grads.append(tiny_lm.transformer.h[0].attn.c_attn.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
