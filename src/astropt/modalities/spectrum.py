"""Spectra: flux on a wavelength grid -> windows of ``w`` samples, and the exact inverse.

- Each spectrum is standardised on its own (mean and standard deviation of its valid
  samples); the two numbers travel in ``Tokens.stats`` so the flux can be restored.
- The spectrum is cut into consecutive windows of ``w = patch_size`` samples; the tail is
  padded with zeros and its samples get weight 0 in the loss.
- A window's position is a 2-vector: the log wavelength of its first and last real
  sample, mapped so that ``wavelength_range`` spans [-1, 1]. A learned projection of this
  coordinate replaces a position table, so spectra sampled on different grids (or
  covering different ranges) share one model.
- Isolated non-finite flux samples are interpolated over and given weight 0 (a window of
  nothing but non-finite samples is a masked token); an all-NaN spectrum is an error.
- Per-sample loss weights (``stats["weights"]``, ``(B, N, w)``) mark real samples; with
  ``ivar_weights`` they are the inverse variances in normalised units, scaled so that
  each spectrum's median weight is 1 and clipped at ``MAX_WEIGHT``.

Record keys: ``<field>`` (flux), ``<field>_wavelength`` (Angstrom), ``<field>_ivar``
(optional). A record without ``<field>`` (or with an empty one) becomes fully masked tokens
(missing modality).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from astropt.config import ModalityConfig
from astropt.errors import TokenizationError
from astropt.modalities.base import Tokens, as_batch, register

MAX_WEIGHT = 10.0


def _describe(ids: list[str]) -> str:
    return f"{ids[:3]}{'...' if len(ids) > 3 else ''}"


@register("spectrum")
class SpectrumModality:
    """Tokeniser of a 1-D spectrum modality (see module docstring)."""

    def __init__(self, config: ModalityConfig):
        if config.kind != "spectrum":
            raise ValueError(f"SpectrumModality needs kind 'spectrum', got {config.kind!r}")
        self.config = config
        self.window = config.patch_size
        lo, hi = config.wavelength_range
        self._log_lo, self._log_span = math.log(lo), math.log(hi) - math.log(lo)

    @staticmethod
    def token_sizes(config: ModalityConfig) -> tuple[int, int]:
        """A window of ``patch_size`` samples; position: its first and last log wavelength."""
        return config.patch_size, 2

    # ------------------------------------------------------------------ checks
    def _clean(
        self, flux, wavelength, ivar, what: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Validate one spectrum; returns flux (non-finite interpolated), wavelength, ivar, valid."""
        flux = np.asarray(flux, dtype=np.float64)
        wavelength = np.asarray(wavelength, dtype=np.float64)
        if flux.ndim != 1 or wavelength.shape != flux.shape:
            raise TokenizationError(
                f"{what}: flux and wavelength must be 1-D of equal length, got shapes "
                f"{flux.shape} and {wavelength.shape}"
            )
        n, w = flux.shape[0], self.window
        if n < w:
            raise TokenizationError(f"{what}: {n} samples is shorter than one window of {w}")
        if n > self.config.max_tokens * w:
            raise TokenizationError(
                f"{what}: {n} samples need {math.ceil(n / w)} windows of {w} but modality "
                f"{self.config.name!r} has max_tokens={self.config.max_tokens}"
            )
        if not np.isfinite(wavelength).all() or not (np.diff(wavelength) > 0).all():
            raise TokenizationError(f"{what}: wavelength grid is not strictly increasing (or not finite)")
        valid = np.isfinite(flux)
        if ivar is not None:
            ivar = np.asarray(ivar, dtype=np.float64)
            if ivar.shape != flux.shape:
                raise TokenizationError(f"{what}: ivar shape {ivar.shape} != flux shape {flux.shape}")
            ivar = np.where(np.isfinite(ivar) & (ivar > 0), ivar, 0.0)
            valid &= ivar > 0
        if not valid.any():
            raise TokenizationError(f"{what}: no finite flux sample (all NaN or zero ivar)")
        if not valid.all():
            flux = np.interp(wavelength, wavelength[valid], flux[valid])
        return flux, wavelength, ivar, valid

    # ------------------------------------------------------------------ forward
    def tokenize(self, flux, wavelength, ivar=None, what: str = "spectrum") -> Tokens:
        """Tokenise one spectrum -> ``(N, w)`` tokens with ``(N, 2)`` positions."""
        record = {"id": what, self.config.field: flux, f"{self.config.field}_wavelength": wavelength}
        if ivar is not None:
            record[f"{self.config.field}_ivar"] = ivar
        tokens = self.tokenize_records([record], what=what)
        stats = {k: v[0] for k, v in tokens.stats.items()}
        mask = None if tokens.mask is None else tokens.mask[0]
        return Tokens(tokens.values[0], tokens.positions[0], mask, stats)

    def tokenize_records(self, records: list[dict], what: str | None = None) -> Tokens:
        """Tokenise the spectra of a batch of records -> padded ``(B, N, w)`` tokens."""
        key, w = self.config.field, self.window
        cleaned = []
        for r in records:
            if r.get(key) is None or np.size(r[key]) == 0:  # missing modality
                cleaned.append(None)
                continue
            label = what or f"spectrum of object {r.get('id')!r}"
            if f"{key}_wavelength" not in r:
                raise TokenizationError(f"{label}: record has no {key + '_wavelength'!r} array")
            cleaned.append(self._clean(r[key], r[f"{key}_wavelength"], r.get(f"{key}_ivar"), label))
        lengths = np.array([0 if c is None else len(c[0]) for c in cleaned])
        n_tok = max(1, math.ceil(lengths.max() / w))
        b, size = len(records), n_tok * w
        flux, loglam, valid = np.zeros((b, size)), np.zeros((b, size)), np.zeros((b, size), bool)
        ivar = np.zeros((b, size))
        for i, c in enumerate(cleaned):
            if c is not None:
                n = lengths[i]
                flux[i, :n], loglam[i, :n], valid[i, :n] = c[0], np.log(c[1]), c[3]
                ivar[i, :n] = 1.0 if c[2] is None else c[2]
        return self._windows(flux, loglam, valid, ivar, lengths)

    def _windows(self, flux, loglam, valid, ivar, lengths) -> Tokens:
        """Vectorised normalisation, windowing and positions of a padded batch."""
        b, size = flux.shape
        w = self.window
        n_valid = valid.sum(1, keepdims=True)
        mean = (flux * valid).sum(1, keepdims=True) / np.maximum(n_valid, 1)
        var = (((flux - mean) * valid) ** 2).sum(1, keepdims=True) / np.maximum(n_valid - 1, 1)
        scale = np.sqrt(var)
        scale = np.where(scale > 0, scale, 1.0)  # constant spectra: only remove the mean
        real = np.arange(size)[None, :] < lengths[:, None]
        values = np.where(real, (flux - mean) / scale, 0.0).reshape(b, -1, w)

        # Position: log wavelength of the first and last real sample of each window.
        starts = np.arange(0, size, w)
        last = np.minimum(starts[None, :] + w, lengths[:, None]) - 1  # (B, N)
        token_real = starts[None, :] < lengths[:, None]
        coord = np.stack(
            [np.take_along_axis(loglam, np.where(token_real, starts[None, :], 0), 1),
             np.take_along_axis(loglam, np.clip(last, 0, None), 1)],
            axis=-1,
        )
        coord = np.where(token_real[..., None], 2 * (coord - self._log_lo) / self._log_span - 1, 0.0)

        valid_w = valid.reshape(b, -1, w)
        mask = token_real & valid_w.any(-1)
        weights = valid_w.astype(np.float64)
        if self.config.ivar_weights:
            # Inverse variance in normalised units, each spectrum's median valid weight = 1.
            iv = (ivar * scale**2).reshape(b, -1, w) * valid_w
            med = np.array([np.median(x[m]) if m.any() else 1.0 for x, m in zip(iv, valid_w, strict=True)])
            weights = np.clip(iv / np.maximum(med, 1e-30)[:, None, None], 0.0, MAX_WEIGHT)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        stats = {
            "mean": f32(mean),
            "scale": f32(scale),
            "length": torch.from_numpy(lengths.astype(np.int64)),
            "valid": torch.from_numpy(valid_w),
            "weights": f32(weights),
            "wavelength": torch.from_numpy(np.where(real, np.exp(loglam), np.nan)),
        }
        return Tokens(f32(values), f32(coord), None if mask.all() else torch.from_numpy(mask), stats)

    # ------------------------------------------------------------------ inverse
    def detokenize(self, tokens: Tokens | torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Flux from tokens: ``(L,)`` for one spectrum, ``(B, N*w)`` (NaN past each end) for a batch.

        With the statistics of :meth:`tokenize` this is the exact inverse (non-finite input
        samples come back as NaN). Without them (model predictions) the normalised flux of
        all windows is returned.
        """
        values, stats, single = as_batch(tokens, stats)
        b = values.shape[0]
        flux = values.reshape(b, -1).double()
        if "mean" in stats:
            flux = flux * stats["scale"].double() + stats["mean"].double()
        if "valid" in stats:
            flux = flux.masked_fill(~stats["valid"].reshape(b, -1), float("nan"))
        if "length" in stats:
            beyond = torch.arange(flux.shape[1])[None, :] >= stats["length"][:, None]
            flux = flux.masked_fill(beyond, float("nan"))
            if single:
                return flux[0, : int(stats["length"][0])]
        return flux[0] if single else flux

    def wavelength(self, tokens: Tokens) -> torch.Tensor:
        """Wavelength grid (Angstrom) of tokenised spectra, NaN past each end."""
        return tokens.stats["wavelength"]
