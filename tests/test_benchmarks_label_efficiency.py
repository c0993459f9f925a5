"""The label-efficiency and flux-unit benchmarks' own logic (no model is trained here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astropt.data.shards import ArraySpec, Manifest, ShardSet, finalize, write_shard  # noqa: E402
from benchmarks import flux_units, label_efficiency  # noqa: E402


def fake_results(sizes=(8, 80, 800)) -> dict:
    """Results where the finetunes improve with labels and the CNN is better only at 800."""
    def row(nmad, rmse):
        return {"redshift": {"nmad": nmad, "bias": 0.01, "outlier_fraction": nmad}, "log_stellar_mass": {"rmse": rmse}}
    rows = {m: {str(n): row(0.1 / np.log10(n), 0.5 / np.log10(n)) for n in sizes} for m in label_efficiency.METHODS}
    rows["supervised CNN"] = {str(n): row(0.2 if n < 800 else 0.01, 1.0 if n < 800 else 0.1) for n in sizes}
    return {"date": "today", "setup": vars(label_efficiency.Setup()), "targets": label_efficiency.TARGETS,
            "pool": sizes[-1], "n_test": 200, "sizes": list(sizes), "rows": rows}


def test_the_claim_table_says_where_finetuning_beats_the_cnn(tmp_path):
    lines = label_efficiency.claims(fake_results())
    nmad = [line for line in lines if line.startswith("| photo-z NMAD")]
    assert len(nmad) == 3
    cells = [line.split("|") for line in nmad]
    # 8 labels: the finetune beats the CNN on the same labels, not the CNN on all of them.
    assert cells[0][4].strip().endswith(" beaten") and "not beaten" in cells[0][5]
    assert "not beaten" in cells[2][4]  # 800 labels: the CNN wins
    label_efficiency.figure(fake_results(), tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 0
    assert "| full finetune | 80 |" in label_efficiency.render(fake_results())


def test_the_scaled_survey_differs_only_in_its_images(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"image": ArraySpec([2, 16, 16])}
    records = [{"id": f"o{i}", "image": rng.normal(0, 0.01, (2, 16, 16)).astype(np.float32),
                "labels": {"z": float(i)}} for i in range(10)]
    finalize(tmp_path / "a", [write_shard(tmp_path / "a", 0, records, arrays)], arrays, {"z": "float64"})
    flux_units.scaled_copy(tmp_path / "a", tmp_path / "b", 1000.0)
    a, b = ShardSet(tmp_path / "a"), ShardSet(tmp_path / "b")
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.labels(["z"])["z"], b.labels(["z"])["z"])
    np.testing.assert_allclose(b[3]["image"], 1000 * a[3]["image"], rtol=1e-6)
    noise = [Manifest.read(tmp_path / k).band_stats["image"]["noise"] for k in "ab"]
    np.testing.assert_allclose(noise[1], 1000 * np.array(noise[0]), rtol=1e-5)
