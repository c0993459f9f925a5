"""Images: ``(C, H, W)`` arrays -> sequences of patch tokens, and the exact inverse.

Conventions (those of the published AstroPT weights; see ARCHITECTURE.md):

- the patch grid is cut row by row; each patch is flattened as ``(p_row, p_col, channel)``
  with the channel fastest;
- each patch vector is standardised on its own, ``(x - mean) / (std + 1e-8)`` with the
  unbiased standard deviation;
- in ``spiral`` order the sequence starts at the centre patch and winds outwards,
  ending at the top-left patch.

All work is vectorised over a batch; the patch permutation is computed once per grid.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from astropt.config import ModalityConfig
from astropt.errors import TokenizationError
from astropt.modalities.base import Tokens, as_batch, register

NORM_EPS = 1e-8


@functools.lru_cache(maxsize=64)
def spiral_order(n_rows: int, n_cols: int) -> tuple[int, ...]:
    """Raster indices of the patch grid in sequence order, centre first.

    The grid is walked as a clockwise inward spiral from the top-left patch (top row
    left to right, right column down, bottom row right to left, left column up, then the
    next ring); the sequence is that walk reversed.
    """
    top, bottom, left, right = 0, n_rows - 1, 0, n_cols - 1
    walk: list[int] = []
    while top <= bottom and left <= right:
        walk.extend(top * n_cols + c for c in range(left, right + 1))
        walk.extend(r * n_cols + right for r in range(top + 1, bottom + 1))
        if top < bottom:
            walk.extend(bottom * n_cols + c for c in range(right - 1, left - 1, -1))
        if left < right:
            walk.extend(r * n_cols + left for r in range(bottom - 1, top, -1))
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return tuple(reversed(walk))


@functools.lru_cache(maxsize=64)
def raster_order(n_rows: int, n_cols: int) -> tuple[int, ...]:
    return tuple(range(n_rows * n_cols))


@functools.lru_cache(maxsize=64)
def _permutations(order: str, n_rows: int, n_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = (spiral_order if order == "spiral" else raster_order)(n_rows, n_cols)
    forward = torch.tensor(perm, dtype=torch.long)
    inverse = torch.empty_like(forward)
    inverse[forward] = torch.arange(len(perm))
    return forward, inverse


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, p*p*C)`` in raster order, channel fastest."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    # (B, C, nh, p, nw, p) -> (B, nh, nw, p_row, p_col, C)
    x = x.permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, p*p*C)`` -> ``(B, C, H, W)``."""
    b = patches.shape[0]
    p = patch_size
    x = patches.reshape(b, h // p, w // p, p, p, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, h, w)


def _stretch(x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    if kind == "asinh":
        return torch.asinh(x / scale)
    if kind == "log":
        return torch.log1p(torch.clamp(x, min=0) / scale)
    return x


def _unstretch(x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    if kind == "asinh":
        return torch.sinh(x) * scale
    if kind == "log":
        return torch.expm1(x) * scale
    return x


@register("image")
class ImageModality:
    """Tokeniser of a multi-band image modality (see module docstring)."""

    def __init__(self, config: ModalityConfig):
        if config.kind != "image":
            raise ValueError(f"ImageModality needs kind 'image', got {config.kind!r}")
        self.config = config
        self.patch_size = config.patch_size
        self.n_channels = config.n_channels

    @staticmethod
    def token_sizes(config: ModalityConfig) -> tuple[int, int]:
        """A patch's pixels ``(p, p, C)`` flattened, + per-band asinh mean and log std with
        ``flux_features``; positions are indices into a learned table."""
        flux = 2 * config.n_channels if config.flux_features else 0
        return config.patch_size**2 * config.n_channels + flux, 1

    # ------------------------------------------------------------------ checks
    def _check(self, images: torch.Tensor, what: str, ids: list[str] | None = None) -> None:
        if images.ndim != 4:
            raise TokenizationError(
                f"{what}: expected an image of shape (C, H, W) or a batch (B, C, H, W), "
                f"got shape {tuple(images.shape)}"
            )
        _, c, h, w = images.shape
        if c != self.n_channels:
            raise TokenizationError(
                f"{what}: image has {c} channels but modality {self.config.name!r} "
                f"expects {self.n_channels} ({self.config.bands or 'bands unnamed'})"
            )
        p = self.patch_size
        if h % p or w % p:
            raise TokenizationError(
                f"{what}: image size {h}x{w} is not a multiple of the patch size {p}"
            )
        if not torch.isfinite(images).all():
            bad = (~torch.isfinite(images)).flatten(1).any(1).nonzero().flatten().tolist()
            if ids is not None:  # name the objects, not the batch they came in
                raise TokenizationError(f"the images of objects {[ids[i] for i in bad][:16]} contain NaN or Inf values")
            raise TokenizationError(f"{what}: image {bad[:16] if images.shape[0] > 1 else ''} contains NaN or Inf values")

    # ------------------------------------------------------------------ forward
    def tokenize(self, images: torch.Tensor | np.ndarray, what: str = "image", ids: list[str] | None = None) -> Tokens:
        """Tokenise ``(C, H, W)`` or a batch ``(B, C, H, W)`` (of objects ``ids``, named in errors).

        Returns tokens of shape ``(N, D)`` (or ``(B, N, D)``) with integer positions
        ``0..N-1`` and the per-patch statistics in ``stats``.
        """
        x = torch.as_tensor(images)
        single = x.ndim == 3
        if single:
            x = x.unsqueeze(0)
        if not x.is_floating_point():
            x = x.float()
        self._check(x, what, ids)
        cfg = self.config
        if cfg.transpose_hw:
            x = x.transpose(-1, -2)
        x = _stretch(x, cfg.stretch, cfg.stretch_scale)
        b, c, h, w = x.shape
        n_rows, n_cols = h // self.patch_size, w // self.patch_size
        forward, _ = _permutations(cfg.patch_order, n_rows, n_cols)
        patches = patchify(x, self.patch_size)[:, forward.to(x.device)]  # (B, N, p*p*C)

        stats: dict[str, torch.Tensor] = {"shape": torch.tensor([h, w])}
        values = patches
        if cfg.normalize == "patch":
            std, mean = torch.std_mean(patches, dim=-1, keepdim=True)
            values = (patches - mean) / (std + NORM_EPS)
            stats.update(mean=mean, std=std)
        if cfg.flux_features:
            values = torch.cat([values, self._flux_features(patches, c, self._flux_unit())], dim=-1)
        positions = torch.arange(values.shape[1], device=x.device).expand(b, -1)
        if single:
            values, positions = values[0], positions[0]
            stats = {k: (v[0] if k != "shape" else v) for k, v in stats.items()}
        return Tokens(values=values.contiguous(), positions=positions, stats=stats)

    def tokenize_records(self, records: list[dict]) -> Tokens:
        """Tokenise the ``config.field`` arrays of a batch of observation records."""
        key = self.config.field
        try:
            stack = np.stack([np.asarray(r[key], dtype=np.float32) for r in records])
        except KeyError:
            ids = [r.get("id") for r in records if key not in r][:3]
            raise TokenizationError(f"objects {ids} have no {key!r} array") from None
        except ValueError as exc:
            raise TokenizationError(f"images of objects {[r.get('id') for r in records][:3]}...: {exc}") from exc
        ids = [str(r.get("id")) for r in records]
        return self.tokenize(torch.from_numpy(stack), what=f"images of {ids[:3]}{'...' if len(ids) > 3 else ''}", ids=ids)

    def _flux_unit(self) -> float | torch.Tensor:
        """``flux_scale`` as a number or a per-band ``(C,)`` tensor; ``auto`` must be resolved."""
        scale = self.config.flux_scale
        if scale == "auto":
            raise TokenizationError(
                f"modality {self.config.name!r}: flux_scale 'auto' is resolved from a prepared folder when "
                "training starts (astropt.data.noise.resolve_flux_scales); a model's saved config holds numbers"
            )
        return torch.tensor(scale, dtype=torch.float32) if isinstance(scale, list) else float(scale)

    @staticmethod
    def _flux_features(patches: torch.Tensor, channels: int, scale: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Per-band location and scale of each raw patch: ``asinh(mean)`` and ``log(std)``.

        Per-patch standardisation removes absolute brightness and colour; these 2C numbers
        carry them back into the token (the science-quality lever). With a survey-level
        ``scale`` (e.g. the sky noise) they are measured in that unit, so a patch of pure
        noise gives ~(0, 0.7) and the brightest cores ~5: the same order as the pixels.
        """
        per_band = patches.unflatten(-1, (-1, channels))  # (B, N, p*p, C)
        std, mean = torch.std_mean(per_band, dim=-2)
        if isinstance(scale, torch.Tensor):  # one unit per band
            scale = scale.to(mean.device)
        elif scale <= 0:
            return torch.cat([torch.asinh(mean), torch.log(std + 1e-3)], dim=-1)
        return torch.cat([torch.asinh(mean / scale), torch.log1p(std / scale)], dim=-1)

    # ------------------------------------------------------------------ inverse
    def detokenize(self, tokens: Tokens | torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Rebuild ``(C, H, W)`` (or ``(B, C, H, W)``) images from tokens.

        With the statistics of :meth:`tokenize` this is the exact inverse (to float
        round-off). Without them (e.g. model predictions), the standardised image is
        returned.
        """
        values, stats, single = as_batch(tokens, stats, unbatched_stats=("shape",))
        cfg = self.config
        c, p = self.n_channels, self.patch_size
        values = values[..., : p * p * c]
        if "mean" in stats:
            values = values * (stats["std"] + NORM_EPS) + stats["mean"]
        n = values.shape[1]
        if "shape" in stats:
            h, w = (int(v) for v in stats["shape"])
        else:
            side = int(round(n**0.5)) * p
            h = w = side
        n_rows, n_cols = h // p, w // p
        _, inverse = _permutations(cfg.patch_order, n_rows, n_cols)
        images = unpatchify(values[:, inverse.to(values.device)], p, c, h, w)
        images = _unstretch(images, cfg.stretch, cfg.stretch_scale)
        if cfg.transpose_hw:
            images = images.transpose(-1, -2)
        return images[0] if single else images
