"""The explorer in a real browser (headless chromium, WebGL on SwiftShader), offline.

Each test opens the served page or the static file, waits for ``window.explorer.ready`` and
drives it with the mouse at the screen positions that ``window.explorer.screenPosition``
reports, so that nothing depends on timing or on where the layout happens to put points.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from astropt.tasks.embed import load_embeddings
from astropt.tasks.explore import ExploreConfig, export_static
from astropt.tasks.search import search

VIEWPORT = {"width": 1100, "height": 720}


class Page:
    """A page with its console errors and requests recorded."""

    def __init__(self, browser, url: str, offline: bool = False):
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        if offline:
            self.page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
                ("file:", "data:", "blob:")) else route.abort())
        self.page.goto(url)
        self.page.wait_for_function("window.explorer && (window.explorer.ready || window.explorer.error)")
        assert self.page.evaluate("window.explorer.error") is None
        self.page.wait_for_function("window.explorer.settled()")

    def js(self, expression: str, *args):
        return self.page.evaluate(expression, *args)

    def positions(self) -> np.ndarray:
        return np.array(self.js("[...Array(window.explorer.n).keys()].map(i => window.explorer.screenPosition(i))"))

    def isolated_point(self, min_gap: float = 14.0) -> int:
        """A point with no other point within ``min_gap`` pixels (so the mouse finds only it)."""
        xy = self.positions()
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
        inside = (xy[:, 0] > 30) & (xy[:, 0] < VIEWPORT["width"] - 400) & (xy[:, 1] > 60)
        candidates = np.nonzero((d.min(1) > min_gap) & inside)[0]
        assert len(candidates), "no isolated point to hover"
        return int(candidates[0])

    def frames(self, n: int = 2) -> None:
        """Wait ``n`` animation frames (the map's camera reads the mouse once a frame)."""
        self.js(f"new Promise(r => {{ let k = {n}; const f = () => --k ? requestAnimationFrame(f) : r(); "
                "requestAnimationFrame(f); })")

    def hover(self, row: int) -> None:
        """Move the mouse onto point ``row`` and wait until the map has seen it there.

        A press before the camera has seen the move would pan the map from the old position.
        """
        self.page.mouse.move(*self.js(f"window.explorer.screenPosition({row})"))
        self.page.locator("#tooltip").wait_for(state="visible")
        self.page.wait_for_function(f"document.querySelector('#tooltip .tooltip-id').textContent === "
                                    f"window.explorer.ids[{row}]")
        self.frames()

    def click(self, row: int) -> None:
        self.hover(row)
        self.page.mouse.down()
        self.page.mouse.up()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def served(browser, server_url):
    page = Page(browser, server_url + "/")
    yield page
    page.close()


def test_page_loads_draws_every_row_and_hover_shows_the_id(served, explore_embeddings):
    n = len(load_embeddings(explore_embeddings).ids)
    assert served.js("window.explorer.drawnCount()") == n == served.js("window.explorer.n")
    assert f"{n} of {n} objects drawn" in served.page.inner_text("#drawn-count")
    row = served.isolated_point()
    served.hover(row)
    assert served.page.locator("#tooltip .tooltip-id").inner_text() == served.js(f"window.explorer.ids[{row}]")
    served.page.wait_for_function("document.querySelector('#tooltip img').complete")
    assert served.js("document.querySelector('#tooltip img').naturalWidth") > 0  # thumbnail arrived
    assert served.errors == []


def test_click_shows_the_neighbours_of_astropt_search(served, explore_embeddings):
    row = served.isolated_point()
    object_id = served.js(f"window.explorer.ids[{row}]")
    served.click(row)
    served.page.wait_for_selector("#neighbours .hit")
    shown = served.js("[...document.querySelectorAll('#neighbours .hit')].map(e => e.dataset.id)")
    k = served.js("window.explorer.k")
    assert shown == [h["id"] for h in search(explore_embeddings, object_id, k=k)] and len(shown) == k
    assert served.js("window.explorer.selectedIds()") == [object_id]
    assert served.errors == []


def test_colouring_by_a_label_changes_the_legend(served):
    assert served.page.inner_text("#legend") == "one colour"
    served.page.select_option("#color-by", "redshift")
    served.page.wait_for_selector("#legend .colorbar")
    assert served.page.inner_text("#legend .legend-title") == "redshift"
    served.page.select_option("#color-by", "kind")
    served.page.wait_for_selector("#legend .legend-item")
    categories = served.js("[...document.querySelectorAll('#legend .legend-item')].map(e => e.dataset.category)")
    assert categories == ["bar", "normal"]
    assert served.errors == []


def test_filter_by_a_label_range_draws_only_those_rows(served, explore_embeddings):
    redshift = load_embeddings(explore_embeddings).labels["redshift"]
    served.page.select_option("#filter-label", "redshift")
    served.page.fill("#filter-min", "0.3")
    served.page.fill("#filter-max", "0.7")
    served.page.click("#filter-apply")
    expected = int(((redshift >= 0.3) & (redshift <= 0.7)).sum())
    served.page.wait_for_function(f"window.explorer.drawnCount() === {expected}")
    served.page.click("#filter-clear")
    served.page.wait_for_function(f"window.explorer.drawnCount() === {len(redshift)}")


def clean_box(xy: np.ndarray, margin: float = 6.0) -> tuple[float, float, float, float]:
    """A rectangle holding several points with none within ``margin`` pixels of its edges."""
    xs, ys = np.sort(xy[:, 0]), np.sort(xy[:, 1])
    for (i, j), (a, b) in itertools.product(itertools.combinations(range(len(xs) - 1), 2), repeat=2):
        x0, x1 = (xs[i] + xs[i + 1]) / 2, (xs[j] + xs[j + 1]) / 2
        y0, y1 = (ys[a] + ys[a + 1]) / 2, (ys[b] + ys[b + 1]) / 2
        near_edge = ((np.abs(xy[:, 0] - x0) < margin) | (np.abs(xy[:, 0] - x1) < margin)
                     | (np.abs(xy[:, 1] - y0) < margin) | (np.abs(xy[:, 1] - y1) < margin))
        inside = (xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1)
        if 3 <= inside.sum() <= len(xy) - 3 and not near_edge.any() and x1 - x0 > 30 and y1 - y0 > 30:
            return x0, y0, x1, y1
    raise AssertionError("no clean selection box in this layout")


def test_box_selection_exports_exactly_the_selected_ids(served):
    served.page.select_option("#select-mode", "rectangle")
    xy = served.positions()
    x0, y0, x1, y1 = clean_box(xy)
    inside = (xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1)
    ids = served.js("window.explorer.ids")
    expected = [ids[i] for i in np.nonzero(inside)[0]]
    mouse = served.page.mouse
    mouse.move(x0, y0)
    served.frames()
    served.page.keyboard.down("Shift")
    mouse.down()
    for t in np.linspace(0, 1, 12)[1:]:
        mouse.move(x0 + t * (x1 - x0), y0 + t * (y1 - y0))
        served.page.wait_for_timeout(20)  # the lasso samples the mouse at most every 15 ms
    mouse.up()
    served.page.keyboard.up("Shift")
    served.page.wait_for_function(f"window.explorer.selectedIds().length === {len(expected)}")
    with served.page.expect_download() as download:
        served.page.click("#export-csv")
    text = open(download.value.path()).read()
    assert text.splitlines() == ["id", *expected]
    assert served.errors == []


def test_static_file_opens_offline_from_file_url(browser, explore_embeddings, tmp_path):
    config = ExploreConfig(k=6, method="pca", static_limit=30, top=5)
    out = tmp_path / "explorer.html"
    export_static(explore_embeddings, out, config=config, color_by="kind")
    page = Page(browser, out.as_uri(), offline=True)
    try:
        assert page.js("window.explorer.drawnCount()") == 30
        assert "30 of 40 objects" in page.page.inner_text("#drawn-count")
        assert page.page.locator("#legend .legend-item").count() == 2  # opened coloured by kind
        row = page.isolated_point()
        object_id = page.js(f"window.explorer.ids[{row}]")
        page.click(row)
        page.page.wait_for_selector("#neighbours .hit")
        shown = page.js("[...document.querySelectorAll('#neighbours .hit')].map(e => e.dataset.id)")
        assert shown == [h["id"] for h in search(explore_embeddings, object_id, k=6)]
        assert page.js("document.querySelector('#tooltip img').src").startswith("data:image/png")
        assert all(url.startswith(("file:", "data:", "blob:")) for url in page.requests)
        assert page.errors == []
    finally:
        page.close()
