"""The demo runs end to end on a tiny survey and reuses its cache on a second run."""

from __future__ import annotations

import json
import sys
import types

import pytest
import yaml
from tasks_fixtures import make_records, tiny_config, write_shards

from astropt.config import to_dict
from astropt.tasks.demo import run_demo


@pytest.fixture
def fake_survey(monkeypatch):
    """A stand-in for the GalSim survey: the tiny labelled fixture, same call signature."""

    def synthesize(out, n, seed=0, image_size=16, bands=None, workers=None):
        from pathlib import Path

        if (Path(out) / "manifest.json").is_file():
            return Path(out)
        return write_shards(out, make_records(n, seed=seed, size=image_size, bands=len(bands or [0, 0])))

    module = types.ModuleType("astropt.data.synthetic")
    module.synthesize = synthesize
    monkeypatch.setitem(sys.modules, "astropt.data.synthetic", module)


def test_demo_end_to_end_and_cached(tmp_path, fake_survey, monkeypatch):
    model = to_dict(tiny_config())
    model["modalities"][0]["bands"] = ["g", "r"]
    config = {"model": model, "data": {"batch_size": 8, "synth_n": 80},
              "train": {"max_steps": 6, "warmup_steps": 2, "eval_interval": 3, "eval_batches": 1,
                        "log_interval": 2, "ckpt_interval": 100, "dtype": "float32"}}
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "demo"
    report = run_demo(out=out, config=str(tmp_path / "demo.yaml"), quick=True, n=80, steps=6)
    saved = json.loads((out / "report.json").read_text())
    assert saved["targets"] == ["redshift"]
    assert set(saved["table"]) == {"astropt", "pca", "random", "cnn"}
    assert saved["search"]["hits"][0]["id"] == saved["search"]["query"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "random-weight" in html
    assert "redshift" in report["table_text"]
    # the anomaly section is a table (quality + thumbnails), linked to a static explorer
    assert "precision@k" in html and "ROC AUC" in html and '"precision_at_k"' not in html
    assert html.count('<tr class=rare>') == sum(row["rare"] for row in saved["anomalies"]["top"])
    assert 'href="explorer.html"' in html and (out / "explorer.html").is_file()
    assert saved["explorer"]["n"] == saved["n_objects"]

    def no_training(*args, **kwargs):
        raise AssertionError("the second run must reuse the pretrained model")

    monkeypatch.setattr("astropt.train.loop.train", no_training)
    run_demo(out=out, config=str(tmp_path / "demo.yaml"), quick=True, n=80, steps=6)
