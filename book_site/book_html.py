"""A local Sphinx extension: the book's HTML works with no network and loads without console errors.

1. MathJax is served from the book's own files. Sphinx's default ``mathjax_path`` is a CDN URL; this
   copies MathJax 3 (the ``es5`` build shipped by the PyPI package ``django-static-mathjax``, imported
   as ``mathjax``) into ``_static/mathjax/`` of the HTML output and points ``mathjax_path`` there.
   Only the combined ``tex-mml-chtml`` bundle is copied, with the components it loads on demand
   (TeX extensions, CHTML fonts, the context menu with its accessibility and speech modules).
2. Inline scripts are written once per page. Sphinx 7 registers an inline script added with
   ``app.add_js_file(None, body=...)`` twice (once as filename ``None``, once as ``''``), so
   sphinx-thebe's ``const THEBE_JS_URL = ...`` was declared twice and every page logged
   "Identifier 'THEBE_JS_URL' has already been declared".
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config

MATHJAX_BUNDLE = "tex-mml-chtml.js"
# Loaded on demand by the bundle: autoloaded TeX extensions, fonts, menu, a11y and speech.
MATHJAX_COMPONENT_DIRS = ("input", "output", "ui", "a11y", "sre", "adaptors")


def mathjax_source() -> Path:
    """The folder holding MathJax 3's ``es5`` build (``tex-mml-chtml.js`` and its components)."""
    import mathjax  # installed by django-static-mathjax (see requirements.txt)

    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (source / MATHJAX_BUNDLE).is_file():
        raise FileNotFoundError(f"MathJax bundle {MATHJAX_BUNDLE} not found in {source}")
    return source


def use_local_mathjax(app: Sphinx, config: Config) -> None:
    """Load MathJax from ``_static/mathjax/`` (a relative URL, so it works offline and on any host)."""
    config.mathjax_path = f"mathjax/{MATHJAX_BUNDLE}"


def copy_mathjax(app: Sphinx) -> None:
    """Copy the bundle and its components into ``<outdir>/_static/mathjax/`` before pages are written."""
    if app.builder.format != "html":
        return
    source = mathjax_source()
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / MATHJAX_BUNDLE, target / MATHJAX_BUNDLE)
    shutil.copy2(source.parent / "LICENSE", target / "LICENSE")
    for name in MATHJAX_COMPONENT_DIRS:
        shutil.copytree(source / name, target / name, dirs_exist_ok=True)


def drop_duplicate_scripts(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Keep the first of scripts that differ only in ``None`` versus ``''`` as filename."""
    unique = {}
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        unique.setdefault(key, script)
    context["script_files"] = list(unique.values())


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", use_local_mathjax)
    app.connect("builder-inited", copy_mathjax)
    app.connect("html-page-context", drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
