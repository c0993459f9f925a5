"""2-D maps of embeddings: PCA by default, UMAP with the ``umap`` extra; coloured by a label."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from astropt.errors import DataError
from astropt.tasks.common import images_for_ids, open_data
from astropt.tasks.embeddings import default_column, embedding_files, label_columns, load_embeddings

log = logging.getLogger(__name__)


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``(n, d)`` -> ``(n, 2)`` with PCA (standardised features) or UMAP (float32 stays float32)."""
    x = StandardScaler().fit_transform(vectors)
    if method == "pca":
        return PCA(2, random_state=seed).fit_transform(x)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ImportError("UMAP maps need the umap extra: pip install 'astropt[umap]'") from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    raise ValueError(f"unknown map method {method!r}; choose pca or umap")


def embedding_map(
    embeddings: str | os.PathLike,
    out: str | os.PathLike,
    color_by: str | None = None,
    method: str = "pca",
    data: str | os.PathLike | None = None,
    n_thumbnails: int = 16,
    column: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Draw the embeddings' 2-D map coloured by ``color_by`` into the PNG ``out``.

    Thumbnails of ``n_thumbnails`` random objects are placed at their map positions when
    the data folder (default: the embedded one) is available.

    A map needs every vector at once (PCA and UMAP fit on all of them), so the vector
    column is read whole; only it, the ids and the colouring label are read, as float32.
    """
    files = embedding_files(embeddings)
    column = column or default_column(files.schema)
    labels = label_columns(files.schema)
    if color_by is not None and color_by not in labels:
        raise DataError(f"{embeddings}: no label {color_by!r} to colour by; labels: {sorted(labels)}")
    emb = load_embeddings(embeddings, columns=[column] + ([color_by] if color_by else []))
    colour = emb.labels[color_by] if color_by is not None else None
    coords = project_2d(emb.matrix(column), method, seed)
    thumbs, rows = None, None
    data = data or emb.meta.get("data")
    if n_thumbnails and data and Path(data).exists():
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(emb.ids), size=min(n_thumbnails, len(emb.ids)), replace=False)
        thumbs = images_for_ids(open_data(data), [emb.ids[i] for i in rows])
    from astropt import viz

    viz.embedding_map(coords, colour, out, label=color_by or "", thumbnails=thumbs, thumb_rows=rows,
                      title=f"{method.upper()} map" + (f" coloured by {color_by}" if color_by else ""))
    return {"figure": str(out), "method": method, "n": len(emb.ids)}
