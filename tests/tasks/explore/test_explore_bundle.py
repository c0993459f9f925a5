"""The committed page bundle was built from the committed sources (no node needed to check).

``js/explorer/build.mjs`` writes a hash of the JS sources, its own text and the lock file
into the bundle's first line; this recomputes it. After editing the sources, rebuild with
``make explorer-js``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
JS = ROOT / "js" / "explorer"
BUNDLE = ROOT / "src" / "astropt" / "tasks" / "explore" / "static" / "explorer.js"


def sources_hash() -> str:
    files = ["build.mjs", "package-lock.json", *(f"src/{p.name}" for p in (JS / "src").iterdir())]
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + (JS / name).read_bytes() + b"\0")
    return digest.hexdigest()


def test_bundle_matches_its_sources():
    banner = BUNDLE.read_text(encoding="utf-8").split("\n", 1)[0]
    recorded = re.search(r"sources sha256 ([0-9a-f]{64})", banner)
    assert recorded, f"{BUNDLE.name} has no sources hash; rebuild it with `make explorer-js`"
    assert recorded.group(1) == sources_hash(), "the bundle is stale: run `make explorer-js` and commit it"


def test_bundle_can_be_inlined_in_a_page():
    assert "</script" not in BUNDLE.read_text(encoding="utf-8").lower()
