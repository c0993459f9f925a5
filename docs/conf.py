"""Sphinx configuration of the AstroPT documentation (Sphinx + MyST-NB + furo).

Built by ``make docs`` with warnings as errors and nitpicky cross-references; the
tutorials (MyST notebooks, ``file_format: mystnb``) are executed on every build.
"""

from __future__ import annotations

import inspect

import astropt

project = "AstroPT"
author = "AstroPT maintainers"
copyright = "AstroPT maintainers"  # noqa: A001 (Sphinx's name)
release = astropt.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"AstroPT {release}"

# Markdown (MyST) everywhere; heading anchors so that [text](page.md#heading) links resolve.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Tutorials run on every build, in a temporary folder, and a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_in_temp = True
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "remove"  # progress bars and warnings: the page shows results

# Every cross-reference must resolve (broken ones are errors under -W). Names of other
# projects (no intersphinx: the build runs offline) are the only exceptions.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|np|numpy|nn|os|pathlib|pa|pyarrow|argparse)(\..*)?"),
    (r"py:.*", r"(Path|PathLike|Any|T|Literal|Iterator|Callable|Sequence|Mapping|KVCache)"),
    (r"py:.*", r"(typing|collections\.abc)\..*"),
    # internal types that appear in public signatures
    (r"py:class", r"astropt\.(model\.transformer\.KVCache|model\.astropt\.Sequence|modalities\.base\.Modality|config\.T)"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False


def _undocumented_public_names() -> list[str]:
    """Public names of ``astropt.__all__`` (and their public methods) without a docstring."""
    missing = []
    for name in astropt.__all__:
        obj = getattr(astropt, name)
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for key, value in vars(obj).items():
                func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                if not key.startswith("_") and callable(func) and not func.__doc__:
                    missing.append(f"{name}.{key}")
    return missing


def _check_docstrings(app) -> None:
    from sphinx.util import logging

    for name in _undocumented_public_names():
        logging.getLogger(__name__).warning("astropt.%s (public API) has no docstring", name)


_ATTRIBUTE_TEXT: dict[str, list[str]] = {}


def _keep_attribute_text(app, what, name, obj, options, lines) -> None:
    """Napoleon reads ``"text: more"`` on an attribute's first line as ``type: description``;
    our field docstrings are prose: keep them before napoleon runs ..."""
    if what in ("attribute", "property"):
        _ATTRIBUTE_TEXT[name] = list(lines)


def _restore_attribute_text(app, what, name, obj, options, lines) -> None:
    """... and put them back after it."""
    if what in ("attribute", "property") and name in _ATTRIBUTE_TEXT:
        lines[:] = _ATTRIBUTE_TEXT.pop(name)


def setup(app) -> None:
    app.connect("builder-inited", _check_docstrings)
    app.connect("autodoc-process-docstring", _keep_attribute_text, priority=400)
    app.connect("autodoc-process-docstring", _restore_attribute_text, priority=600)
