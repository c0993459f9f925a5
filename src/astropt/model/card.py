"""Model cards (``README.md`` with YAML metadata) and pushing a pretrained folder to the hub."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from astropt.atomic import atomic_write_text
from astropt.config import to_dict
from astropt.errors import PretrainedError

log = logging.getLogger(__name__)

CARD_NAME = "README.md"


def model_card(
    model: Any,
    extra: dict[str, Any],
    license: str | None = None,
    datasets: list[str] | None = None,
    tags: list[str] | None = None,
    description: str = "",
    probe: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> str:
    """The text of a model card: YAML metadata (library, license, datasets, tags) + sections
    for the model, the tokenisation and preprocessing, the training data and probe results.

    Args:
        probe: ``probe.json`` of ``astropt probe`` (its ``targets`` table is shown), or
            ``extra["probe"]`` when absent.
    """
    from huggingface_hub import ModelCard, ModelCardData

    pre = extra.get("preprocessing", {})
    datasets = datasets or ([pre["dataset"]] if pre.get("dataset") else None)
    data = ModelCardData(
        library_name="astropt",
        license=license or extra.get("license") or "other",
        datasets=datasets,
        tags=sorted({"astronomy", "astropt", "foundation-model", *(tags or [])}),
        pipeline_tag="feature-extraction",
    )
    config = model.config
    rows = [
        ("parameters", f"{model.num_params():,}"),
        ("blocks x heads x width", f"{config.n_layer} x {config.n_head} x {config.n_embd}"),
        ("block size", str(config.block_size)),
        ("tokeniser", config.tokeniser),
        ("default embedding", (f"blocks {config.embed_layers} outputs, each {config.embed_pool} pooled, "
                               "concatenated") if config.embed_layers
         else f"block {config.default_embed_layer} output, {config.embed_pool} pooled"),
    ]
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {extra.get('name', 'AstroPT model')}", "",
        description or "An AstroPT observation model: a GPT-style transformer over continuous-valued "
        "tokens of astronomical observations.", "",
        "## Use", "", "```python", "from astropt import AstroPT", "",
        f'model = AstroPT.from_pretrained("{repo_id or "ORG/NAME"}")  # this repository', "```", "",
        "## Model", "", "| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), "",
        "## Tokenisation (travels with the weights)", "",
    ]
    for m in config.modalities:
        keys = ("kind", "image_size", "n_channels", "bands", "patch_size", "patch_order", "normalize",
                "transpose_hw", "stretch", "flux_features", "flux_scale", "max_tokens")
        desc = ", ".join(f"{k}={getattr(m, k)}" for k in keys if getattr(m, k, None) not in (None, [], ""))
        lines.append(f"- `{m.name}`: {desc}")
    if pre:
        lines += ["", "## Preprocessing", "", "```json", json.dumps(pre, indent=2), "```"]
    if extra.get("training"):
        lines += ["", "## Training data", "", "```json", json.dumps(extra["training"], indent=2), "```"]
    probe = probe or extra.get("probe")
    if probe and probe.get("targets"):
        lines += ["", "## Linear probes of the embeddings", "", "| label | metric | value |", "| --- | --- | --- |"]
        for name, metrics in probe["targets"].items():
            for key in ("r2", "rmse", "nmad", "accuracy"):
                if key in metrics:
                    lines.append(f"| {name} | {key} | {metrics[key]:.4f} |")
    if extra.get("reference"):
        ref = extra["reference"]
        lines += ["", "## Provenance", "", f"Converted from a reference AstroPT checkpoint "
                  f"(generation {ref.get('generation')}, step {ref.get('iter_num')})."]
    lines += ["", "## Configuration", "", "```json", json.dumps(to_dict(config), indent=2), "```", ""]
    return str(ModelCard("\n".join(lines)))


def write_model_card(directory: str | Path, model: Any, extra: dict[str, Any], **card: Any) -> Path:
    """Write ``README.md`` (the model card) into a pretrained folder, atomically."""
    path = Path(directory) / CARD_NAME
    atomic_write_text(path, model_card(model, extra, **card))
    return path


def push_folder(directory: str | Path, repo_id: str, private: bool | None = None, revision: str | None = None) -> str:
    """Upload a pretrained folder (weights, config, card) to hub repository ``repo_id``.

    Returns the commit URL. Needs a login (``hf auth login`` or ``HF_TOKEN``).
    """
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(directory), revision=revision,
                                 commit_message="Upload AstroPT model")
    except hf.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise PretrainedError(f"{repo_id}: not allowed to write (HTTP {status}); log in with "
                                  "`hf auth login` or set HF_TOKEN with write access") from None
        raise PretrainedError(f"{repo_id}: upload failed ({exc})") from None
    except (hf.LocalTokenNotFoundError, hf.OfflineModeIsEnabled, OSError) as exc:
        raise PretrainedError(f"{repo_id}: upload failed ({exc}); log in and check the network") from None
    log.info("pushed %s to %s", directory, repo_id)
    return str(getattr(info, "commit_url", info))
