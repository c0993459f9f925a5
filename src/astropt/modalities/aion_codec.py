"""The ``polymathic-aion`` codecs as tokenisers of a ``discrete`` modality (``codec: aion``).

AION's codecs turn an image or a spectrum into a sequence of codebook indices
(``codec.encode(aion_modality) -> (B, n_tokens)``). :class:`AIONCodec` wraps one codec
behind the contract the discrete modality needs: records in, one 1-d int64 array of codes
per record out, with the codebook size checked against ``vocab_size``.

``codec_name`` is the AION modality class (``LegacySurveyImage``, ``HSCImage``,
``DESISpectrum``, ``SDSSSpectrum``; aliases ``image`` and ``spectrum``). Images are read from
``record[field]`` ``(C, H, W)`` in the flux units the codec was trained on (AION rescales
per survey itself) with the AION band names in ``bands`` (e.g. ``DES-G``);
spectra from ``record[field]`` and ``record[field + "_wavelength"]`` (``_ivar`` and
``_mask`` when present). The codec weights come from the hub (``polymathic-ai/aion-base``)
on first use and from the Hugging Face cache afterwards; without the package or the
weights the errors say what to install or fetch.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np
import torch

from astropt.config import ModalityConfig
from astropt.errors import CodecUnavailableError, CodecWeightsError, ConfigError, TokenizationError

log = logging.getLogger(__name__)

HUB_REPO = "polymathic-ai/aion-base"
ALIASES = {"image": "LegacySurveyImage", "spectrum": "DESISpectrum"}
IMAGE_KINDS = ("LegacySurveyImage", "HSCImage")
SPECTRUM_KINDS = ("DESISpectrum", "SDSSSpectrum")


def modality_name(config: ModalityConfig) -> str:
    """The AION modality class that ``config.codec_name`` names (aliases resolved)."""
    name = ALIASES.get(config.codec_name, config.codec_name)
    if name not in IMAGE_KINDS + SPECTRUM_KINDS:
        raise ConfigError(
            f"modality {config.name!r}: codec_name {config.codec_name!r} is not an AION image or "
            f"spectrum codec; use one of {sorted(ALIASES) + list(IMAGE_KINDS + SPECTRUM_KINDS)}"
        )
    return name


def require_aion(config: ModalityConfig) -> None:
    if importlib.util.find_spec("aion") is None:
        raise CodecUnavailableError(
            f"modality {config.name!r} uses the AION codec {config.codec_name!r}, which needs the "
            "'aion' extra: pip install 'astropt[aion]' (codec weights come from the hub "
            f"{HUB_REPO} on first use); or store pre-tokenised integer codes with codec: none"
        )


def load_codec(config: ModalityConfig) -> Any:
    """The pretrained AION codec of ``config`` (from the Hugging Face cache or the hub)."""
    require_aion(config)
    from aion import modalities
    from aion.codecs.config import HF_REPO_ID, MODALITY_CODEC_MAPPING

    modality = getattr(modalities, modality_name(config))
    codec_class = MODALITY_CODEC_MAPPING[modality]
    try:
        return codec_class.from_pretrained(HF_REPO_ID, modality=modality).eval()
    except (OSError, ValueError) as exc:  # huggingface_hub's offline/missing errors are OSErrors
        raise CodecWeightsError(
            f"modality {config.name!r}: the AION {modality.__name__} codec weights are not in the "
            f"Hugging Face cache and could not be downloaded from {HF_REPO_ID} "
            f"(codecs/{modality.name}): {type(exc).__name__}: {exc}. Run once with network access "
            "(after `huggingface-cli login` if the repository is gated), or point HF_HOME at a "
            "cache that holds them; or store pre-tokenised codes with codec: none"
        ) from None


class AIONCodec:
    """Records -> codebook indices through one AION codec (see module docstring).

    Args:
        config: the ``discrete`` modality with ``codec: aion``.
        codec: the codec object (default: :func:`load_codec`); anything with AION's codec
            interface: ``modality`` (its input type), ``encode(modality) -> (B, n)`` and
            ``quantizer.codebook_size``.
    """

    def __init__(self, config: ModalityConfig, codec: Any = None):
        self.config = config
        self.kind = modality_name(config)
        if self.kind in IMAGE_KINDS:
            self._check_bands()
        self.codec = codec if codec is not None else load_codec(config)
        size = int(self.codec.quantizer.codebook_size)
        if size != config.vocab_size:
            raise TokenizationError(
                f"modality {config.name!r}: the AION {self.kind} codec has {size} codes but "
                f"vocab_size is {config.vocab_size}; set vocab_size: {size}"
            )

    def _check_bands(self) -> None:
        bands = self.config.bands
        if importlib.util.find_spec("aion") is not None:
            from aion.codecs.preprocessing.band_to_index import BAND_TO_INDEX

            unknown = [b for b in bands if b not in BAND_TO_INDEX]
        else:
            unknown = []
        if not bands or unknown:
            raise TokenizationError(
                f"modality {self.config.name!r}: the AION image codec needs the AION band name of "
                f"each channel in bands (e.g. [DES-G, DES-R, DES-I, DES-Z]); got {bands}"
            )

    def _modality(self, **arrays: torch.Tensor) -> Any:
        """The codec's own input type (``codec.modality``: AION's ``Image``/``Spectrum``)."""
        cls = self.codec.modality
        if self.kind in IMAGE_KINDS:
            return cls(flux=arrays["flux"], bands=list(self.config.bands))
        return cls(**arrays)

    @torch.no_grad()
    def encode_records(self, records: list[dict[str, Any]]) -> list[np.ndarray]:
        """One ``(n,)`` int64 code array per record."""
        if self.kind in IMAGE_KINDS:
            return self._encode_images(records)
        return [self._encode_spectrum(r) for r in records]  # grids differ: one at a time

    def _encode_images(self, records: list[dict[str, Any]]) -> list[np.ndarray]:
        field = self.config.field
        images = [np.asarray(r[field], dtype=np.float32) for r in records]
        shapes = {x.shape for x in images}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or images[0].shape[0] != len(self.config.bands):
            raise TokenizationError(
                f"objects {[r.get('id') for r in records[:3]]}: the AION image codec of "
                f"{self.config.name!r} needs (C, H, W) images with C = {len(self.config.bands)} bands "
                f"{self.config.bands}, all of one shape; got {sorted(shapes)}"
            )
        codes = self.codec.encode(self._modality(flux=torch.from_numpy(np.stack(images))))
        return list(codes.reshape(len(records), -1).to(torch.int64).cpu().numpy())

    def _encode_spectrum(self, record: dict[str, Any]) -> np.ndarray:
        field = self.config.field
        if f"{field}_wavelength" not in record:
            raise TokenizationError(
                f"object {record.get('id')!r}: the AION spectrum codec needs {field}_wavelength "
                f"beside {field}"
            )
        flux = torch.as_tensor(np.asarray(record[field], dtype=np.float32))[None]
        ivar = record.get(f"{field}_ivar")
        mask = record.get(f"{field}_mask")
        arrays = {
            "flux": flux,
            "wavelength": torch.as_tensor(np.asarray(record[f"{field}_wavelength"], dtype=np.float32))[None],
            "ivar": torch.ones_like(flux) if ivar is None else torch.as_tensor(np.asarray(ivar, np.float32))[None],
            "mask": torch.zeros_like(flux, dtype=torch.bool) if mask is None
            else torch.as_tensor(np.asarray(mask, dtype=bool))[None],
        }
        return self.codec.encode(self._modality(**arrays)).reshape(-1).to(torch.int64).cpu().numpy()
