"""The API reference's Sphinx extension: one directive renders a module's page, short names link.

``.. cnnbp-module:: cnnbp_ref.conv`` (inside ``{eval-rst}`` in a Markdown page) renders the
module's docstring, a summary table of every name in its ``__all__``, and an autodoc entry for
each name the module defines (its numpydoc sections rendered by ``sphinx.ext.napoleon``). A name
that the module re-exports from another public module is listed in the table and linked to the
entry on that module's page; one re-exported from a private module (``cnnbp_ref._parallel``) is
documented where it is exported. So a new public name needs no edit here, and a new module
needs one page with this one directive.

Roles may also use the names readers type: ``{py:func}`cnnbp_ref.conv2d``` resolves to the entry
of ``cnnbp_ref.conv.conv2d`` (``~cnnbp_ref.conv2d`` shows ``conv2d()``).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PACKAGE = "cnnbp_ref"


def _is_public_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == PACKAGE and not any(part.startswith("_") for part in parts)


def documented_name(module_name: str, name: str, obj: Any) -> str:
    """The fully qualified name under which ``module_name.name`` has its reference entry."""
    if inspect.ismodule(obj):
        return obj.__name__
    home = getattr(obj, "__module__", None)
    if home and home != module_name and _is_public_module(home):
        return f"{home}.{name}"
    return f"{module_name}.{name}"


def _short_repr(obj: Any) -> bool:
    """Whether a data entry's value is worth printing (short, and no ``<function ... at 0x...>``)."""
    text = repr(obj)
    return len(text) <= 80 and " at 0x" not in text


def _autodoc_directive(obj: Any) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    return "autodata"


class ModuleReference(SphinxDirective):
    """``.. cnnbp-module:: MODULE``: docstring, summary table and entries of ``MODULE.__all__``."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise self.error(f"cannot import {module_name}: {err}") from err
        exported = getattr(module, "__all__", None)
        if exported is None:
            raise self.error(
                f"{module_name} has no __all__: its public names are not declared"
            )
        rows, entries = [], []
        for name in exported:
            obj = getattr(module, name)
            target = documented_name(module_name, name, obj)
            # autosummary takes names relative to the current module; `~` shows the last part only
            prefix = f"{module_name}."
            rows.append(f"   ~{target.removeprefix(prefix)}")
            if target == f"{module_name}.{name}" and not inspect.ismodule(obj):
                entries.append(f".. {_autodoc_directive(obj)}:: {target}")
                if inspect.isclass(obj):
                    entries += [
                        "   :members:",
                        "   :undoc-members:",
                        "   :show-inheritance:",
                    ]
                elif not inspect.isroutine(obj) and not _short_repr(obj):
                    entries.append("   :no-value:")
                entries.append("")
        lines = [
            f".. automodule:: {module_name}",
            "   :no-members:",
            "",
            ".. rubric:: Summary",
            "",
            ".. autosummary::",
            "   :nosignatures:",
            "",
            *rows,
            "",
            *entries,
        ]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(
            self.state, StringList(lines, source=self.get_source_info()[0]), container
        )
        return container.children


def _home_of(full_name: str) -> str | None:
    """Where ``full_name`` (``cnnbp_ref.nn.conv2d``, say) has its entry, when it names an object."""
    module_name, _, name = full_name.rpartition(".")
    if not _is_public_module(module_name):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    if not hasattr(module, name):
        return None
    return documented_name(module_name, name, getattr(module, name))


def _resolve_reexport(
    app: Sphinx, env: Any, node: nodes.Element, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve a name that a module imports (``cnnbp_ref.conv2d``) to the entry where it is defined.

    Covers the roles written in the chapters and the docstrings' ``:func:`conv2d``` where the
    current module only imports ``conv2d``.
    """
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    target = node.get("reftarget", "")
    candidates = [target]
    if node.get("py:module") and not target.startswith(f"{PACKAGE}."):
        candidates.append(f"{node['py:module']}.{target}")
    domain = env.get_domain("py")
    for candidate in candidates:
        home = _home_of(candidate)
        if home is not None and home != candidate:
            resolved = domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], home, node, contnode
            )
            if resolved is not None:
                return resolved
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("cnnbp-module", ModuleReference)
    app.connect("missing-reference", _resolve_reexport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
