"""Physical parameters of synthetic galaxies: the distributions the survey draws from.

Every number here is a documented modelling choice (see the README table "The synthetic
survey"); the rendering in :mod:`astropt.data.synthetic.render` only turns these
parameters into pixels, spectra and magnitudes.

Drawing order per galaxy: apparent r magnitude (number counts) -> redshift given magnitude
-> bulge fraction -> templates given bulge fraction -> emission-line strength -> absolute
magnitude (via the templates' K-correction) -> physical and angular sizes -> shapes -> knots
-> seeing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astropt.data.synthetic.templates import ALL_BANDS, SED_NAMES, Tables

MAG_RANGE = (17.0, 24.0)
COUNTS_SLOPE = 0.15  # dN/dm ~ 10**(0.15 m): flatter than real counts (~0.35) so that
# bright, well-resolved galaxies are common enough to learn from
Z_RANGE = (0.02, 1.5)
BRIGHTEST_ABS_MAG = -23.5
DISK_THICKNESS = 0.2  # intrinsic axis ratio of an edge-on disk
SERSIC_STEP = 0.5  # Sersic indices are quantised so GalSim's profile tables are reused
HALPHA_EW = (0.0, 12.0, 30.0, 70.0)  # median rest-frame EW (A) of H-alpha per template
KNOT_HALPHA_EW = 120.0
RARE_KINDS = ("lens", "star", "edge_on_dust", "merger")
"""Rare classes (labelled ``kind``): a strong-lens arc/ring around an early type, a bright
star overlapping the galaxy, an edge-on disk with a dust lane, a merging pair."""
R_BAND = ALL_BANDS.index("r")
G_BAND = ALL_BANDS.index("g")


@dataclass
class Galaxy:
    """Drawn physical parameters of one galaxy (angles in radians, sizes in arcsec)."""

    mag_r: float
    redshift: float
    bulge_fraction: float
    bulge_sed: int
    disk_sed: int
    halpha_ew: float
    knot_fraction: float
    n_knots: int
    abs_mag_r: float
    rest_g_r: float
    log_stellar_mass: float
    disk_hlr: float
    bulge_hlr: float
    sersic_n: float
    disk_q: float
    bulge_q: float
    position_angle: float
    psf_fwhm: float
    psf_g1: float
    psf_g2: float

    @property
    def ellipticity(self) -> float:
        """|g| = (1 - q) / (1 + q) of the disk, the reduced-shear convention (0 = round)."""
        return (1.0 - self.disk_q) / (1.0 + self.disk_q)


def draw_mag(rng: np.random.Generator) -> float:
    """Apparent r magnitude from number counts 10**(0.2 m) truncated to ``MAG_RANGE``."""
    lo, hi = (10.0 ** (COUNTS_SLOPE * m) for m in MAG_RANGE)
    return float(np.log10(lo + rng.random() * (hi - lo)) / COUNTS_SLOPE)


def draw_redshift(rng: np.random.Generator, mag_r: float) -> float:
    """Redshift given magnitude: p(z) ~ z^2 exp(-(z/z0)^1.5), z0 growing with m.

    With ``u = (z/z0)^1.5`` this is ``u ~ Gamma(2)``; median z is about 0.07 at r=17,
    0.45 at r=20 and 1.0 at r=24 (roughly as in deep optical surveys). ``draw_galaxy``
    then redraws galaxies brighter than ``M_r = BRIGHTEST_ABS_MAG``, which mostly removes
    bright red galaxies at high redshift.
    """
    z0 = 0.045 + 0.1 * (mag_r - MAG_RANGE[0])
    for _ in range(1000):
        z = z0 * rng.gamma(2.0) ** (2.0 / 3.0)
        if Z_RANGE[0] <= z <= Z_RANGE[1]:
            return float(z)
    return float(np.clip(z, *Z_RANGE))


def draw_templates(rng: np.random.Generator, bulge_fraction: float) -> tuple[int, int]:
    """Bulge and disk templates: bulges old (E, sometimes Sbc); disks bluer when B/T is small."""
    bulge_sed = 0 if rng.random() < 0.9 else 1
    if bulge_fraction > 0.7:
        probs = (0.5, 0.4, 0.1, 0.0)
    elif bulge_fraction > 0.35:
        probs = (0.1, 0.5, 0.3, 0.1)
    else:
        probs = (0.0, 0.25, 0.45, 0.3)
    return bulge_sed, int(rng.choice(len(SED_NAMES), p=probs))


def rest_frame(tables: Tables, z: float, seds: list[int], r_fluxes: list[float]) -> tuple[float, float]:
    """Absolute r magnitude and rest-frame g-r of components observed with ``r_fluxes`` nMgy.

    A template with amplitude A observed at z, placed at 10 pc at rest, has flux
    ``A (1+z) 10**(0.4 DM) F_b(z=0)`` (the (1+z) undoes the bandwidth stretch).
    """
    boost = (1.0 + z) * 10.0 ** (0.4 * tables.distance_modulus(z))
    rest = np.zeros(len(ALL_BANDS))
    for sed, flux in zip(seds, r_fluxes, strict=True):
        amplitude = flux / tables.template_band_flux(sed, z)[R_BAND]
        rest += amplitude * boost * tables.band_flux[sed, 0]
    abs_mag = 22.5 - 2.5 * np.log10(rest[R_BAND])
    return float(abs_mag), float(-2.5 * np.log10(rest[G_BAND] / rest[R_BAND]))


def draw_sizes(rng: np.random.Generator, tables: Tables, abs_mag: float, z: float,
               bulge_fraction: float, max_hlr: float) -> tuple[float, float]:
    """Disk and bulge half-light radii (arcsec) from a size-luminosity relation.

    Disks: R = 4.5 kpc * (L / L(M_r=-21))**0.3 * (1+z)**-0.75, 0.15 dex scatter (van der
    Wel et al. 2014-like); bulges are 0.2-0.7 of the disk size, larger when they dominate.
    """
    r_kpc = 4.5 * 10.0 ** (-0.12 * (abs_mag + 21.0)) * (1.0 + z) ** -0.75
    r_kpc *= 10.0 ** (0.15 * rng.standard_normal())
    disk = float(np.clip(r_kpc * tables.arcsec_per_kpc(z), 0.1, max_hlr))
    ratio = 0.2 + 0.5 * bulge_fraction + 0.05 * rng.standard_normal()
    bulge = float(np.clip(disk * ratio, 0.05, max_hlr))
    return disk, bulge


def draw_kind(rng: np.random.Generator, rare_fraction: float) -> str:
    """``"normal"`` or, with probability ``rare_fraction``, one of ``RARE_KINDS`` (equally likely)."""
    if rng.random() < rare_fraction:
        return RARE_KINDS[int(rng.integers(len(RARE_KINDS)))]
    return "normal"


def _draw_basics(rng: np.random.Generator, kind: str) -> tuple[float, float, float, float]:
    """Magnitude, redshift, bulge fraction and cos(inclination); rare kinds bend them."""
    mag_r = draw_mag(rng)
    z = draw_redshift(rng, mag_r)
    bulge_fraction = float(rng.beta(0.7, 1.4))
    cos_i = float(rng.random())  # isotropic inclinations
    if kind == "lens":  # lenses are bright, massive early types at intermediate redshift
        mag_r, z = float(rng.uniform(17.5, 20.5)), float(rng.uniform(0.15, 0.6))
        bulge_fraction = float(rng.uniform(0.8, 0.97))
    elif kind == "edge_on_dust":  # a bright, large, edge-on disk with a modest bulge
        mag_r = float(rng.uniform(17.0, 19.5))
        z = draw_redshift(rng, mag_r)
        bulge_fraction, cos_i = float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.0, 0.03))
    return mag_r, z, bulge_fraction, cos_i


def draw_galaxy(rng: np.random.Generator, tables: Tables, max_hlr: float,
                kind: str = "normal") -> Galaxy:
    """Draw one galaxy's physical parameters (see module docstring for the order)."""
    for _ in range(100):  # redraw the rare over-luminous combinations (e.g. r=20 E at z=1.4)
        mag_r, z, bulge_fraction, cos_i = _draw_basics(rng, kind)
        bulge_sed, disk_sed = draw_templates(rng, bulge_fraction)
        if kind == "lens":
            bulge_sed, disk_sed = 0, 0
        elif kind == "edge_on_dust":
            disk_sed = max(disk_sed, 1)
        halpha_ew = HALPHA_EW[disk_sed] * float(10.0 ** (0.2 * rng.standard_normal()))
        star_forming = disk_sed >= 2 or (disk_sed == 1 and bulge_fraction < 0.5)
        has_knots = star_forming and kind != "edge_on_dust" and rng.random() < 0.5
        knot_fraction = float(rng.uniform(0.1, 0.35)) if has_knots else 0.0
        n_knots = int(rng.integers(5, 41)) if has_knots else 0
        total = 10.0 ** (-0.4 * (mag_r - 22.5))
        disk_flux = (1.0 - bulge_fraction) * total
        seds = [bulge_sed, disk_sed, SED_NAMES.index("Im")]
        fluxes = [bulge_fraction * total, disk_flux * (1 - knot_fraction), disk_flux * knot_fraction]
        abs_mag, rest_g_r = rest_frame(tables, z, seds, [max(f, 1e-12) for f in fluxes])
        if abs_mag >= BRIGHTEST_ABS_MAG:
            break
    # Bell et al. (2003) r-band mass-to-light ratio from rest-frame g-r; M_sun,r = 4.65.
    log_mass = -0.4 * (abs_mag - 4.65) + (-0.306 + 1.097 * rest_g_r)
    disk_hlr, bulge_hlr = draw_sizes(rng, tables, abs_mag, z, bulge_fraction, max_hlr)
    if kind == "edge_on_dust":  # big enough on the sky for a dust lane to be resolved
        disk_hlr = max(disk_hlr, float(rng.uniform(0.6, 0.9)) * max_hlr)
        bulge_hlr = float(rng.uniform(0.35, 0.5)) * disk_hlr
    sersic = float(np.clip(rng.normal(2.0 + 2.5 * bulge_fraction, 0.6), 1.0, 6.0))
    thickness = 0.25 if kind == "edge_on_dust" else DISK_THICKNESS
    return Galaxy(
        mag_r=mag_r, redshift=z, bulge_fraction=bulge_fraction, bulge_sed=bulge_sed,
        disk_sed=disk_sed, halpha_ew=halpha_ew, knot_fraction=knot_fraction, n_knots=n_knots,
        abs_mag_r=abs_mag, rest_g_r=rest_g_r, log_stellar_mass=float(log_mass),
        disk_hlr=disk_hlr, bulge_hlr=bulge_hlr,
        sersic_n=float(np.round(sersic / SERSIC_STEP) * SERSIC_STEP),
        disk_q=float(np.sqrt(cos_i**2 * (1 - thickness**2) + thickness**2)),
        bulge_q=float(rng.uniform(0.55, 0.75) if kind == "edge_on_dust" else rng.uniform(0.65, 1.0)),
        position_angle=float(rng.uniform(0.0, np.pi)),
        psf_fwhm=float(np.clip(0.9 * 10.0 ** (0.08 * rng.standard_normal()), 0.55, 1.6)),
        psf_g1=float(0.02 * rng.standard_normal()),
        psf_g2=float(0.02 * rng.standard_normal()),
    )
