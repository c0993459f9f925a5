"""Generation: complete an image from the first part of its token sequence (KV cache).

The image is tokenised with the model's own tokeniser; the first ``keep`` fraction of the
sequence is kept (in spiral order: the centre of the galaxy) and the rest is generated
autoregressively. Predicted tokens live in the per-patch standardised space, so to display
them the *original* patches' mean and standard deviation are used: the figure shows shape,
not predicted brightness, and says so. Cross-modal prediction (``to=...``) is delegated to
``astropt.tasks.crossmodal`` when that module is installed. With the LLM backbone,
:func:`answer_text` answers in text after objects' observations (``astropt generate --text``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astropt.atomic import atomic_write_text
from astropt.data.loader import Collator, rows_to_records
from astropt.errors import DataError, TokenizationError
from astropt.modalities import build_modality
from astropt.modalities.text import TextRenderer
from astropt.model import AstroPT
from astropt.tasks.common import images_for_ids, load_model, open_data, used_modalities

log = logging.getLogger(__name__)

CAPTION = ("completed tokens are standardised patches, shown with the original patches' mean/std; "
           "the figure shows predicted structure, not predicted brightness")


def complete_image(
    model: AstroPT,
    image: np.ndarray,
    keep: float = 0.5,
    temperature: float = 0.0,
    use_cache: bool = True,
    seed: int = 0,
    modality: str | None = None,
) -> dict[str, Any]:
    """Keep the first ``keep`` of an image's tokens and generate the rest.

    Returns:
        ``original``, ``kept`` (NaN where generated) and ``completed`` ``(C, H, W)`` images,
        ``n_keep``/``n_tokens``, and the generated tokens' MSE against the truth (``mse``)
        next to the MSE of predicting the patch mean (``mse_mean_patch``, i.e. zeros).
    """
    if not 0.0 < keep < 1.0:
        raise ValueError(f"keep must be in (0, 1), got {keep}")
    mcfg = _image_modality(model, modality)
    tokenizer = build_modality(mcfg)  # to put the completed tokens back into an image
    tokens = Collator([mcfg]).tokenize([{"id": "image to complete", mcfg.field: np.asarray(image)}])[mcfg.name]
    n = tokens.values.shape[1]  # tokens of a batch of one: (1, n, D)
    n_keep = min(n - 1, max(1, int(round(keep * n))))
    batch = {mcfg.name: tokens.values[:, :n_keep], f"{mcfg.name}_positions": tokens.positions[:, :n_keep]}
    generator = torch.Generator().manual_seed(seed)
    new = model.generate(batch, mcfg.name, n - n_keep, temperature=temperature, use_cache=use_cache,
                         generator=generator).float()
    completed = torch.cat([tokens.values[:, :n_keep], new], dim=1)
    kept = tokens.values.clone()
    kept[:, n_keep:] = float("nan")
    truth = tokens.values[:, n_keep:]
    return {
        "original": tokenizer.detokenize(tokens)[0].numpy(),
        "kept": tokenizer.detokenize(kept, tokens.stats)[0].numpy(),
        "completed": tokenizer.detokenize(completed, tokens.stats)[0].numpy(),
        "n_keep": n_keep,
        "n_tokens": n,
        "mse": float(torch.mean((new - truth) ** 2)),
        "mse_mean_patch": float(torch.mean(truth**2)),
    }


def _image_modality(model: AstroPT, name: str | None):
    if name is not None:
        return model.config.modality(name)
    images = [m for m in model.config.modalities if m.kind == "image"]
    if not images:
        raise DataError(f"the model has no image modality (it has {[m.name for m in model.config.modalities]})")
    return images[0]


def load_image(source: str | os.PathLike, object_id: str | None = None) -> tuple[np.ndarray, str]:
    """An image from a file, or object ``object_id`` (default: the first) of a data folder."""
    from astropt.tasks.search import read_image_file

    path = Path(source)
    if path.is_file():
        return read_image_file(path), path.stem
    data = open_data(path)
    object_id = object_id or data.ids[0]
    return images_for_ids(data, [object_id])[0], object_id


def generate(
    model: AstroPT | str | os.PathLike,
    source: str | os.PathLike,
    keep: float = 0.5,
    out: str | os.PathLike | None = None,
    object_id: str | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    source_modality: str | None = None,
    target_modality: str | None = None,
    n: int = 16,
) -> dict[str, Any]:
    """Complete an image (file, or ``object_id`` of a data folder); figure in ``out``.

    With ``target_modality`` it predicts that modality from ``source_modality`` over ``n``
    objects of the data folder ``source`` (cross-modal prediction).
    """
    if target_modality is not None:
        if importlib.util.find_spec("astropt.tasks.crossmodal") is None:
            raise ValueError("cross-modal prediction needs astropt.tasks.crossmodal, not installed")
        crossmodal = importlib.import_module("astropt.tasks.crossmodal")
        return crossmodal.predict_modality(model, source, source_modality, target_modality, out, n=n)
    model = load_model(model)
    image, name = load_image(source, object_id)
    result = complete_image(model, image, keep, temperature, seed=seed, modality=source_modality)
    summary = {k: result[k] for k in ("n_keep", "n_tokens", "mse", "mse_mean_patch")}
    summary["object"] = name
    if out is not None:
        from astropt import viz

        path = Path(out)
        if path.suffix.lower() != ".png":
            path = path / f"completion_{name}.png"
        viz.completion_figure(result["original"], result["kept"], result["completed"], path, CAPTION)
        summary["figure"] = str(path)
    return summary


def answer_text(
    model: AstroPT | str | os.PathLike,
    source: str | os.PathLike,
    prompt: str = "",
    n: int = 16,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    seed: int = 0,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """LLM backbone: the text the model writes after each of the first ``n`` objects of the
    data folder ``source`` (after ``prompt``), beside the object's own text (its caption /
    catalogue line by ``model.text``) when its labels give one. ``out``: a ``.json`` file,
    or a folder for ``answers.json``."""
    model = load_model(model)
    if model.llm is None:
        raise ValueError("text answers need a model with model.backbone: llm (this one is native)")
    data = open_data(source)
    rows = data.get_batch(np.arange(min(n, len(data))))
    records = rows_to_records(rows, data.label_names)
    batch, ids = Collator(used_modalities(model, data))(records)
    generator = torch.Generator().manual_seed(seed)
    answers = model.generate_text(batch, prompt, max_new_tokens, temperature, generator=generator)
    truth = _texts_of(model, records)
    objects = [{"id": i, "answer": a, "text": t} for i, a, t in zip(ids, answers, truth, strict=True)]
    summary: dict[str, Any] = {"prompt": prompt, "objects": objects}
    if out is not None:
        path = Path(out)
        path = path if path.suffix.lower() == ".json" else path / "answers.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(summary, indent=2))
        summary["file"] = str(path)
    return summary


def _texts_of(model: AstroPT, records: list[dict[str, Any]]) -> list[str | None]:
    """Each record's own text by the model's ``model.text`` (None where it cannot be made)."""
    if not model.config.text.enabled:
        return [None] * len(records)
    renderer = TextRenderer(model.config.text)
    texts: list[str | None] = []
    for record in records:
        try:
            texts.append(renderer.render(record))
        except TokenizationError:  # the data lacks the labels: no reference text to show
            texts.append(None)
    return texts
