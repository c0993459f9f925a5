"""The rare classes of the synthetic survey: extra light components per kind.

- ``lens``: a blue star-forming background source lensed into an Einstein ring or arcs
  (radius 1.2-2.5") around a massive early type; it appears in the image and, with its
  emission lines at the source redshift, in the spectrum (as in SLACS-like lens searches).
- ``star``: a foreground star (blackbody 3500-10000 K, -0.5 to 2.5 mag brighter than the
  galaxy) 1.5-4" from the centre; image only.
- ``edge_on_dust``: a large edge-on disk whose midplane (bulge included) is dimmed by a
  dust lane absorbing more in the blue (~1/lambda); it lowers the galaxy's own fluxes and
  spectrum.
- ``merger``: a companion galaxy at the same redshift 1-3" away, joined by a faint tidal
  bridge; image only.

The galaxy's labels and photometry describe the target galaxy (dust lane included);
lensed sources, stars and companions are contaminants, seen in the image (and the lensed
source in the spectrum) only.
"""

from __future__ import annotations

import dataclasses

import galsim
import numpy as np

from astropt.data.synthetic.params import Galaxy, draw_galaxy
from astropt.data.synthetic.render import (
    GSPARAMS,
    SPECTRUM_WAVE,
    Component,
    galaxy_components,
    sed_component,
    star_component,
)
from astropt.data.synthetic.templates import SED_NAMES, Tables

IM = SED_NAMES.index("Im")


def _polar(radius: float, angle: float) -> tuple[float, float]:
    return radius * float(np.cos(angle)), radius * float(np.sin(angle))


def lens_arcs(g: Galaxy, tables: Tables, rng: np.random.Generator, max_offset: float) -> list[Component]:
    """Arcs or a ring: tangentially stretched blobs on the Einstein circle, weighted by angle."""
    z_source = float(min(g.redshift + rng.uniform(0.5, 1.5), 3.0))
    theta_e = min(float(rng.uniform(1.2, 2.5)), max_offset)
    concentration, phase = rng.uniform(0.0, 4.0), rng.uniform(0.0, 2 * np.pi)
    angles = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
    weights = np.exp(concentration * np.cos(angles - phase))  # 0: full ring; large: one arc
    weights /= weights.sum()
    blobs = [
        galsim.Gaussian(sigma=0.08, flux=float(w), gsparams=GSPARAMS)
        .shear(g=0.5, beta=(a + np.pi / 2) * galsim.radians).shift(*_polar(theta_e, a))
        for a, w in zip(angles, weights, strict=True)
    ]
    ring = galsim.Sum(blobs, gsparams=GSPARAMS)
    mag = g.mag_r + rng.uniform(0.0, 1.2)
    return [sed_component("arc", tables, IM, z_source, 10.0 ** (-0.4 * (mag - 22.5)), 100.0, ring,
                          in_spectrum=True, in_galaxy=False)]


def dust_lanes(g: Galaxy, components: list[Component], tables: Tables, rng: np.random.Generator,
               pixel_scale: float, size: int) -> list[Component]:
    """Light absorbed by a dust lane along the major axis, as negative-flux components.

    The lane's absorption is ``a_b * exp(-y'^2 / 2 h^2)`` (``y'`` the minor-axis coordinate,
    ``a_r = 0.9``, ``a ~ 1/lambda`` so the lane is redder, capped at 0.97). Its shape does not
    depend on the band, so the absorbed light of each component is one profile (the
    component times the lane, drawn on a 2x finer grid) times ``-a_b`` times the
    component's flux: the sum stays non-negative everywhere.
    """
    half_width = float(rng.uniform(0.2, 0.3))  # arcsec: narrower than the bulge, ~ the PSF
    fine, n = pixel_scale / 2.0, 2 * size
    coords = (np.arange(n) - (n - 1) / 2.0) * fine
    x, y = np.meshgrid(coords, coords)
    minor = -x * np.sin(g.position_angle) + y * np.cos(g.position_angle)
    lane = np.exp(-0.5 * (minor / half_width) ** 2)
    lam_r = tables.bands["r"].effective_wavelength
    lam = np.array([b.effective_wavelength for b in tables.bands.values()])
    absorbed = np.clip(0.9 * lam_r / lam, 0.0, 0.97)
    absorbed_spec = np.clip(0.9 * lam_r / SPECTRUM_WAVE, 0.0, 0.97)
    lanes = []
    for comp in components:
        if comp.name not in ("bulge", "disk"):
            continue
        light = comp.profile.drawImage(nx=n, ny=n, scale=fine, method="no_pixel").array * lane
        fraction = float(light.sum())
        profile = galsim.InterpolatedImage(galsim.Image(light / fraction, scale=fine), gsparams=GSPARAMS)
        spectrum = None if comp.spectrum is None else -fraction * absorbed_spec * comp.spectrum
        lanes.append(Component("lane", profile, -fraction * absorbed * comp.band_flux, spectrum))
    return lanes


def companion(g: Galaxy, tables: Tables, rng: np.random.Generator, max_offset: float,
              knot_seed: int) -> list[Component]:
    """A second galaxy at the same redshift plus a faint tidal bridge towards it."""
    other = draw_galaxy(rng, tables, max_hlr=g.disk_hlr)
    other = dataclasses.replace(
        other, redshift=g.redshift, mag_r=g.mag_r + float(rng.uniform(0.0, 1.5)),
        disk_hlr=g.disk_hlr * float(rng.uniform(0.5, 1.0)),
        bulge_hlr=g.bulge_hlr * float(rng.uniform(0.5, 1.0)), psf_fwhm=g.psf_fwhm)
    separation = float(np.clip(rng.uniform(1.5, 3.0) * max(g.disk_hlr, 0.5), 1.0, max_offset))
    angle = float(rng.uniform(0.0, 2 * np.pi))
    offset = _polar(separation, angle)
    parts = galaxy_components(other, tables, knot_seed, shift=offset, in_galaxy=False)
    bridge = (galsim.Gaussian(sigma=separation / 3.0, gsparams=GSPARAMS)
              .shear(q=0.2, beta=angle * galsim.radians).shift(offset[0] / 2, offset[1] / 2))
    bridge_flux = 0.12 * 10.0 ** (-0.4 * (other.mag_r - 22.5))
    parts.append(sed_component("bridge", tables, max(g.disk_sed, 1), g.redshift, bridge_flux, 0.0, bridge,
                               in_spectrum=False, in_galaxy=False))
    return parts


def rare_components(kind: str, g: Galaxy, components: list[Component], tables: Tables,
                    rng: np.random.Generator, pixel_scale: float, size: int,
                    knot_seed: int) -> list[Component]:
    """Extra components of a rare ``kind`` (empty for ``normal``)."""
    max_offset = 0.35 * size * pixel_scale
    if kind == "lens":
        return lens_arcs(g, tables, rng, max_offset)
    if kind == "star":
        offset = _polar(float(rng.uniform(1.5, max(1.6, min(4.0, max_offset)))),
                        float(rng.uniform(0.0, 2 * np.pi)))
        mag = g.mag_r - rng.uniform(-0.5, 2.5)
        return [star_component(tables, 10.0 ** (-0.4 * (mag - 22.5)),
                               float(rng.uniform(3500.0, 10000.0)), offset)]
    if kind == "edge_on_dust":
        return dust_lanes(g, components, tables, rng, pixel_scale, size)
    if kind == "merger":
        return companion(g, tables, rng, max_offset, knot_seed + 1)
    return []
