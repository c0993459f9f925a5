"""The reference implementation's virtual environment, created once and cached.

The reference ``astropt`` (PyPI, AGPL) is installed with ``--no-deps`` plus only what its
model needs (torch at our pinned version, numpy, einops, loralib), in a separate virtual
environment under ``benchmarks/out/``. It is run as a subprocess, never imported here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REFERENCE_VERSION = "2.0.9"


def torch_version() -> str:
    """Our torch version without the local tag, so that both sides run the same kernels."""
    import torch

    return torch.__version__.split("+")[0]


class RefEnvError(RuntimeError):
    """The reference environment could not be created or does not import."""


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _works(python: Path) -> bool:
    check = "import astropt.model, torch; print(astropt.model.GPT.__name__, torch.__version__)"
    proc = subprocess.run([str(python), "-c", check], capture_output=True, text=True)
    return proc.returncode == 0


def ensure_refenv(venv: Path, version: str = REFERENCE_VERSION) -> Path:
    """Python of a working reference environment at ``venv``, creating it if needed."""
    python = _python(venv)
    if python.exists() and _works(python):
        return python
    print(f"creating the reference environment in {venv} (astropt=={version}) ...", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", f"torch=={torch_version()}"],
        [str(python), "-m", "pip", "install", "-q", "--no-deps", f"astropt=={version}"],
        [str(python), "-m", "pip", "install", "-q", "numpy", "einops", "loralib"],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RefEnvError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
    if not _works(python):
        raise RefEnvError(f"{venv}: the reference astropt=={version} does not import after install")
    return python
