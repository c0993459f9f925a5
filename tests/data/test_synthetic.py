"""The synthetic survey: determinism, physics sanity, labels, rare classes, files, errors."""

from __future__ import annotations

import dataclasses

import galsim
import numpy as np
import pytest
from PIL import Image

from astropt.cli import main
from astropt.config import ConfigError
from astropt.data.shards import DataError, Manifest, ShardSet, shard_path
from astropt.data.synthetic import (
    SurveyConfig,
    half_light_radius,
    preview,
    render_object,
    synthesize,
)
from astropt.data.synthetic import templates as gt
from astropt.data.synthetic.params import RARE_KINDS, draw_galaxy, draw_kind
from astropt.data.synthetic.render import SPECTRUM_WAVE, draw_image, galaxy_components, psf_profile

SMALL = dict(image_size=24, bands="griz", rows_per_shard=4, rare_fraction=0.25, progress=False)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "survey"
    synthesize(out, 10, seed=3, **SMALL)
    return out


def _galaxy(seed: int = 1, **changes):
    g = draw_galaxy(np.random.default_rng(seed), gt.tables(), max_hlr=1.5)
    return dataclasses.replace(g, **changes)


def _noiseless(g, size=32, bands=(2,)):
    comps = galaxy_components(g, gt.tables(), knot_seed=1)
    return draw_image(comps, psf_profile(g), list(bands), size, 0.2), comps


# ----------------------------------------------------------------------------- determinism


def test_render_object_is_deterministic_and_seeded():
    cfg = SurveyConfig(n=10, image_size=24)
    a, b = render_object(5, 7, cfg), render_object(5, 7, cfg)
    for name in ("image", "spectrum", "spectrum_ivar", "photometry", "photometry_err"):
        np.testing.assert_array_equal(a[name], b[name])
    assert a["labels"] == b["labels"] and a["id"] == "synth-7-0000005"
    other = render_object(5, 8, cfg)
    assert not np.array_equal(a["image"], other["image"])
    assert a["image"].dtype == np.float32 and a["image"].shape == (4, 24, 24)


def test_same_survey_for_any_worker_count(tmp_path, survey):
    out = tmp_path / "two_workers"
    synthesize(out, 10, seed=3, workers=2, **SMALL)
    one, two = ShardSet(survey), ShardSet(out)
    assert one.ids == two.ids and len(one.manifest.shards) == 3
    batch1, batch2 = one.get_batch(range(10)), two.get_batch(range(10))
    for name in list(one.arrays) + one.label_names:
        np.testing.assert_array_equal(batch1[name], batch2[name])


# ----------------------------------------------------------------------------- physics


def test_r_flux_falls_with_magnitude_at_fixed_parameters():
    g = _galaxy(n_knots=0, knot_fraction=0.0)
    mags = [18.0, 19.5, 21.0, 22.5]
    fluxes = [_noiseless(dataclasses.replace(g, mag_r=m))[0].sum() for m in mags]
    assert all(a > b for a, b in zip(fluxes, fluxes[1:], strict=False))
    # Linear in flux: 1.5 mag is a factor 10**0.6 (the stamp cuts the same fraction).
    np.testing.assert_allclose(np.array(fluxes[:-1]) / fluxes[1:], 10**0.6, rtol=1e-6)


def test_elliptical_template_reddens_with_redshift_and_matches_galsim():
    tables = gt.tables()
    g_band, r_band = gt.ALL_BANDS.index("g"), gt.ALL_BANDS.index("r")
    zs = np.arange(0.0, 0.41, 0.05)  # the 4000 A break crosses g then r: g-r peaks at z~0.4
    colour = [-2.5 * np.log10(f[g_band] / f[r_band])
              for f in (tables.template_band_flux(0, z) for z in zs)]
    assert np.all(np.diff(colour) > 0)
    sed = galsim.SED(gt.share_path("SEDs", "CWW_E_ext.sed"), "Angstrom", "flambda").atRedshift(0.4)
    bp = {b: galsim.Bandpass(gt.share_path("bandpasses", f"LSST_{b}.dat"), "nm").withZeropoint("AB")
          for b in "gr"}
    galsim_colour = sed.calculateMagnitude(bp["g"]) - sed.calculateMagnitude(bp["r"])
    assert colour[-1] == pytest.approx(galsim_colour, abs=0.01)  # z = 0.4


def test_image_centroid_at_stamp_centre():
    for seed in range(3):
        image, _ = _noiseless(_galaxy(seed, n_knots=0, knot_fraction=0.0), size=32)
        yy, xx = np.mgrid[:32, :32]
        total = image[0].sum()
        assert (image[0] * xx).sum() / total == pytest.approx(15.5, abs=0.02)
        assert (image[0] * yy).sum() / total == pytest.approx(15.5, abs=0.02)


def test_half_light_radius_label_matches_galsim():
    g = _galaxy(2, bulge_fraction=0.4, sersic_n=3.0, bulge_hlr=0.3, disk_hlr=0.9)
    profile = galsim.Add([galsim.Sersic(n=3.0, half_light_radius=0.3, flux=0.4),
                          galsim.Exponential(half_light_radius=0.9, flux=0.6)])
    assert half_light_radius(g) == pytest.approx(profile.calculateHLR(scale=0.01, size=800), rel=0.01)


def test_spectrum_through_a_band_matches_its_magnitude():
    tables = gt.tables()
    for seed in range(4):
        comps = galaxy_components(_galaxy(seed), tables, knot_seed=1)
        spectrum = sum(c.spectrum for c in comps)
        true = sum(c.band_flux for c in comps)
        for b in "gri":  # bands inside the 3600-9800 A grid
            band = tables.bands[b]
            from_spectrum = band.flux_on(SPECTRUM_WAVE, spectrum)
            assert from_spectrum == pytest.approx(true[gt.ALL_BANDS.index(b)], rel=0.02)


def test_noisy_spectrum_and_photometry_agree_with_truth_within_errors(survey):
    shards = ShardSet(survey)
    band = gt.tables().bands["r"]
    for i in range(len(shards)):
        rec = shards[i]
        flux = band.flux_on(rec["spectrum_wavelength"], rec["spectrum"])
        true = 10 ** (-0.4 * (rec["labels"]["mag_r"] - 22.5))
        # Noise of a band-averaged spectrum: per-pixel sigma / sqrt(pixels in the band).
        in_band = (SPECTRUM_WAVE > 5400) & (SPECTRUM_WAVE < 7000)
        sigma = np.sqrt(np.mean(1 / rec["spectrum_ivar"][in_band]) / in_band.sum())
        flat = band.flux_on(SPECTRUM_WAVE, np.full_like(SPECTRUM_WAVE, sigma))
        assert abs(flux - true) < 6 * flat + 0.03 * true
        pull = (rec["photometry"] - [rec["labels"][f"mag_{b}"] for b in "griz"]) / rec["photometry_err"]
        assert np.all(np.abs(pull) < 6)


def test_longer_spectroscopic_exposure_scales_the_noise_only():
    cfg, deep = SurveyConfig(n=10, image_size=24), SurveyConfig(n=10, image_size=24, spectrum_exposure=16.0)
    a, b = render_object(2, 0, cfg), render_object(2, 0, deep)
    np.testing.assert_array_equal(a["image"], b["image"])  # only the spectrum changes
    np.testing.assert_allclose(b["spectrum_ivar"], 16.0 * a["spectrum_ivar"], rtol=1e-5)
    # Same noise draw, 4x smaller: the truth is where both spectra point.
    truth = (4.0 * b["spectrum"] - a["spectrum"]) / 3.0
    np.testing.assert_allclose(a["spectrum"] - truth, 4.0 * (b["spectrum"] - truth), rtol=1e-3, atol=1e-4)
    assert cfg.hash() != deep.hash()


# ----------------------------------------------------------------------------- labels and rare classes


def test_every_label_present_and_finite(survey):
    shards = ShardSet(survey)
    expected = {
        "redshift", "mag_r", "mag_g", "mag_i", "mag_z", "mag_g_obs", "mag_r_obs", "g_r", "r_i", "i_z",
        "bulge_fraction", "bulge_hlr_arcsec", "disk_hlr_arcsec", "hlr_arcsec", "sersic_n",
        "ellipticity", "axis_ratio", "position_angle", "disk_sed", "bulge_sed", "disk_sed_index",
        "n_knots", "has_knots", "psf_fwhm_arcsec", "snr_r", "kind", "is_rare", "abs_mag_r",
        "log_stellar_mass", "halpha_ew",
    }
    assert expected <= set(shards.label_names)
    labels = shards.labels()
    for name, values in labels.items():
        if values.dtype.kind in "fi":
            assert np.all(np.isfinite(values)), name
    assert np.all((labels["redshift"] >= 0.02) & (labels["redshift"] <= 1.5))
    assert np.all(labels["hlr_arcsec"] >= np.minimum(labels["bulge_hlr_arcsec"], labels["disk_hlr_arcsec"]) - 1e-6)
    np.testing.assert_array_equal(labels["is_rare"], labels["kind"] != "normal")


def test_rare_classes_at_the_configured_rate():
    rate = 0.01
    kinds = [draw_kind(np.random.default_rng(np.random.SeedSequence([0, i]).spawn(1)[0]), rate)
             for i in range(20000)]
    counts = {k: kinds.count(k) for k in RARE_KINDS}
    n_rare = sum(counts.values())
    assert abs(n_rare - 200) < 4 * np.sqrt(200)
    assert all(c > 20 for c in counts.values())


def test_every_rare_kind_renders():
    cfg = SurveyConfig(n=40, image_size=32, rare_fraction=1.0, spectra=False)
    seen = {}
    for i in range(40):
        rec = render_object(i, 0, cfg)
        seen.setdefault(rec["labels"]["kind"], rec)
        if len(seen) == len(RARE_KINDS):
            break
    assert set(seen) == set(RARE_KINDS)
    for rec in seen.values():
        assert np.all(np.isfinite(rec["image"])) and rec["labels"]["is_rare"] == 1


# ----------------------------------------------------------------------------- files


def test_resume_keeps_finished_shards_and_cache_returns(tmp_path, survey):
    out = tmp_path / "resume"
    synthesize(out, 10, seed=3, **SMALL)
    first = shard_path(out, 0).stat().st_mtime_ns
    shard_path(out, 1).unlink()
    (out / "manifest.json").unlink()  # as if interrupted before the end
    synthesize(out, 10, seed=3, **SMALL)
    assert shard_path(out, 0).stat().st_mtime_ns == first
    batch, ref = ShardSet(out).get_batch(range(10)), ShardSet(survey).get_batch(range(10))
    np.testing.assert_array_equal(batch["image"], ref["image"])
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert synthesize(out, 10, seed=3, **SMALL).n_objects == 10
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # cached: nothing rewritten
    with pytest.raises(DataError, match="other settings"):
        synthesize(out, 10, seed=4, **SMALL)


def test_manifest_and_preview(survey, tmp_path):
    manifest = Manifest.read(survey)
    assert manifest.source["kind"] == "synthetic" and manifest.source["seed"] == 3
    assert manifest.arrays["image"].shape == [4, 24, 24] and manifest.n_objects == 10
    png = preview(survey, tmp_path / "p.png", n=6)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 200


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=-5), "positive"), (dict(n=10, bands="grq"), "bands"), (dict(n=10, image_size=4), "image_size"),
    (dict(n=10, rare_fraction=2.0), "rare_fraction"), (dict(n=10, workers=0), "workers"),
    (dict(n=10, spectrum_exposure=0.0), "spectrum_exposure"),
])
def test_bad_settings_raise_before_writing(tmp_path, kwargs, match):
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match=match):
        synthesize(out, **kwargs)
    assert not out.exists()


def test_cli_errors_exit_2_and_write_nothing(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  modalities:\n    - {name: images, kind: image, image_size: 32, "
                      "n_channels: 4, patch_size: 16}\n")
    out = tmp_path / "out"
    assert main(["data", "synth", "--n", "-1", "--out", str(out)]) == 2
    assert main(["data", "synth", "--n", "4", "--bands", "gx", "--out", str(out)]) == 2
    assert main(["data", "synth", "--n", "4", "--image-size", "24", "--config", str(config),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "patch size 16" in err[-1]
    assert not out.exists()


def test_cli_writes_survey_and_preview(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["data", "synth", "--n", "3", "--out", str(out), "--image-size", "16", "--bands", "gri",
                 "--workers", "1", "--no-progress", "--preview"])
    assert code == 0 and (out / "preview.png").is_file()
    assert ShardSet(out).arrays["image"].shape == [3, 16, 16]
    assert "galaxies/s" in capsys.readouterr().out
