"""Label-efficiency splits: a fixed test set, nested label sets, validation inside the budget."""

from __future__ import annotations

import numpy as np
import pytest

from astropt.tasks.finetune import finetune, label_efficiency, labelled_splits
from astropt.tasks.probe import fit_predict

VALID = np.arange(1000)


@pytest.mark.parametrize("n_labels", [10, 30, 100, 800])
def test_the_label_budget_counts_validation_labels_and_keeps_the_test_set(n_labels):
    train, val, test = labelled_splits(VALID, 0.2, 0.15, n_labels, seed=3, val_in_budget=True)
    _, _, test_all = labelled_splits(VALID, 0.2, 0.15, None, seed=3, val_in_budget=True)
    assert len(train) + len(val) == n_labels and len(val) == max(1, round(0.15 * n_labels))
    np.testing.assert_array_equal(test, test_all)
    assert not set(test) & (set(train) | set(val))
    bigger_train, bigger_val, _ = labelled_splits(VALID, 0.2, 0.15, 800, seed=3, val_in_budget=True)
    assert set(train) | set(val) <= set(bigger_train) | set(bigger_val)  # nested label sets


def test_without_the_budget_only_the_training_labels_are_capped():
    train, val, test = labelled_splits(VALID, 0.2, 0.15, 10, seed=3)
    assert (len(train), len(val), len(test)) == (10, 150, 200)


def test_small_label_sets_get_at_least_min_steps(model_dir, shard_dir):
    res = finetune(model_dir, shard_dir, ["size"], epochs=1, batch_size=4, n_labels=8, val_in_budget=True,
                   min_steps=6, patience=100, progress=False)
    # 8 labels: 7 training (2 batches per epoch), 1 validation; 6 steps need 3 epochs.
    assert (res["n_train"], res["n_val"], res["epochs_run"]) == (7, 1, 3)
    curve = label_efficiency(model_dir, shard_dir, ["size"], sizes=(8, 100), epochs=1, val_in_budget=True,
                             progress=False)
    assert sorted(curve) == [8, 32]  # keyed by the labels used: 40 objects minus the 8 of the test set


def test_fit_predict_is_the_probe_fitted_on_a_training_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = x @ np.arange(1.0, 6.0) + 0.01 * rng.normal(size=200)
    pred = fit_predict(x[:150], y[:150], x[150:])
    assert np.sqrt(np.mean((pred - y[150:]) ** 2)) < 0.05
