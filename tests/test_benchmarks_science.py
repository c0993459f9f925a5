"""The science benchmark's own logic (no model is trained here: benchmarks are not tests).

Equal budgets are the point of the comparison, so the reference worker's learning-rate
schedule must be ours, step for step; and the lever configs must all be valid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astropt.config import TrainConfig  # noqa: E402
from astropt.train.optim import lr_at  # noqa: E402
from benchmarks import science, science_reference_worker  # noqa: E402


def test_reference_worker_schedule_is_ours():
    cfg = TrainConfig(max_steps=300, warmup_steps=25, lr=2e-3, min_lr=2e-4)
    spec = {"steps": 300, "warmup": 25, "lr": 2e-3, "min_lr": 2e-4}
    for step in range(0, 320, 7):
        assert science_reference_worker.lr_at(step, spec) == pytest.approx(lr_at(step, cfg), rel=1e-12)


@pytest.mark.parametrize("name", list(science.LEVERS))
def test_every_lever_is_a_valid_config_at_the_same_shape(tmp_path, name):
    base = science.run_config(tmp_path, "base", science.Budget.quick(), science.LEVERS["legacy tokens"])
    cfg = science.run_config(tmp_path, "x", science.Budget.quick(), science.LEVERS[name])
    assert (cfg.model.n_layer, cfg.model.n_embd) == (base.model.n_layer, base.model.n_embd)
    # Same pixels seen per image (a patch-size lever trades tokens for token size).
    def pixels(c):
        return c.model.sequence_length * c.model.modalities[0].patch_size ** 2

    assert pixels(cfg) == pixels(base)
    assert science.run_hash(cfg) != science.run_hash(base) or name == "legacy tokens"


def test_run_hash_ignores_the_output_folder(tmp_path):
    a = science.run_config(tmp_path, "a", science.Budget.quick(), [])
    b = science.run_config(tmp_path, "b", science.Budget.quick(), [])
    assert a.train.out_dir != b.train.out_dir and science.run_hash(a) == science.run_hash(b)


def test_markdown_table_has_a_row_per_method():
    rows = {"ours": {"z": 0.9, "m": 0.5}, "pca": {"z": 0.1, "m": -0.25}}
    text = science.markdown_table(rows, ["z", "m"])
    assert text.splitlines()[2] == "| ours | 0.900 | 0.500 |"
    assert text.splitlines()[3] == "| pca | 0.100 | -0.250 |"


def test_equal_flops_ladder_gives_each_size_the_same_compute(tmp_path):
    from astropt.model import AstroPT
    from astropt.train.logging import flops_per_token

    budget, spent = science.Budget.quick(), []
    for n_layer, n_head, n_embd in science.SIZES.values():
        ov = [f"model.n_layer={n_layer}", f"model.n_head={n_head}", f"model.n_embd={n_embd}"]
        cfg = science.run_config(tmp_path, "s", budget, ov)
        steps = science.equal_flops_steps(cfg, 1e13, budget.batch)
        n = AstroPT(cfg.model).num_params()
        spent.append((steps, steps * flops_per_token(cfg.model, n) * budget.batch * cfg.model.sequence_length))
    assert spent[0][0] > spent[1][0] > spent[2][0]  # smaller models train longer
    for steps, flops in spent:
        assert flops == pytest.approx(1e13, rel=1.0 / steps)  # within one step of the budget


def test_embedding_only_levers_reuse_the_model_of_their_base(tmp_path):
    budget = science.Budget.quick()
    concat = "default + blocks 1-3 concatenated"
    assert science.lever_tag(concat, 9) == science.lever_tag("default (tiny-cpu)", 9)
    trained = science.run_config(tmp_path, "t", budget, science.weight_overrides(science.LEVERS[concat]))
    base = science.run_config(tmp_path, "t", budget, science.LEVERS["default (tiny-cpu)"])
    assert science.run_hash(trained) == science.run_hash(base)
    probed = science.run_config(tmp_path, "t", budget, science.LEVERS[concat])
    assert probed.model.embed_layers == [1, 2, 3]
    # A lever that changes the weights keeps its own folder.
    assert science.lever_tag("default + AR and masked (weight 1)", 9) != science.lever_tag("default (tiny-cpu)", 9)
