"""Tokenised data: encoded once per fingerprint, cached on disk for every trial, batched with little padding."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from sweeps.dataset import DatasetConfig, Splits

SPLITS = ("train", "validation", "test")

log = logging.getLogger(__name__)
CHUNK = 1000


@dataclass
class Encoded:
    """Token rows stored flat: row i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, rows: np.ndarray) -> Encoded:
        """The rows `rows`, in that order."""
        return Encoded.from_rows([self.row(int(i)).tolist() for i in rows], self.labels[rows])

    @classmethod
    def from_rows(cls, rows: list[list[int]], labels: np.ndarray) -> Encoded:
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(r) for r in rows])
        ids = np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(offsets[-1]))
        return cls(ids=ids, offsets=offsets, labels=np.asarray(labels, dtype=np.int64))


@dataclass
class Encodings:
    train: Encoded
    validation: Encoded
    test: Encoded
    key: str
    cached: bool


def cache_key(splits: Splits, tokenizer_id: str, max_length: int, task: str, data: DatasetConfig) -> str:
    """Everything that changes the token ids, hashed."""
    parts = {
        "data": splits.fingerprint,
        "tokenizer": tokenizer_id,
        "max_length": max_length,
        "task": task,
        "prompt": data.prompt if task == "causal_lm" else None,
        "labels": list(data.label_names) if task == "causal_lm" else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def encode(
    splits: Splits,
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_id: str,
    max_length: int,
    task: str,
    data: DatasetConfig,
    cache_dir: Path,
    progress: bool = True,
) -> Encodings:
    """Token ids for the three splits, from the cache when this fingerprint was encoded before."""
    key = cache_key(splits, tokenizer_id, max_length, task, data)
    path = cache_dir / f"{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            parts = {name: stored[name] for name in stored.files}
        return Encodings(*(_unpack(parts, name) for name in SPLITS), key, cached=True)
    encoded = {}
    for name in SPLITS:
        frame = getattr(splits, name)
        if task == "classification":
            encoded[name] = _encode_texts(tokenizer, frame, max_length, progress, name)
        else:  # training rows end with the answer; the others are scored on it
            with_answer = name == "train"
            encoded[name] = _encode_prompts(tokenizer, frame, max_length, data, progress, name, with_answer)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}.{os.getpid()}.npz"
    np.savez(tmp, **{k: v for name in SPLITS for k, v in _pack(encoded[name], name).items()})
    os.replace(tmp, path)  # atomic: concurrent trials never read half a file
    return Encodings(*(encoded[name] for name in SPLITS), key, cached=False)


def _pack(enc: Encoded, split: str) -> dict[str, np.ndarray]:
    return {f"{split}_ids": enc.ids, f"{split}_offsets": enc.offsets, f"{split}_labels": enc.labels}


def _unpack(parts: dict[str, np.ndarray], split: str) -> Encoded:
    return Encoded(parts[f"{split}_ids"], parts[f"{split}_offsets"], parts[f"{split}_labels"])


def _batched_ids(tokenizer, texts: list[str], progress: bool, desc: str) -> list[list[int]]:
    from tqdm.auto import tqdm

    rows: list[list[int]] = []
    with tqdm(
        total=len(texts), desc=f"tokenise {desc}", unit="ex", disable=None if progress else True, leave=False
    ) as bar:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            rows.extend(tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"])
            bar.update(len(chunk))
    return rows


def _encode_texts(tokenizer, frame, max_length: int, progress: bool, desc: str) -> Encoded:
    rows = _batched_ids(tokenizer, frame["text"].tolist(), progress, desc)
    return Encoded.from_rows([r[:max_length] for r in rows], frame["label"].to_numpy())


def _encode_prompts(tokenizer, frame, max_length: int, data, progress: bool, desc: str, with_answer: bool) -> Encoded:
    """Prompt rows `head + text + tail` (+ ` label` + end-of-text for training), text cut to fit."""
    head, tail = data.prompt.split("{text}", 1)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    answers = label_word_ids(tokenizer, data.label_names)
    texts = _batched_ids(tokenizer, frame["text"].tolist(), progress, desc)
    rows = []
    for text_ids, label in zip(texts, frame["label"].tolist(), strict=True):
        answer = answers[label] + [tokenizer.eos_token_id] if with_answer else []
        budget = max(0, max_length - len(head_ids) - len(tail_ids) - max(len(a) + 1 for a in answers))
        rows.append(head_ids + text_ids[:budget] + tail_ids + answer)
    return Encoded.from_rows(rows, frame["label"].to_numpy())


def label_word_ids(tokenizer, label_names: list[str]) -> list[list[int]]:
    """Token ids of ` <label>` for each class, as scored after the prompt."""
    return [tokenizer(" " + name, add_special_tokens=False)["input_ids"] for name in label_names]


def length_grouped_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar-length rows (sorted within mega-batches of 50 batches)."""
    order = rng.permutation(len(lengths))
    mega = batch_size * 50
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(enc: Encoded, rows: np.ndarray, pad_id: int, lm_labels: bool, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pad the rows to their longest member (rounded up to `multiple`, which bounds recompiles of a compiled
    model); labels are the class, or the tokens (-100 on padding)."""
    import torch

    width = int(enc.lengths[rows].max())
    width = -(-width // multiple) * multiple
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, i in enumerate(rows):
        row = enc.row(int(i))
        ids[j, : len(row)] = row
        mask[j, : len(row)] = 1
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "real_tokens": torch.tensor(int(enc.lengths[rows].sum())),
    }
    if lm_labels:
        batch["labels"] = torch.from_numpy(np.where(mask == 1, ids, -100))
    else:
        batch["labels"] = torch.from_numpy(enc.labels[rows])
    return batch


def train_batches(
    enc: Encoded,
    batch_size: int,
    pad_id: int,
    lm_labels: bool,
    seed: int,
    multiple: int = 1,
    shard: tuple[int, int] = (0, 1),
    skip: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless length-grouped batches, reshuffled every epoch; with `shard=(rank, ranks)`, every ranks-th
    batch from the rank-th (the same seed on every rank gives each its own share). The first `skip` batches of
    this rank's share are passed over unbuilt: a resumed run continues the same order where it stopped."""
    rank, ranks = shard
    rng = np.random.default_rng(seed)
    while True:
        for i, rows in enumerate(length_grouped_order(enc.lengths, batch_size, rng)):
            if i % ranks == rank:
                if skip > 0:
                    skip -= 1
                    continue
                yield collate(enc, rows, pad_id, lm_labels, multiple)


def pack_rows(lengths: np.ndarray, order: np.ndarray, seq_len: int, open_rows: int = 16) -> list[list[int]]:
    """First-fit packing of documents (in `order`) into rows of at most `seq_len` tokens, keeping a few rows
    open so short documents fill the gaps long ones leave."""
    rows: list[list[int]] = []
    room: list[int] = []
    opened: list[int] = []  # indices into rows that still take documents
    for doc in order:
        size = int(lengths[doc])
        for k, r in enumerate(opened):
            if room[r] >= size:
                rows[r].append(int(doc))
                room[r] -= size
                if room[r] == 0:
                    opened.pop(k)
                break
        else:
            rows.append([int(doc)])
            room.append(seq_len - size)
            opened.append(len(rows) - 1)
            if len(opened) > open_rows:
                opened.pop(0)
    return rows


def collate_packed(enc: Encoded, docs_per_row: list[list[int]], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Rows of whole documents: positions restart at each document, attention stays inside it (a block-diagonal
    causal mask), and no document's first token is predicted from the one before it."""
    import torch

    n = len(docs_per_row)
    ids = np.full((n, seq_len), pad_id, dtype=np.int64)
    positions = np.zeros((n, seq_len), dtype=np.int64)
    segment = np.full((n, seq_len), -1, dtype=np.int64)
    labels = np.full((n, seq_len), -100, dtype=np.int64)
    for j, docs in enumerate(docs_per_row):
        at = 0
        for k, doc in enumerate(docs):
            row = enc.row(doc)
            end = at + len(row)
            ids[j, at:end] = row
            positions[j, at:end] = np.arange(len(row))
            segment[j, at:end] = k
            labels[j, at + 1 : end] = row[1:]
            at = end
    seg = torch.from_numpy(segment)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    mask = (seg[:, :, None] == seg[:, None, :]) & causal
    return {
        "input_ids": torch.from_numpy(ids),
        "position_ids": torch.from_numpy(positions),
        "attention_mask": mask[:, None],
        "labels": torch.from_numpy(labels),
        "real_tokens": torch.tensor(int((segment >= 0).sum())),
    }


def packed_batches(
    enc: Encoded,
    seq_len: int,
    batch_size: int,
    pad_id: int,
    seed: int,
    shard: tuple[int, int] = (0, 1),
    skip: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of packed rows for causal-LM training, repacked every epoch; `shard` and `skip` as for
    `train_batches`."""
    rank, ranks = shard
    rng = np.random.default_rng(seed)
    while True:
        rows = pack_rows(enc.lengths, rng.permutation(len(enc)), seq_len)
        rng.shuffle(rows)
        for i, start in enumerate(range(0, len(rows) - batch_size + 1, batch_size)):
            if i % ranks == rank:
                if skip > 0:
                    skip -= 1
                    continue
                yield collate_packed(enc, rows[start : start + batch_size], seq_len, pad_id)


def prefetch(batches: Iterator[dict[str, torch.Tensor]], device: str, depth: int = 2) -> Iterator[dict]:
    """Build the next batches in a background thread; on CUDA, in pinned memory, copied without blocking."""
    import queue
    import threading

    pin = device.startswith("cuda")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        for batch in batches:
            if pin:
                batch = {k: v if k == "real_tokens" else v.pin_memory() for k, v in batch.items()}
            while not stop.is_set():
                try:
                    ready.put(batch, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return

    threading.Thread(target=produce, daemon=True, name="prefetch").start()
    try:
        while True:
            batch = ready.get()
            yield {k: v if k == "real_tokens" else v.to(device, non_blocking=pin) for k, v in batch.items()}
    finally:
        stop.set()
