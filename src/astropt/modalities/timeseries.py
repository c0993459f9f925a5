"""Light curves: irregularly sampled multi-band photometry -> one token per observation.

- Token value: ``(flux, error)`` standardised per light curve (median and 1.4826 MAD of
  the flux, kept in ``Tokens.stats`` for the inverse), then the one-hot band.
- Position: sin/cos features of the time since the first observation and of the step to
  the next observation, at ``N_PERIODS`` periods spaced geometrically from
  ``MIN_PERIOD`` to ``MAX_PERIOD`` days. The step to the next point tells the hidden state
  at token ``j`` how far ahead token ``j + 1`` lies, which is what it must predict.
- Light curves have different lengths: the batch is padded, with a validity mask.
- Unsorted times are sorted (with a warning); repeated (time, band) pairs are averaged
  (errors combined in quadrature); points with non-finite flux or error are dropped.

Record keys: ``<field>_time`` (days), ``<field>_band`` (band name or index into
``bands``), ``<field>_flux``, ``<field>_err``. A record without them (or with empty
arrays) is a missing modality.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from astropt.config import ModalityConfig
from astropt.errors import TokenizationError
from astropt.modalities.base import Tokens, as_batch, register

log = logging.getLogger(__name__)

N_PERIODS = 8
MIN_PERIOD, MAX_PERIOD = 0.1, 1000.0  # days
PERIODS = np.geomspace(MIN_PERIOD, MAX_PERIOD, N_PERIODS)
KEYS = ("time", "band", "flux", "err")


def time_features(time: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``(B, N)`` times (days since the first point) -> ``(B, N, 4 * N_PERIODS)`` features."""
    step = np.diff(time, axis=1, append=time[:, -1:])
    last = np.arange(time.shape[1])[None, :] >= (length[:, None] - 1)
    step = np.where(last, 0.0, step)  # the last point has no successor
    feats = []
    for t in (time, step):
        phase = 2 * np.pi * t[..., None] / PERIODS  # (B, N, K)
        feats += [np.sin(phase), np.cos(phase)]
    return np.concatenate(feats, axis=-1)


@register("timeseries")
class TimeSeriesModality:
    """Tokeniser of multi-band light curves (see module docstring)."""

    def __init__(self, config: ModalityConfig):
        if config.kind != "timeseries":
            raise ValueError(f"TimeSeriesModality needs kind 'timeseries', got {config.kind!r}")
        self.config = config
        self.bands = list(config.bands)

    @staticmethod
    def token_sizes(config: ModalityConfig) -> tuple[int, int]:
        """(flux, error, one-hot band); position: sin/cos of the time and of the step to the
        next point at ``N_PERIODS`` periods (see :func:`time_features`)."""
        return 2 + len(config.bands), 4 * N_PERIODS

    # ------------------------------------------------------------------ checks
    def _band_index(self, band: np.ndarray, what: str) -> np.ndarray:
        if band.dtype.kind in "iu":
            idx = band.astype(np.int64)
        else:
            lookup = {b: i for i, b in enumerate(self.bands)}
            unknown = sorted({str(b) for b in band} - set(lookup))
            if unknown:
                raise TokenizationError(f"{what}: unknown bands {unknown}; the modality has {self.bands}")
            idx = np.array([lookup[str(b)] for b in band], dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self.bands)):
            raise TokenizationError(f"{what}: band index outside 0..{len(self.bands) - 1}")
        return idx

    def _clean(self, arrays: dict, what: str) -> tuple[np.ndarray, ...]:
        """Validate one light curve: returns sorted, de-duplicated (time, band, flux, err)."""
        time, flux, err = (np.asarray(arrays[k], dtype=np.float64) for k in ("time", "flux", "err"))
        band = self._band_index(np.asarray(arrays["band"]), what)
        if not (time.ndim == 1 and time.shape == band.shape == flux.shape == err.shape):
            raise TokenizationError(
                f"{what}: time, band, flux, err must be 1-D of equal length, got shapes "
                f"{[np.shape(arrays[k]) for k in KEYS]}"
            )
        if not np.isfinite(time).all():
            raise TokenizationError(f"{what}: time contains NaN or Inf")
        good = np.isfinite(flux) & np.isfinite(err)
        if not good.any():
            raise TokenizationError(f"{what}: no point with finite flux and error")
        if not good.all():
            log.warning("%s: dropped %d points with non-finite flux or error", what, (~good).sum())
            time, band, flux, err = time[good], band[good], flux[good], err[good]
        if (np.diff(time) < 0).any():
            log.warning("%s: times are not sorted; sorting them", what)
        order = np.lexsort((band, time))
        time, band, flux, err = time[order], band[order], flux[order], err[order]
        dup = (np.diff(time) == 0) & (np.diff(band) == 0)
        if dup.any():
            log.warning("%s: %d repeated (time, band) points averaged", what, dup.sum())
            group = np.concatenate([[0], np.cumsum(~dup)])
            count = np.bincount(group)
            flux = np.bincount(group, flux) / count
            err = np.sqrt(np.bincount(group, err**2)) / count
            first = np.concatenate([[True], ~dup])
            time, band = time[first], band[first]
        if len(time) > self.config.max_tokens:
            raise TokenizationError(
                f"{what}: {len(time)} points exceed max_tokens={self.config.max_tokens} of "
                f"modality {self.config.name!r}"
            )
        return time, band, flux, err

    # ------------------------------------------------------------------ forward
    def tokenize(self, time, band, flux, err, what: str = "light curve") -> Tokens:
        """Tokenise one light curve -> ``(N, 2 + n_bands)`` tokens, ``(N, 32)`` positions."""
        f = self.config.field
        record = {"id": what, f"{f}_time": time, f"{f}_band": band, f"{f}_flux": flux, f"{f}_err": err}
        tokens = self.tokenize_records([record], what=what)
        stats = {k: v[0] for k, v in tokens.stats.items()}
        return Tokens(tokens.values[0], tokens.positions[0], None, stats)

    def tokenize_records(self, records: list[dict], what: str | None = None) -> Tokens:
        """Tokenise the light curves of a batch of records -> padded ``(B, N, D)`` tokens."""
        f = self.config.field
        curves = []
        for r in records:
            keys = [f"{f}_{k}" for k in KEYS]
            present = [r.get(k) is not None and np.size(r[k]) > 0 for k in keys]
            if not any(present):
                curves.append(None)
                continue
            label = what or f"light curve of object {r.get('id')!r}"
            if not all(present):
                missing = [k for k, p in zip(keys, present, strict=True) if not p]
                raise TokenizationError(f"{label}: record lacks {missing}")
            curves.append(self._clean(dict(zip(KEYS, (r[k] for k in keys), strict=True)), label))
        lengths = np.array([0 if c is None else len(c[0]) for c in curves], dtype=np.int64)
        b, n = len(records), max(1, int(lengths.max()))
        time, flux, err = np.zeros((b, n)), np.zeros((b, n)), np.zeros((b, n))
        band = np.zeros((b, n), dtype=np.int64)
        t0 = np.zeros((b, 1))
        for i, c in enumerate(curves):
            if c is not None:
                k = lengths[i]
                time[i, :k], band[i, :k], flux[i, :k], err[i, :k] = c
                t0[i] = c[0][0]
        return self._tokens(time, band, flux, err, t0, lengths)

    def _tokens(self, time, band, flux, err, t0, lengths) -> Tokens:
        b, n = time.shape
        real = np.arange(n)[None, :] < lengths[:, None]
        # Objects without a light curve get one dummy point so that medians are defined.
        masked = np.where(real | (lengths == 0)[:, None], flux, np.nan)
        centre = np.nanmedian(masked, axis=1, keepdims=True)
        scale = 1.4826 * np.nanmedian(np.abs(masked - centre), axis=1, keepdims=True)
        scale = np.where(scale > 0, scale, 1.0)  # constant (or one-point) curves
        onehot = np.eye(len(self.bands))[band]
        values = np.concatenate([((flux - centre) / scale)[..., None], (err / scale)[..., None], onehot], -1)
        values = np.where(real[..., None], values, 0.0)
        rel = np.where(real, time - t0, 0.0)
        positions = np.where(real[..., None], time_features(rel, lengths), 0.0)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        stats = {
            "centre": f32(centre),
            "scale": f32(scale),
            "time": torch.from_numpy(np.where(real, time, np.nan)),
            "length": torch.from_numpy(lengths),
        }
        mask = None if real.all() else torch.from_numpy(real)
        return Tokens(f32(values), f32(positions), mask, stats)

    # ------------------------------------------------------------------ inverse
    def detokenize(self, tokens: Tokens | torch.Tensor, stats: dict | None = None) -> dict[str, torch.Tensor]:
        """``{time, band, flux, err}`` from tokens: ``(L,)`` each for one curve, ``(B, N)`` for a batch.

        The exact inverse of :meth:`tokenize` (after sorting/averaging) given its statistics;
        without them, normalised flux and error (and no time) are returned.
        """
        values, stats, single = as_batch(tokens, stats)
        flux, err = values[..., 0].double(), values[..., 1].double()
        if "scale" in stats:
            scale = stats["scale"].double()
            flux, err = flux * scale + stats["centre"].double(), err * scale
        out = {"band": values[..., 2:].argmax(-1), "flux": flux, "err": err}
        if "time" in stats:
            out["time"] = stats["time"]
        if single:
            k = int(stats["length"][0]) if "length" in stats else values.shape[1]
            out = {name: v[0, :k] for name, v in out.items()}
        return out
