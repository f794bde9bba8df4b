"""Three splits from the shared IMDB sample: train, a validation split (carved from train when the data has none)
for pruning, the objective and the champion, and a test split scored once."""

from __future__ import annotations

from support import IMDB, SST2

from sweeps.compose import compose
from sweeps.dataset import load_splits


def splits_of(*overrides: str):
    return load_splits(compose([f"dataset.path={IMDB}", *overrides]).dataset)


def test_validation_is_carved_from_train_with_the_seed_and_kept_apart() -> None:
    splits = splits_of()
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1800, 200, 2000)
    assert not set(splits.validation["text"]) & set(splits.train["text"])
    again, other = splits_of(), splits_of("seed=7")
    assert list(again.validation["text"]) == list(splits.validation["text"])
    assert list(other.validation["text"]) != list(splits.validation["text"])
    assert splits.validation_fingerprint != splits.test_fingerprint
    assert len({splits.fingerprint, splits.validation_fingerprint, splits.test_fingerprint}) == 3


def test_sizes_draw_from_each_split() -> None:
    splits = splits_of("dataset.train_size=100", "dataset.validation_size=50", "dataset.test_size=30")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (100, 50, 30)
    # the validation set is the same whatever train_size draws from the rest
    assert list(splits_of("dataset.validation_size=50").validation["text"]) == list(splits.validation["text"])


def test_a_named_validation_split_is_read_as_it_is() -> None:
    cfg = compose([f"dataset.path={SST2}", "dataset.validation_split=validation", "dataset.test_split=test"])
    splits = load_splits(cfg.dataset)
    assert (len(splits.validation), len(splits.test)) == (872, 1821)
    assert len(splits.train) == 67349
