"""Every shipped config loads, is consistent, and has the documented size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_records import records_for, with_measured_units

from astropt.config import load_config
from astropt.data.loader import Collator
from astropt.model.astropt import AstroPT
from astropt.train.loop import check_config, hide_masks

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
# Trunk shapes of the published AstroPT sizes (ARCHITECTURE.md "Reference model sizes").
LADDER = {"1m": (4, 8, 128), "5m": (6, 8, 256), "10m": (6, 8, 384), "20m": (6, 8, 512), "70m": (12, 12, 768),
          "95m": (12, 12, 768), "300m": (24, 16, 1024), "700m": (16, 8, 2048), "2.1b": (26, 32, 2560)}
# Hub LLM backbones (not downloaded in tests): the shapes their hub configs declare.
HUB_LLMS = {"HuggingFaceTB/SmolLM2-135M": (30, 9, 576), "HuggingFaceTB/SmolLM2-360M": (32, 15, 960)}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_config(path)
    check_config(cfg)
    if cfg.model.llm.model_name:  # a hub model: its shape is checked when it loads
        m = cfg.model
        assert (m.n_layer, m.n_head, m.n_embd) == HUB_LLMS[m.llm.model_name]
        return
    with torch.device("meta"):
        n_params = AstroPT(cfg.model).num_params()
    size = path.stem.removeprefix("astropt-")
    if size in LADDER:
        m = cfg.model
        assert (m.n_layer, m.n_head, m.n_embd) == LADDER[size]
        assert m.sequence_length == m.block_size == 1024
    if path.stem == "tiny-cpu":
        assert n_params < 1_000_000


def test_ladder_is_complete():
    assert {p.stem.removeprefix("astropt-") for p in CONFIGS} >= set(LADDER)


def _shrunk(path: Path):
    """The config with a trunk small enough for a CPU test; modalities (tokenisers) untouched."""
    model = load_config(path).model
    over = [f"model.n_layer={min(model.n_layer, 2)}"]
    if model.n_embd > 128:
        over += ["model.n_embd=64", "model.n_head=4"]
    return load_config(path, over)


# Configs naming a hub LLM need its weights (the network); their shapes are checked above
# and the LLM path runs on the offline llm-tiny config.
OFFLINE = [p for p in CONFIGS if not load_config(p).model.llm.model_name]


@pytest.mark.parametrize("path", OFFLINE, ids=[p.stem for p in OFFLINE])
def test_shipped_config_runs_forward_and_backward(path):
    """Real tensors, not the meta device: tokenise records, one loss, finite gradients."""
    cfg = _shrunk(path)
    records = records_for(cfg.model, 2)
    cfg.model = with_measured_units(cfg.model, records)
    torch.manual_seed(0)
    model = AstroPT(cfg.model)
    batch, _ = Collator(cfg.model)(records)
    hide = None
    if cfg.train.objective == "mae":
        hide = hide_masks(batch, [m.name for m in cfg.model.modalities], cfg.train.mask_ratio, [0])
    loss = model.loss(batch, objective=cfg.train.objective, hide=hide, norm_targets=cfg.train.norm_targets)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
