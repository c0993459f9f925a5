"""Render a drawn galaxy: light components, images, noise, photometry and spectrum.

Speed comes from one observation: every component (bulge, disk, knots, lens arc, star,
dust lane, companion) has a *single* SED, so its image in any band is one achromatic
profile, convolved with the PSF and drawn once with GalSim, times the component's flux in
that band. Colour therefore varies between components (red bulge, blue disk, bluer knots),
never inside one. The PSF (Moffat, seeing drawn per object) is the same in all bands.

Units: images in nanomaggies per pixel (sky-subtracted, so noise but no sky level);
spectra f_lambda in 1e-17 erg/s/cm^2/A; photometry AB magnitudes.
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np

from astropt.data.synthetic.params import KNOT_HALPHA_EW, R_BAND, Galaxy
from astropt.data.synthetic.templates import (
    ALL_BANDS,
    H_ALPHA,
    SED_NAMES,
    Tables,
    blackbody,
    emission_lines,
    line_profiles,
    template_spectrum,
)

# Survey depth, HSC-Wide/LSST-like: dark-sky brightness (AB mag/arcsec^2) and 5-sigma
# point-source depth at 1" seeing, per band. Together they fix sky noise and the gain.
SKY_MAG = {"u": 22.9, "g": 22.1, "r": 21.1, "i": 20.3, "z": 19.4, "y": 18.6}
DEPTH_5SIGMA = {"u": 25.0, "g": 25.8, "r": 25.5, "i": 25.2, "z": 24.6, "y": 23.8}
REFERENCE_SEEING = 1.0
MOFFAT_BETA = 3.5
SPECTRUM_WAVE = np.linspace(3600.0, 9800.0, 640)  # observed Angstrom, about 9.7 A/pixel
SPECTRUM_NOISE = 0.1  # sky noise per pixel at the centre of the grid (1e-17 f_lambda)
SPECTRUM_GAIN = 30.0  # source shot noise: variance = f_lambda / gain
GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=3e-3)


@dataclass
class Component:
    """One light component: a unit-flux profile and its flux per band (``ALL_BANDS``)."""

    name: str  # bulge, disk, knots, arc, star, lane, bridge
    profile: galsim.GSObject
    band_flux: np.ndarray  # (6,) nanomaggies
    spectrum: np.ndarray | None = None  # f_lambda on SPECTRUM_WAVE; None: not in the spectrum
    in_galaxy: bool = True  # counts towards the target galaxy's photometry and labels


def sed_component(name: str, tables: Tables, sed: int, z: float, r_flux: float, halpha_ew: float,
                  profile: galsim.GSObject, in_spectrum: bool = True,
                  in_galaxy: bool = True) -> Component:
    """A component with template ``sed`` (+ emission lines of rest EW ``halpha_ew``)."""
    unit = tables.template_band_flux(sed, z).copy()  # amplitude 1
    line_wave = line_flux = None
    if halpha_ew > 0:
        continuum = template_spectrum(sed, z, np.array([H_ALPHA * (1.0 + z)]))[0]
        line_wave, line_flux = emission_lines(z, halpha_ew * (1.0 + z) * continuum)
        unit += [band.line_flux(line_wave, line_flux).sum() for band in tables.bands.values()]
    amplitude = r_flux / unit[R_BAND]
    spectrum = None
    if in_spectrum:
        spectrum = template_spectrum(sed, z, SPECTRUM_WAVE)
        if line_wave is not None:
            spectrum = spectrum + line_profiles(SPECTRUM_WAVE, line_wave, line_flux)
        spectrum = amplitude * spectrum
    return Component(name, profile, amplitude * unit, spectrum, in_galaxy)


def galaxy_components(g: Galaxy, tables: Tables, knot_seed: int, shift: tuple[float, float] = (0.0, 0.0),
                      in_galaxy: bool = True) -> list[Component]:
    """Bulge (Sersic), disk (exponential) and star-forming knots of one galaxy."""
    beta = g.position_angle * galsim.radians
    total = 10.0 ** (-0.4 * (g.mag_r - 22.5))
    disk_flux = (1.0 - g.bulge_fraction) * total
    parts = [
        (galsim.Sersic(n=g.sersic_n, half_light_radius=g.bulge_hlr, gsparams=GSPARAMS)
         .shear(q=g.bulge_q, beta=beta), "bulge", g.bulge_sed, g.bulge_fraction * total, 0.0),
        (galsim.Exponential(half_light_radius=g.disk_hlr, gsparams=GSPARAMS)
         .shear(q=g.disk_q, beta=beta), "disk", g.disk_sed, disk_flux * (1.0 - g.knot_fraction), g.halpha_ew),
    ]
    if g.n_knots:
        knots = galsim.RandomKnots(g.n_knots, half_light_radius=g.disk_hlr, flux=1.0,
                                   rng=galsim.BaseDeviate(knot_seed), gsparams=GSPARAMS)
        parts.append((knots.shear(q=g.disk_q, beta=beta), "knots", SED_NAMES.index("Im"),
                      disk_flux * g.knot_fraction, KNOT_HALPHA_EW))
    return [
        sed_component(name, tables, sed, g.redshift, flux, ew, profile.shift(*shift),
                      in_spectrum=in_galaxy, in_galaxy=in_galaxy)
        for profile, name, sed, flux, ew in parts
        if flux > 1e-3 * total  # a 0.1% component changes nothing visible
    ]


def psf_profile(g: Galaxy) -> galsim.GSObject:
    """Per-object Moffat PSF with a slight ellipticity."""
    psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=g.psf_fwhm, gsparams=GSPARAMS)
    return psf.shear(g1=g.psf_g1, g2=g.psf_g2)


def draw_image(components: list[Component], psf: galsim.GSObject, bands: list[int],
               size: int, pixel_scale: float) -> np.ndarray:
    """Noiseless ``(len(bands), size, size)`` image in nMgy/pixel, centred on the stamp."""
    image = np.zeros((len(bands), size, size))
    for comp in components:
        stamp = galsim.Convolve(comp.profile, psf, gsparams=GSPARAMS).drawImage(
            nx=size, ny=size, scale=pixel_scale, method="auto")
        image += comp.band_flux[bands, None, None] * stamp.array[None]
    return image


def sky_noise(band: str, pixel_scale: float) -> tuple[float, float]:
    """Sky noise sigma per pixel (nMgy) and gain (counts per nMgy) of ``band``.

    The 5-sigma depth of a point source over the effective area of a Gaussian PSF of
    ``REFERENCE_SEEING``, ``n_eff = 2.266 FWHM^2 / pixel^2`` pixels, fixes the sky sigma; the
    sky brightness then fixes the gain (sky counts are Poisson: sigma^2 = sky / gain).
    """
    n_eff = 2.266 * REFERENCE_SEEING**2 / pixel_scale**2
    sigma = 10.0 ** (-0.4 * (DEPTH_5SIGMA[band] - 22.5)) / (5.0 * np.sqrt(n_eff))
    sky = 10.0 ** (-0.4 * (SKY_MAG[band] - 22.5)) * pixel_scale**2
    return float(sigma), float(sky / sigma**2)


def add_image_noise(image: np.ndarray, band_names: str, pixel_scale: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Sky + source shot noise (Gaussian approximation of Poisson), per band."""
    noisy = np.empty(image.shape, dtype=np.float32)
    for c, band in enumerate(band_names):
        sigma, gain = sky_noise(band, pixel_scale)
        std = np.sqrt(sigma**2 + np.maximum(image[c], 0.0) / gain)
        noisy[c] = image[c] + std * rng.standard_normal(image[c].shape)
    return noisy


def photometry(flux: np.ndarray, hlr: float, psf_fwhm: float, pixel_scale: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy AB magnitudes, their errors and flux S/N for true fluxes (nMgy) in ``ALL_BANDS``.

    The flux error is that of a matched (Gaussian-weighted) aperture of the PSF-convolved
    galaxy: sky variance times the effective area plus source shot noise. Fluxes below
    1 sigma are reported at 1 sigma (an upper limit, with error 1.09 mag).
    """
    sigma2 = (psf_fwhm / 2.3548) ** 2 + (hlr / 1.1774) ** 2
    n_eff = 4.0 * np.pi * sigma2 / pixel_scale**2
    err = np.empty(len(ALL_BANDS))
    for b, band in enumerate(ALL_BANDS):
        sigma, gain = sky_noise(band, pixel_scale)
        err[b] = np.sqrt(sigma**2 * n_eff + max(flux[b], 0.0) / gain)
    observed = np.maximum(flux + err * rng.standard_normal(len(err)), err)
    mags = 22.5 - 2.5 * np.log10(observed)
    return mags, 2.5 / np.log(10.0) * err / observed, flux / err


def add_spectrum_noise(spectrum: np.ndarray, rng: np.random.Generator,
                       exposure: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy spectrum and its inverse variance: sky noise rising to both ends + shot noise.

    ``exposure`` (relative) divides both variances: S/N grows as its square root.
    """
    shape = 1.0 + 1.5 * ((SPECTRUM_WAVE - 6700.0) / 3100.0) ** 2
    variance = ((SPECTRUM_NOISE * shape) ** 2 + np.maximum(spectrum, 0.0) / SPECTRUM_GAIN) / exposure
    noisy = spectrum + np.sqrt(variance) * rng.standard_normal(spectrum.shape)
    return noisy.astype(np.float32), (1.0 / variance).astype(np.float32)


def star_component(tables: Tables, r_flux: float, temperature: float,
                   offset: tuple[float, float]) -> Component:
    """A foreground star: a point source with a blackbody SED (not part of the galaxy)."""
    shape = np.array([band.flux(blackbody(band.wave, temperature)) for band in tables.bands.values()])
    profile = galsim.DeltaFunction(gsparams=GSPARAMS).shift(*offset)
    return Component("star", profile, r_flux * shape / shape[R_BAND], None, in_galaxy=False)
