"""The explorer's data and server: neighbours equal `astropt search`, the layout is cached,
traversal and unknown ids are refused with JSON 4xx errors, the static page is self-contained."""

from __future__ import annotations

import http.client
import json
import re
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import urlopen

import numpy as np
import pytest

from astropt.tasks.embed import load_embeddings
from astropt.tasks.explore import Catalog, ExploreConfig, export_static
from astropt.tasks.explore.catalog import ANOMALY_LABEL
from astropt.tasks.search import search


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def raw_get(base: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` byte for byte (urllib would normalise ``..`` away)."""
    host = urlsplit(base)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    return response.status, response.read()


def test_neighbours_are_exactly_astropt_search(server_url, catalog, explore_embeddings):
    for object_id in ("obj0003", "obj0020"):
        status, body, kind = get(f"{server_url}/api/neighbours?id={object_id}&k=7")
        assert status == 200 and kind == "application/json"
        assert json.loads(body)["hits"] == search(explore_embeddings, object_id, k=7)


def test_points_carry_every_object_layout_and_labels(server_url, explore_embeddings):
    status, body, _ = get(f"{server_url}/api/points")
    payload = json.loads(body)
    emb = load_embeddings(explore_embeddings)
    assert status == 200 and payload["ids"] == emb.ids and payload["n"] == len(emb.ids)
    names = {label["name"]: label for label in payload["labels"]}
    assert {"redshift", "kind", ANOMALY_LABEL} <= set(names)
    assert names["kind"]["categories"] == ["bar", "normal"]
    assert names["redshift"]["min"] == pytest.approx(float(emb.labels["redshift"].min()))


def test_thumbnail_is_a_png_of_the_object(server_url, catalog):
    status, body, kind = get(f"{server_url}/api/thumb?id=obj0005")
    assert status == 200 and kind == "image/png" and body.startswith(b"\x89PNG")
    assert body != get(f"{server_url}/api/thumb?id=obj0006")[1]


@pytest.mark.parametrize("query", ["/api/thumb?id=nope", "/api/neighbours?id=nope", "/api/nothing"])
def test_unknown_ids_and_routes_are_json_404(server_url, query):
    status, body, kind = get(server_url + query)
    assert status == 404 and kind == "application/json"
    assert json.loads(body)["status"] == 404 and json.loads(body)["error"]


@pytest.mark.parametrize("query", ["/api/neighbours?id=obj0001&k=0", "/api/neighbours?id=obj0001&k=x",
                                   "/api/neighbours", "/api/thumb"])
def test_bad_parameters_are_json_400(server_url, query):
    status, body, _ = get(server_url + query)
    assert status == 400 and "error" in json.loads(body)


@pytest.mark.parametrize("path", ["/static/../catalog.py", "/static/%2e%2e/catalog.py",
                                  "/static/..%2f..%2f..%2fpyproject.toml", "/static//etc/passwd",
                                  "/static/%2fetc%2fpasswd", "/static/..\\catalog.py"])
def test_paths_outside_the_served_files_are_refused(server_url, path):
    status, body = raw_get(server_url, path)
    assert status in (403, 404)
    assert b"import" not in body and b"root:" not in body
    assert json.loads(body)["status"] == status


def test_page_and_bundle_are_served(server_url):
    status, body, kind = get(server_url + "/")
    assert status == 200 and kind.startswith("text/html") and b"static/explorer.js" in body
    status, body, kind = get(server_url + "/static/explorer.js")
    assert status == 200 and "javascript" in kind and len(body) > 10_000


def test_layout_is_cached_and_recomputed_when_the_embeddings_change(explore_embeddings, tmp_path):
    path = tmp_path / "e.parquet"
    path.write_bytes(explore_embeddings.read_bytes())
    first = Catalog(path, config=ExploreConfig(method="pca"))
    cache = path.with_name(path.name + ".explore.embedding.pca.npz")
    mtime = cache.stat().st_mtime_ns
    again = Catalog(path, config=ExploreConfig(method="pca"))
    assert cache.stat().st_mtime_ns == mtime and np.array_equal(first.layout.coords, again.layout.coords)
    assert np.abs(first.layout.coords).max() <= 1.0
    path.write_bytes(explore_embeddings.read_bytes())  # same content, new modification time
    Catalog(path, config=ExploreConfig(method="pca"))
    assert cache.stat().st_mtime_ns != mtime


def test_anomaly_panel_ranks_as_astropt_anomalies(catalog, explore_embeddings):
    from astropt.tasks.anomaly import anomalies

    expected = anomalies(explore_embeddings, top=10)["top"]
    got = catalog.top_anomalies(10)
    assert [a["id"] for a in got] == [a["id"] for a in expected]
    assert [a["score"] for a in got] == pytest.approx([a["score"] for a in expected], rel=1e-5)


def test_static_page_is_self_contained_and_subsampled(catalog, explore_embeddings, tmp_path):
    config = ExploreConfig(k=6, method="pca", static_limit=25, static_thumbnails=30, top=5)
    result = export_static(explore_embeddings, tmp_path / "x.html", config=config)
    page = (tmp_path / "x.html").read_text()
    assert result["n"] == 25 and result["n_total"] == 40
    data = json.loads(re.search(r'id="explorer-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["ids"]) == 25 and data["subsampled"] and data["limit"] == 25
    assert {a["id"] for a in data["anomaly"]["top"]} <= set(data["ids"])  # the top always kept
    assert set(data["static"]["thumbnails"]) == set(data["ids"])
    assert all(uri.startswith("data:image/png;base64,") for uri in data["static"]["thumbnails"].values())
    row = data["ids"].index("obj0007")
    k = data["static"]["neighbours"]["k"]
    assert data["static"]["neighbours"]["ids"][row * k:(row + 1) * k] == [
        h["id"] for h in search(explore_embeddings, "obj0007", k=6)]
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from a network


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="method"):
        ExploreConfig(method="tsne")
    with pytest.raises(ValueError, match="k must be at least 1"):
        ExploreConfig(k=0)


def test_cli_writes_a_static_page(explore_embeddings, tmp_path, capsys):
    from astropt.cli import main

    out = tmp_path / "page.html"
    assert main(["explore", str(explore_embeddings), "--static", str(out), "--limit", "12", "--method", "pca"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12 and out.stat().st_size > 100_000


def test_a_busy_port_is_a_message_and_other_hosts_are_warned_about(catalog, server_url, caplog):
    from astropt.tasks.explore import make_server
    from astropt.tasks.explore.server import is_loopback

    port = int(urlsplit(server_url).port)
    with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
        make_server(catalog, "127.0.0.1", port)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    server = make_server(catalog, "0.0.0.0", 0)
    server.server_close()
    assert "no authentication" in caplog.text
