"""Fixtures of the explorer tests: tiny embeddings with shards, a running server, a browser."""

from __future__ import annotations

import shutil
import threading

import pytest

from astropt.tasks.embed import embed
from astropt.tasks.explore import Catalog, ExploreConfig, make_server

# Debian's chromium, driven by Playwright (whose own browser download is not used).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # WebGL without a GPU: ANGLE on SwiftShader, without the deprecation warning
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def explore_embeddings(model_dir, shard_dir, tmp_path_factory):
    return embed(model_dir, shard_dir, tmp_path_factory.mktemp("explore") / "e.parquet", progress=False)


@pytest.fixture(scope="session")
def catalog(explore_embeddings):
    return Catalog(explore_embeddings, config=ExploreConfig(k=6, method="pca"))


@pytest.fixture(scope="session")
def server_url(catalog):
    server = make_server(catalog, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium); the browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
