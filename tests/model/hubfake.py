"""Local imitations of the Hugging Face hub for offline tests.

- :func:`make_cache`: a hub cache laid out as ``huggingface_hub`` lays it
  (``models--org--name/{refs,snapshots/<commit>/...}``), for ``HF_HUB_OFFLINE=1``.
- :class:`FakeHub`: a file server on 127.0.0.1 that answers ``/{repo}/resolve/{rev}/{path}``
  the way the hub does (commit and ETag headers; ``X-Error-Code`` for unknown and gated
  repositories and missing files), used through ``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_cache(cache: Path, repo_id: str, files: dict[str, Path | bytes], commit: str = COMMIT,
               refs: tuple[str, ...] = ("main",), repo_type: str = "model") -> Path:
    """Put ``files`` (path in repo -> source file or bytes) into a hub cache at ``cache``
    (``repo_type``: ``model`` or ``dataset``)."""
    repo = cache / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for name, src in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            target.write_bytes(src)
        else:
            shutil.copyfile(src, target)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


class FakeHub:
    """A threaded HTTP server holding ``repos`` (repo id -> {path: bytes}); ``gated`` repos
    answer 403 GatedRepo. Use as a context manager; ``url`` is the endpoint."""

    def __init__(self, repos: dict[str, dict[str, bytes]], gated: tuple[str, ...] = ()):
        self.repos, self.gated = repos, set(gated)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def do_POST(self):
                self._error(401, "RepoNotFound", "Invalid credentials in Authorization header")

            def _error(self, status, code, message):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, body):
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "EntryNotFound", "not found")
                repo_id, rev, path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if repo_id in hub.gated:
                    return self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted")
                if repo_id not in hub.repos:
                    return self._error(401, "RepoNotFound", "Repository not found")
                if rev not in ("main", COMMIT):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                data = hub.repos[repo_id].get(path)
                if data is None:
                    return self._error(404, "EntryNotFound", f"{path} does not exist")
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
