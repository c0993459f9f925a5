"""Where a model's files are: a local path, or a Hugging Face hub repository (cached).

One spelling names a model everywhere (Python and every CLI command)::

    path/to/folder | path/to/ckpt.pt | org/name[/sub/folder][@revision]

A local file or folder wins. Otherwise a name of the hub form is fetched through
``huggingface_hub`` into its standard cache (``HF_HUB_CACHE``/``HF_HOME``), so
``HF_HUB_OFFLINE=1`` works from the cache. The path after ``org/name`` is the subfolder of
the repository (``Smith42/astroPT_v2.0/astropt/095M``) or a weights file in it
(``Smith42/astroPT/models/fully_trained/0309M_params/030000_ckpt.pt``).

Every failure is a :class:`~astropt.errors.PretrainedError` that says which: no such local
path, offline and not cached, unknown (or private) repository, gated repository, unknown
revision, no weights file at that place.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from astropt.errors import PretrainedError

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
REFERENCE_WEIGHTS = "ckpt.pt"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[^@]+)?(@[\w./-]+)?$")


@dataclass(frozen=True)
class HubRef:
    """A model in a hub repository: ``repo_id``, a ``path`` inside it, a ``revision``."""

    repo_id: str
    path: str = ""
    revision: str | None = None

    @property
    def is_file(self) -> bool:
        return self.path.endswith(WEIGHT_SUFFIXES)

    def __str__(self) -> str:
        text = self.repo_id + (f"/{self.path}" if self.path else "")
        return text + (f"@{self.revision}" if self.revision else "")


def parse_hub_ref(text: str, subfolder: str | None = None, revision: str | None = None) -> HubRef | None:
    """The hub reference that ``text`` spells, or None when it is not of the hub form.

    ``subfolder`` and ``revision`` (the keyword arguments of ``from_pretrained``) join the
    path and override an ``@revision`` in the text.
    """
    text = str(text)
    if text.startswith(("/", "./", "../", "~")) or "\\" in text or "//" in text or not _HUB_ID.match(text):
        return None
    name, _, rev = text.partition("@")
    org, repo, *rest = name.split("/")
    path = "/".join([*rest, *(subfolder.strip("/").split("/") if subfolder else [])])
    return HubRef(f"{org}/{repo}", path.strip("/"), revision or rev or None)


def locate(
    name_or_path: str | os.PathLike,
    subfolder: str | None = None,
    revision: str | None = None,
    weights_filename: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local file or folder holding the model named by ``name_or_path``.

    Local paths are used as they are (``subfolder`` and ``weights_filename`` joined to
    them); otherwise the hub form is downloaded (only the files the model needs).

    Raises:
        PretrainedError: naming the path or repository and what went wrong.
    """
    local = Path(name_or_path).expanduser()
    if subfolder:
        local = local / subfolder
    if weights_filename and local.is_dir():
        local = local / weights_filename
    if local.exists():
        return local
    ref = parse_hub_ref(str(name_or_path), subfolder, revision)
    if ref is None:
        raise PretrainedError(
            f"{local}: no such file or folder (and not a hub id of the form "
            "org/name[/subfolder][@revision])"
        )
    try:
        return download(ref, weights_filename, cache_dir)
    except PretrainedError as exc:
        raise PretrainedError(f"{local}: no such file or folder here; as a Hugging Face hub model: {exc}") from None


def download(ref: HubRef, weights_filename: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Fetch a model's files from the hub (or its cache) and return the local path.

    A folder of ours (``config.json`` + ``model.safetensors``) comes back as its cached
    folder; a reference checkpoint as its cached file.
    """
    if ref.is_file:
        folder, _, filename = ref.path.rpartition("/")
        candidates = [(folder, filename)]
    else:
        names = [weights_filename] if weights_filename else [WEIGHTS_NAME, REFERENCE_WEIGHTS]
        candidates = [(ref.path, n) for n in names]
    missing: list[_Missing] = []
    for folder, filename in candidates:
        try:
            file = _fetch(ref, folder, filename, cache_dir)
        except _Missing as exc:
            missing.append(exc)
            continue
        if filename.endswith(".safetensors"):
            _fetch(ref, folder, CONFIG_NAME, cache_dir, needed_by=filename)
            return file.parent
        return file
    where = f"{ref.repo_id}" + (f" (folder {ref.path!r})" if ref.path and not ref.is_file else "")
    if not ref.is_file and not weights_filename:
        found = _checkpoints_in(ref, cache_dir)
        if len(found) == 1:  # e.g. models/fully_trained/0309M_params/030000_ckpt.pt
            return _fetch(ref, ref.path, found[0], cache_dir)
        if found:
            raise PretrainedError(
                f"{ref}: several checkpoints {found}; pass weights_filename= (or name the file in "
                "the path)"
            )
    if all(m.offline for m in missing) and not _cached_repo(ref, cache_dir):
        raise PretrainedError(_not_cached(ref, ref.path or "the repository") + _hint(ref))
    raise PretrainedError(f"{where}: no weights file: {'; '.join(map(str, missing))}{_hint(ref)}")


class _Missing(Exception):
    """One candidate file is not in the repository (or not in the offline cache)."""

    def __init__(self, message: str, offline: bool = False):
        super().__init__(message)
        self.offline = offline


def _not_cached(ref: HubRef, shown: str) -> str:
    return (
        f"{ref.repo_id}: {shown} is not in the local Hugging Face cache and the hub could not be "
        "reached (no network, or HF_HUB_OFFLINE=1); download it once with network access"
    )


def _fetch(ref: HubRef, folder: str, filename: str, cache_dir, needed_by: str | None = None) -> Path:
    from huggingface_hub import errors as hf
    from huggingface_hub import hf_hub_download

    shown = f"{folder}/{filename}" if folder else filename
    try:
        return Path(hf_hub_download(
            ref.repo_id, filename, subfolder=folder or None, revision=ref.revision,
            cache_dir=str(cache_dir) if cache_dir else None, library_name="astropt",
        ))
    except hf.GatedRepoError:
        raise PretrainedError(
            f"{ref.repo_id} is a gated repository: accept its conditions on its hub page, then "
            "log in (`hf auth login` or HF_TOKEN)"
        ) from None
    except hf.RepositoryNotFoundError:
        raise PretrainedError(
            f"{ref.repo_id}: no such repository on the Hugging Face hub (or it is private: log in "
            "with `hf auth login` or set HF_TOKEN)"
        ) from None
    except hf.RevisionNotFoundError:
        raise PretrainedError(f"{ref.repo_id}: no revision {ref.revision!r} (a branch, tag or commit)") from None
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled):  # before its base class
        if needed_by or not _offline():
            raise PretrainedError(_not_cached(ref, shown)) from None
        raise _Missing(f"no {shown} in the offline cache", offline=True) from None
    except hf.EntryNotFoundError:
        if needed_by:
            raise PretrainedError(f"{ref.repo_id}: {shown} is missing beside {needed_by}") from None
        raise _Missing(f"no {shown}") from None
    except hf.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise PretrainedError(
                f"{ref.repo_id}: access denied (HTTP {status}); log in with `hf auth login` or set HF_TOKEN"
            ) from None
        raise PretrainedError(f"{ref.repo_id}: the hub refused {shown} ({exc})") from None
    except OSError as exc:  # disk full, unwritable cache
        raise PretrainedError(f"{ref.repo_id}: could not store {shown} in the cache ({exc})") from None


def _checkpoints_in(ref: HubRef, cache_dir) -> list[str]:
    """Names of the ``*.pt`` files directly in the reference's folder: from the hub's file
    list, or (offline) from the cached snapshot."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub import errors as hf

    prefix = f"{ref.path}/" if ref.path else ""
    if _offline():
        root = Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + ref.repo_id.replace("/", "--"))
        refs = root / "refs" / (ref.revision or "main")
        commit = refs.read_text().strip() if refs.is_file() else (ref.revision or "")
        folder = root / "snapshots" / commit / ref.path
        names = sorted(p.name for p in folder.glob("*.pt")) if commit and folder.is_dir() else []
    else:
        try:
            files = HfApi().list_repo_files(ref.repo_id, revision=ref.revision)
        except (hf.HfHubHTTPError, OSError, ValueError):
            return []
        names = sorted(f[len(prefix):] for f in files if f.startswith(prefix) and f.endswith(".pt"))
    return [n for n in names if "/" not in n]


def _cached_repo(ref: HubRef, cache_dir) -> bool:
    """Whether the cache holds any snapshot of the repository."""
    from huggingface_hub import constants

    root = Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + ref.repo_id.replace("/", "--"))
    return (root / "snapshots").is_dir()


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hint(ref: HubRef) -> str:
    """Where the weights of a known published repository are, for the error message."""
    from astropt.model.published import PUBLISHED

    known = PUBLISHED.get(ref.repo_id)
    if known is None:
        return ""
    return f". The models of {ref.repo_id} are at: " + ", ".join(f"{ref.repo_id}/{p}" for p in known.paths)
