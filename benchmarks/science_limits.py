"""How much of each label can any estimator get from this survey? Bounds for SCIENCE.md.

The science targets (redshift R² 0.90, ellipticity 0.50, ...) are only meaningful next to what
the data themselves allow. On the survey of ``benchmarks.science`` (same seed, same held-out
split) this measures, with 5-fold cross-validation on the held-out objects:

- redshift from the **catalogue photometry** (noiseless true griz magnitudes, and the
  observed ones): ridge, ridge on cubic polynomial features, and gradient-boosted trees. A
  model that saw only the images cannot beat perfect photometry by much: colours are where
  the redshift is.
- ellipticity and size from **adaptive moments** (GalSim's HSM, the classic shape measurement,
  PSF not corrected) of the r+i image: a linear fit of the label on the measured
  ``|e|`` / moment size.

- with ``--model FOLDER`` (a model pretrained by ``benchmarks.science``): how well a ridge
  probe of its default embedding recovers the colours g-r, r-i, i-z and mag_r, and the
  redshift R² of a linear and of a cubic fit on those recovered colours: whether the redshift
  is missing from the embedding or only not linear in it.

    python -m benchmarks.science_limits [--data DIR] [--model FOLDER]

Writes ``benchmarks/out/science/full/limits.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import galsim
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from astropt.atomic import atomic_write_text
from astropt.data.loader import split_indices
from astropt.data.shards import ShardSet

HERE = Path(__file__).resolve().parent


def cv_r2(estimator, x: np.ndarray, y: np.ndarray, folds: int = 5) -> float:
    """Mean k-fold R² of ``estimator`` predicting ``y`` from ``x``."""
    cv = KFold(folds, shuffle=True, random_state=0)
    return float(cross_val_score(estimator, x, y, cv=cv, scoring="r2").mean())


def ridge(degree: int = 1):
    steps = [PolynomialFeatures(degree, include_bias=False)] if degree > 1 else []
    return make_pipeline(*steps, StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))


COLOURS = ("g_r", "r_i", "i_z", "mag_r")


def embedding_colours(model_dir: str, data: ShardSet, held: np.ndarray) -> dict[str, float]:
    """R² of the colours from a model's embedding (ridge), and of the redshift from those
    (cross-validated) colour estimates and from the true colours, by a linear / cubic ridge."""
    from astropt.model import load_pretrained
    from benchmarks.science import default_embeddings

    x = default_embeddings(load_pretrained(model_dir), data, held)
    labels = {k: v[held].astype(np.float64) for k, v in data.labels([*COLOURS, "redshift"]).items()}
    cv = KFold(5, shuffle=True, random_state=0)
    estimate = np.stack([cross_val_predict(ridge(), x, labels[c], cv=cv) for c in COLOURS], 1)
    true, z = np.stack([labels[c] for c in COLOURS], 1), labels["redshift"]
    out = {f"{c} from the embedding, ridge": r2_score(labels[c], estimate[:, k]) for k, c in enumerate(COLOURS)}
    out["redshift from the embedding, ridge"] = cv_r2(ridge(), x, z)
    for degree, name in ((1, "ridge"), (3, "cubic ridge")):
        out[f"redshift from the true colours + mag_r, {name}"] = cv_r2(ridge(degree), true, z)
        out[f"redshift from the embedding's colours + mag_r, {name}"] = cv_r2(ridge(degree), estimate, z)
    return {k: float(v) for k, v in out.items()}


def adaptive_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|e|`` and moment sigma (pixels) of each r+i image (NaN where HSM fails)."""
    e, sigma = np.full(len(images), np.nan), np.full(len(images), np.nan)
    for k, image in enumerate(images):
        try:
            m = galsim.hsm.FindAdaptiveMom(galsim.Image(image.astype(np.float64)), strict=True)
        except galsim.GalSimHSMError:
            continue
        e[k], sigma[k] = np.hypot(m.observed_shape.e1, m.observed_shape.e2), m.moments_sigma
    return e, sigma


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE / "out" / "science" / "full" / "data"),
                        help="the survey of benchmarks.science (made by it)")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--model", help="a model pretrained on this survey: the colours its embedding holds")
    args = parser.parse_args(argv)
    data = ShardSet(args.data)
    held = split_indices(data.ids, "val", args.val_fraction)
    rows = data.get_batch(held)
    z = np.asarray(rows["redshift"], dtype=np.float64)
    true_mags = np.stack([rows[f"mag_{b}"] for b in "griz"], 1).astype(np.float64)
    obs_mags = np.nan_to_num(np.stack([rows[f"mag_{b}_obs"] for b in "griz"], 1).astype(np.float64), nan=30.0)
    gbm = HistGradientBoostingRegressor(max_iter=300, random_state=0)
    out: dict[str, dict[str, float]] = {"redshift": {
        "true griz magnitudes, ridge": cv_r2(ridge(), true_mags, z),
        "true griz magnitudes, gradient boosting": cv_r2(gbm, true_mags, z),
        "observed griz magnitudes, ridge": cv_r2(ridge(), obs_mags, z),
        "observed griz magnitudes, cubic ridge": cv_r2(ridge(3), obs_mags - 20.0, z),
        "observed griz magnitudes, gradient boosting": cv_r2(gbm, obs_mags, z),
    }}
    e, sigma = adaptive_moments(np.asarray(rows["image"])[:, 1:3].sum(1))
    ok = np.isfinite(e)
    ell, hlr = np.asarray(rows["ellipticity"], np.float64)[ok], np.asarray(rows["hlr_arcsec"], np.float64)[ok]
    out["ellipticity"] = {"adaptive-moments |e| (HSM), linear": cv_r2(LinearRegression(), e[ok, None], ell)}
    out["hlr_arcsec"] = {"adaptive-moments sigma (HSM), linear": cv_r2(LinearRegression(), sigma[ok, None], hlr)}
    out["n_held_out"] = {"objects": int(len(held)), "hsm_failures": int((~ok).sum())}
    if args.model:
        out["embedding colours"] = embedding_colours(args.model, data, held)
    path = Path(args.data).parent / "limits.json"
    atomic_write_text(path, json.dumps(out, indent=2))
    for label, values in out.items():
        for name, value in values.items():
            print(f"{label:12s} {name:48s} {value:.3f}")
    return out


if __name__ == "__main__":
    main()
