"""``astropt explore``: look at a survey through the model's eyes, in the browser.

- :mod:`.layout`: the 2-D layout (UMAP when installed, else PCA) and the kNN anomaly score,
  computed once and cached beside the embeddings;
- :mod:`.catalog`: everything the page needs from the embeddings and the prepared shards
  (points, labels, thumbnails, neighbours by the same index as ``astropt search``);
- :mod:`.server`: a small local HTTP server (standard library) over a catalog;
- :mod:`.page`: the HTML page around the bundled WebGL scatter (``static/explorer.js``,
  built from ``js/explorer`` with ``make explorer-js``) and the self-contained ``--static``
  export.
"""

from astropt.tasks.explore.catalog import Catalog, UnknownObjectError
from astropt.tasks.explore.config import ExploreConfig
from astropt.tasks.explore.page import export_static, render_page
from astropt.tasks.explore.server import make_server, serve

__all__ = ["Catalog", "ExploreConfig", "UnknownObjectError", "export_static", "make_server",
           "render_page", "serve"]
