"""Spectral templates, bandpasses and cosmology tables of the synthetic survey.

Everything here comes with GalSim's wheel (no download): the Coleman, Wu & Weedman (1980)
galaxy templates E, Sbc, Scd and Im (extended by Bolzonella et al. 2000) and the LSST
``ugrizy`` total-throughput curves. Distances come from astropy's Planck18 cosmology.

Units used throughout the synthetic survey:

- spectra are observed ``f_lambda`` in 1e-17 erg/s/cm^2/Angstrom, wavelengths in Angstrom
  (vacuum);
- band fluxes are in nanomaggies (nMgy): AB magnitude ``m = 22.5 - 2.5 log10(flux)``,
  integrated for a photon-counting detector.

Redshifting is done by hand so the (1+z) factors are explicit: a template ``T`` observed at
redshift ``z`` with amplitude ``A`` has ``f_lambda(lambda) = A * T(lambda / (1 + z))``; the
table ``Tables.band_flux`` holds the nMgy of ``A = 1`` on a fine redshift grid (interpolated
linearly, accurate to < 0.01 mag); ``tests`` cross-check it against GalSim's own
``SED.atRedshift(z).calculateMagnitude(bandpass.withZeropoint("AB"))``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import galsim
import numpy as np
from scipy.special import erf

SED_NAMES = ("E", "Sbc", "Scd", "Im")
"""Galaxy templates, from old/red to star-forming/blue (index = ``*_sed_index`` label)."""
ALL_BANDS = "ugrizy"
C_ANGSTROM = 2.99792458e18  # speed of light in Angstrom/s
C_KMS = 2.99792458e5
NMGY_FNU = 3.631e-29  # f_nu of 1 nanomaggy (AB 22.5) in erg/s/cm^2/Hz
FLAMBDA_UNIT = 1e-17  # spectra are in units of 1e-17 erg/s/cm^2/A

Z_MAX_TABLE = 3.2  # the table also covers lensed background sources behind z <= 1.5
Z_STEP = 0.005

# Nebular emission lines of star-forming components: vacuum rest wavelength (A) and flux
# relative to H-alpha (dust-free case-B Balmer ratio, typical [OII], [OIII], [NII], [SII]).
EMISSION_LINES = (
    (3727.09, 0.45),  # [OII] 3726
    (3729.88, 0.55),  # [OII] 3729
    (4102.89, 0.09),  # H-delta
    (4341.69, 0.16),  # H-gamma
    (4862.68, 0.35),  # H-beta
    (4960.30, 0.17),  # [OIII] 4959
    (5008.24, 0.50),  # [OIII] 5007
    (6549.86, 0.10),  # [NII] 6548
    (6564.61, 1.00),  # H-alpha
    (6585.27, 0.30),  # [NII] 6584
    (6718.29, 0.16),  # [SII] 6716
    (6732.67, 0.12),  # [SII] 6731
)
H_ALPHA = 6564.61
LINE_SIGMA_KMS = 80.0  # intrinsic velocity dispersion of the gas
SPECTRAL_RESOLUTION = 1500.0  # lambda / FWHM of the instrument


def share_path(*parts: str) -> str:
    """Path of a data file shipped in GalSim's wheel."""
    return os.path.join(galsim.meta_data.share_dir, *parts)


def ab_nmgy_flambda(wave: np.ndarray) -> np.ndarray:
    """``f_lambda`` (1e-17 erg/s/cm^2/A) of a flat-f_nu source of 1 nanomaggy."""
    return NMGY_FNU * C_ANGSTROM / np.square(wave) / FLAMBDA_UNIT


@dataclass(frozen=True)
class Band:
    """One photon-counting bandpass on its own wavelength grid (Angstrom)."""

    name: str
    wave: np.ndarray
    throughput: np.ndarray
    norm: float  # integral of the 1-nMgy AB spectrum through the band

    @classmethod
    def lsst(cls, name: str) -> Band:
        bandpass = galsim.Bandpass(share_path("bandpasses", f"LSST_{name}.dat"), wave_type="nm")
        wave_nm = np.asarray(bandpass.wave_list, dtype=np.float64)
        wave = wave_nm * 10.0
        throughput = np.asarray(bandpass(wave_nm), dtype=np.float64)
        norm = float(np.trapezoid(ab_nmgy_flambda(wave) * throughput * wave, wave))
        return cls(name, wave, throughput, norm)

    @property
    def effective_wavelength(self) -> float:
        return float(np.trapezoid(self.throughput * self.wave**2, self.wave)
                     / np.trapezoid(self.throughput * self.wave, self.wave))

    def flux(self, f_lambda: np.ndarray) -> np.ndarray:
        """nMgy of spectra ``f_lambda`` (..., len(wave)) sampled on this band's grid."""
        return np.trapezoid(f_lambda * self.throughput * self.wave, self.wave, axis=-1) / self.norm

    def flux_on(self, wave: np.ndarray, f_lambda: np.ndarray) -> float:
        """nMgy of a spectrum sampled on its own grid ``wave`` (finer than the band's)."""
        transmission = np.interp(wave, self.wave, self.throughput, left=0.0, right=0.0)
        return float(np.trapezoid(f_lambda * transmission * wave, wave) / self.norm)

    def line_flux(self, wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
        """nMgy of unresolved lines at observed ``wave`` with fluxes ``flux`` (1e-17 erg/s/cm^2)."""
        transmission = np.interp(wave, self.wave, self.throughput, left=0.0, right=0.0)
        return flux * transmission * wave / self.norm


@functools.cache
def load_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame wavelength (A) and f_lambda (arbitrary units) of a CWW template."""
    data = np.loadtxt(share_path("SEDs", f"CWW_{name}_ext.sed"))
    return data[:, 0], data[:, 1]


def blackbody(wave: np.ndarray, temperature: float) -> np.ndarray:
    """Planck f_lambda shape (arbitrary units) at ``wave`` (A): the SED of a foreground star."""
    x = 1.4387769e8 / (wave * temperature)  # h c / (lambda k T), lambda in A
    return (5000.0 / wave) ** 5 / np.expm1(np.minimum(x, 700.0))


class Tables:
    """Per-process precomputed tables: template band fluxes versus redshift, cosmology.

    ``band_flux[t, iz, b]``: nMgy of template ``t`` with amplitude 1 at ``z_grid[iz]`` in
    band ``ALL_BANDS[b]``. Built once per process (about 0.2 s) through :func:`tables`.
    """

    def __init__(self) -> None:
        from astropy.cosmology import Planck18

        self.bands = {b: Band.lsst(b) for b in ALL_BANDS}
        self.z_grid = np.arange(0.0, Z_MAX_TABLE + Z_STEP / 2, Z_STEP)
        self.band_flux = np.zeros((len(SED_NAMES), len(self.z_grid), len(ALL_BANDS)))
        for t, name in enumerate(SED_NAMES):
            rest_wave, rest_flux = load_template(name)
            for b, band in enumerate(self.bands.values()):
                shifted = band.wave[None, :] / (1.0 + self.z_grid[:, None])  # (nz, n_wave)
                self.band_flux[t, :, b] = band.flux(np.interp(shifted, rest_wave, rest_flux))
        # Cosmology on a log grid: distance modulus and kpc per arcsec.
        self.cosmo_z = np.geomspace(1e-3, Z_MAX_TABLE, 600)
        self.distmod = Planck18.distmod(self.cosmo_z).value
        self.kpc_per_arcsec = Planck18.kpc_proper_per_arcmin(self.cosmo_z).value / 60.0

    def template_band_flux(self, sed: int, z: float) -> np.ndarray:
        """nMgy in every band of ``ALL_BANDS`` of template ``sed`` at amplitude 1, redshift ``z``."""
        pos = z / Z_STEP
        i = min(int(pos), len(self.z_grid) - 2)
        frac = pos - i
        return (1.0 - frac) * self.band_flux[sed, i] + frac * self.band_flux[sed, i + 1]

    def distance_modulus(self, z: float) -> float:
        return float(np.interp(np.log(z), np.log(self.cosmo_z), self.distmod))

    def z_at_distance_modulus(self, distmod: float) -> float:
        """Redshift whose distance modulus is ``distmod`` (monotonic table inverse)."""
        return float(np.exp(np.interp(distmod, self.distmod, np.log(self.cosmo_z))))

    def arcsec_per_kpc(self, z: float) -> float:
        return 1.0 / float(np.interp(np.log(z), np.log(self.cosmo_z), self.kpc_per_arcsec))


@functools.lru_cache(maxsize=1)
def tables() -> Tables:
    """The process-wide :class:`Tables` (built on first use)."""
    return Tables()


def template_spectrum(sed: int, z: float, wave: np.ndarray) -> np.ndarray:
    """Observed f_lambda of template ``sed`` at amplitude 1 and redshift ``z`` on ``wave``."""
    rest_wave, rest_flux = load_template(SED_NAMES[sed])
    return np.interp(wave / (1.0 + z), rest_wave, rest_flux)


def emission_lines(z: float, halpha_flux: float) -> tuple[np.ndarray, np.ndarray]:
    """Observed wavelengths (A) and fluxes (1e-17 erg/s/cm^2) of the nebular lines."""
    rest = np.array([w for w, _ in EMISSION_LINES])
    ratio = np.array([r for _, r in EMISSION_LINES])
    return rest * (1.0 + z), ratio * halpha_flux


def line_profiles(wave: np.ndarray, centres: np.ndarray, fluxes: np.ndarray) -> np.ndarray:
    """Gaussian lines integrated over the pixels of the grid ``wave``, as f_lambda density.

    Integrating over each pixel (not sampling) conserves line flux on a coarse grid.
    """
    edges = np.concatenate([[1.5 * wave[0] - 0.5 * wave[1]], 0.5 * (wave[1:] + wave[:-1]),
                            [1.5 * wave[-1] - 0.5 * wave[-2]]])
    sigma = centres * np.hypot(LINE_SIGMA_KMS / C_KMS, 1.0 / (2.3548 * SPECTRAL_RESOLUTION))
    # (n_lines, n_edges): cumulative fraction of each line below each pixel edge.
    cdf = 0.5 * (1.0 + erf((edges[None, :] - centres[:, None]) / (np.sqrt(2.0) * sigma[:, None])))
    per_pixel = fluxes[:, None] * np.diff(cdf, axis=1)
    return per_pixel.sum(axis=0) / np.diff(edges)
