"""The published AstroPT models on the Hugging Face hub, and the conventions each carries.

A reference checkpoint says how big the model is, not how its training images were made.
For the published repositories that is known (their hub pages and the reference's data
pipeline), so a model loaded from one of them gets those conventions recorded in its config
and ``extra.preprocessing``: ``astropt embed <hub id> <data>`` with no extra flags feeds it
what the reference fed it.

DESI models (``Smith42/astroPT`` v1, ``Smith42/astroPT_v2.0``): trained on the JPEG/PNG
stamps of the ``Smith42/galaxies`` dataset (``image`` / ``image_crop`` columns, g r z as
RGB), given to the model as ``np.array(image).swapaxes(0, 2)`` -> ``(C, W, H)``: our image
modality's ``transpose_hw``; 8-bit values as they are (the per-patch normalisation removes
any scale).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from astropt.config import ModelConfig


@dataclass(frozen=True)
class Published:
    """One published repository."""

    repo_id: str
    generation: str
    """Reference version family that wrote the checkpoints: ``v1`` or ``v2``."""
    paths: tuple[str, ...]
    """Where the models are inside the repository (subfolders or files)."""
    license: str
    dataset: str = ""
    """Hub dataset the models were trained on."""
    column: str = "image"
    """Its image column."""
    id_column: str = "id"
    """Its object-id column (row numbers are used when the data has none)."""
    bands: tuple[str, ...] = ()
    transpose_hw: bool = False
    """The reference gave the model ``np.array(image).swapaxes(0, 2)`` of HF images."""
    image_size: int = 0
    """Side of the training images (0: as the checkpoint's block size implies)."""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def preprocessing(self) -> dict[str, Any]:
        """What ``extra.preprocessing`` records: how raw images become model inputs."""
        return {
            "dataset": self.dataset,
            "column": self.column,
            "bands": list(self.bands),
            "layout": "hwc",
            "id_column": self.id_column,
            "orientation": "swapaxes (C, W, H)" if self.transpose_hw else "(C, H, W)",
            "image_size": self.image_size,
            "scale": "8-bit values as they are; per-patch normalisation",
            **self.extra,
        }


PUBLISHED: dict[str, Published] = {
    p.repo_id: p
    for p in (
        Published(
            repo_id="Smith42/astroPT",
            generation="v1",
            paths=(
                "models/fully_trained/0001M_params/ (one <step>_ckpt.pt per size)",
                "models/fully_trained/0309M_params/030000_ckpt.pt",
                "models/fully_trained/2100M_params/040000_ckpt.pt",
            ),
            license="mit",
            dataset="Smith42/galaxies",
            column="image",
            id_column="dr8_id",
            bands=("g", "r", "z"),
            transpose_hw=True,
            image_size=512,
            notes="The original AstroPT (DESI Legacy Survey) models, astropt 1.0.0; sizes 0001M, "
                  "0005M, 0012M, 0021M, 0089M, 0309M, 0830M (030000_ckpt.pt) and 2100M "
                  "(040000_ckpt.pt). Its embeddings/300M_spiralized/*.npy were made by the v1 "
                  "sampler: ToTensor (C, H, W) / 255, no transpose, float16, first 64 tokens.",
        ),
        Published(
            repo_id="Smith42/astroPT_v2.0",
            generation="v2",
            paths=("astropt/015M", "astropt/095M", "astropt/850M"),
            license="cc-by-sa-4.0",
            dataset="Smith42/galaxies",
            column="image_crop",
            id_column="dr8_id",
            bands=("g", "r", "z"),
            transpose_hw=True,
            image_size=256,
            notes="AstroPT v2.0 (DESI Legacy Survey), astropt 2.0.5; embeddings of these "
                  "models are published as the Smith42/galaxies_embeddings dataset.",
        ),
        *(
            Published(
                repo_id=f"msiudek/astroPT_euclid_{name}_model",
                generation="v1",
                paths=("<step>_ckpt.pt at the root (e.g. 002500_ckpt.pt; file names unconfirmed)",),
                license="unknown",
                dataset="msiudek/astroPT_euclid_dataset",
                column="image",
                transpose_hw=False,
                notes=f"AstroPT-Euclid ({bands}), astropt 1.0.2: Euclid Q1 FITS stamps read as "
                      "(C, H, W) float32 (no transpose); the reference's Euclid sampler mean-pools "
                      "the first 64 tokens. Stamp size and the packing of NISP bands and SED tokens "
                      "are unconfirmed (arXiv:2503.15312 speaks of token chaining).",
            )
            for name, bands in (("VIS", "VIS"), ("VIS_NISP", "VIS + NISP Y, J, H"),
                                ("VIS_NISP_SED", "VIS + NISP + SED"))
        ),
    )
}


def conventions_for(ref: Any, config: ModelConfig, extra: dict[str, Any]) -> tuple[ModelConfig, dict[str, Any]]:
    """``config``/``extra`` of a model loaded from hub reference ``ref``, with the
    conventions of its published repository applied (unchanged for other repositories).

    Only checkpoints the reference wrote are changed (a folder of ours already records its
    conventions in its config).
    """
    known = PUBLISHED.get(ref.repo_id)
    if known is None or "reference" not in extra:
        return config, extra
    modalities = []
    for m in config.modalities:
        if m.kind == "image":
            changes: dict[str, Any] = {"transpose_hw": known.transpose_hw}
            side = known.image_size
            if side and side % m.patch_size == 0 and (side // m.patch_size) ** 2 <= config.block_size:
                changes["image_size"] = side
            if known.bands and len(known.bands) == m.n_channels:
                changes["bands"] = list(known.bands)
            m = dataclasses.replace(m, **changes)
        modalities.append(m)
    config = dataclasses.replace(config, modalities=modalities)
    extra = {**extra, "preprocessing": known.preprocessing(), "license": known.license,
             "published": {"repo_id": known.repo_id, "generation": known.generation}}
    return config, extra
