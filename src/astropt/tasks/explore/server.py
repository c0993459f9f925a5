"""A small local HTTP server over a :class:`~astropt.tasks.explore.catalog.Catalog`.

The standard library's ``ThreadingHTTPServer`` is enough for one person's browser: the page
makes one request for the points and then one per thumbnail or neighbour query, each served
from memory in milliseconds (see ``benchmarks/explorer.py``). Routes:

``/``                       the page
``/static/NAME``            the bundled script and stylesheet (nothing outside that folder)
``/api/points``             every point, its labels and the anomaly ranking (JSON, gzip)
``/api/thumb?id=ID``        the object's RGB thumbnail (PNG)
``/api/neighbours?id=ID&k=K`` its ``k`` nearest objects, as ``astropt search``
``/api/anomalies?top=N``    the most anomalous objects

Errors are JSON ``{"error": message, "status": code}``: 400 for bad parameters, 403 for a
path outside the served files, 404 for an unknown id or route.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import logging
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from astropt.tasks.explore.catalog import Catalog, UnknownObjectError
from astropt.tasks.explore.page import STATIC_DIR, render_page

log = logging.getLogger(__name__)
MAX_K = 1000


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and a message for the person."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def static_file(name: str, root: Path = STATIC_DIR) -> Path:
    """The file ``name`` inside ``root``; :class:`RequestError` for anything outside it."""
    if "\x00" in name or any(part in ("..", "") for part in name.split("/")) or "\\" in name:
        raise RequestError(HTTPStatus.FORBIDDEN, f"path {name!r} is outside the served files")
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise RequestError(HTTPStatus.FORBIDDEN, f"path {name!r} is outside the served files")
    if not target.is_file():
        raise RequestError(HTTPStatus.NOT_FOUND, f"no file {name!r} among the served files")
    return target


def _param(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name)
    if not values or not values[0]:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"missing query parameter {name!r}")
    return values[0]


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    if name not in query:
        return default
    text = query[name][0]
    if not text.isdigit() or not 1 <= int(text) <= MAX_K:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer from 1 to {MAX_K}, got {text!r}")
    return int(text)


class ExplorerHandler(BaseHTTPRequestHandler):
    """Answers the routes of the module docstring from ``self.server.catalog``."""

    server_version = "astropt-explore"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        try:
            self._route()
        except RequestError as exc:
            self._json({"error": str(exc), "status": int(exc.status)}, exc.status)
        except UnknownObjectError as exc:
            self._json({"error": str(exc), "status": 404}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802
        self._json({"error": "the explorer only answers GET requests", "status": 405},
                   HTTPStatus.METHOD_NOT_ALLOWED)

    def _route(self) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        catalog: Catalog = self.server.catalog  # type: ignore[attr-defined]  (ExplorerServer)
        if path in ("/", "/index.html"):
            self._send(render_page(title=catalog.path.name).encode(), "text/html; charset=utf-8")
        elif path.startswith("/static/"):
            target = static_file(path[len("/static/"):])
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._send(target.read_bytes(), kind)
        elif path == "/api/points":
            self._points()
        elif path == "/api/thumb":
            self._send(catalog.thumbnail(_param(query, "id")), "image/png", cache=True)
        elif path == "/api/neighbours":
            object_id, k = _param(query, "id"), _int_param(query, "k", catalog.config.k)
            self._json({"query": object_id, "k": k, "hits": catalog.neighbours(object_id, k)})
        elif path == "/api/anomalies":
            self._json({"top": catalog.top_anomalies(_int_param(query, "top", catalog.config.top))})
        else:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no route {path!r}")

    def _points(self) -> None:
        plain, packed = self.server.points()  # type: ignore[attr-defined]
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            self._send(packed, "application/json", encoding="gzip")
        else:
            self._send(plain, "application/json")

    def _json(self, body: dict[str, Any], status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(body).encode(), "application/json", status)

    def _send(self, blob: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK, cache: bool = False,
              encoding: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(blob)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        self.wfile.write(blob)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server that holds the catalog and its encoded points."""

    daemon_threads = True

    def __init__(self, catalog: Catalog, host: str, port: int):
        super().__init__((host, port), ExplorerHandler)
        self.catalog = catalog
        self._points: tuple[bytes, bytes] | None = None
        self._lock = threading.Lock()

    def points(self) -> tuple[bytes, bytes]:
        """The points payload as JSON bytes, plain and gzipped (encoded once, on first use)."""
        with self._lock:
            if self._points is None:
                blob = json.dumps(self.catalog.payload(), separators=(",", ":")).encode()
                self._points = (blob, gzip.compress(blob, compresslevel=5))
            return self._points


def make_server(catalog: Catalog, host: str = "127.0.0.1", port: int = 0) -> ExplorerServer:
    """A server for ``catalog`` bound to ``host:port`` (port 0: any free one); not yet serving."""
    if not is_loopback(host):
        log.warning("binding the explorer to %s: anyone who can reach this machine can see the "
                    "embeddings, labels and images; there is no authentication", host)
    try:
        return ExplorerServer(catalog, host, port)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another "
                         "--port (0: any free one) or --host") from exc


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{'[' + host + ']' if ':' in str(host) else host}:{port}/"


def serve(catalog: Catalog, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve ``catalog`` until interrupted (Ctrl-C)."""
    server = make_server(catalog, host, port)
    log.info("explorer of %s (%d objects) at %s  (Ctrl-C to stop)", catalog.path.name, len(catalog), url_of(server))
    try:
        server.serve_forever()
    finally:
        server.server_close()
