"""The committed chapters carry their outputs but no volatile metadata.

Re-executing a chapter should change nothing but what it computes (and figures' bytes). What
changes for no reason is stripped by nbstripout with the arguments of ``.pre-commit-config.yaml``
(``pre-commit install`` runs it on every commit): execution timestamps, the kernel's Python
version, widget state. Run these tests alone with ``python -m pytest -m notebook_metadata``;
when they fail, strip the notebooks (outputs are kept) with::

    nbstripout --keep-output --keep-count --keep-id --extra-keys metadata.language_info.version book/*.ipynb

(the arguments are those of ``.pre-commit-config.yaml``; ``pre-commit run nbstripout --all-files``
does the same).
"""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
pytestmark = pytest.mark.notebook_metadata

# What nbstripout strips by default besides outputs and counts (nbstripout's own list).
VOLATILE_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled", "heading_collapsed", "hidden")
VOLATILE_NOTEBOOK_KEYS = ("signature", "widgets")


def _strip_args() -> list[str]:
    """The nbstripout hook's arguments in .pre-commit-config.yaml."""
    yaml = pytest.importorskip("yaml", reason="reading .pre-commit-config.yaml needs PyYAML")
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"] if hook["id"] == "nbstripout"]
    assert len(hooks) == 1, f"expected one nbstripout hook in .pre-commit-config.yaml, got {len(hooks)}"
    return [str(arg) for arg in hooks[0].get("args", [])]


def _extra_keys(args: list[str]) -> list[str]:
    """The dotted keys given to ``--extra-keys`` (``metadata.x.y``, ``cell.metadata.z``)."""
    keys = []
    for flag, value in itertools.pairwise(args):
        if flag == "--extra-keys":
            keys += value.split()
    return keys


def _has_key(mapping: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(mapping, dict) or part not in mapping:
            return False
        mapping = mapping[part]
    return True


def test_notebooks_found() -> None:
    assert len(NOTEBOOKS) >= 10, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_volatile_metadata(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    extra = _extra_keys(_strip_args())
    found = [f"metadata.{key}" for key in VOLATILE_NOTEBOOK_KEYS if key in notebook["metadata"]]
    found += [key for key in extra if key.startswith("metadata.") and _has_key(notebook, key)]
    for index, cell in enumerate(notebook["cells"]):
        metadata = cell.get("metadata", {})
        found += [f"cell {index}: metadata.{key}" for key in VOLATILE_CELL_KEYS if key in metadata]
        found += [
            f"cell {index}: {key}"
            for key in extra
            if key.startswith("cell.") and _has_key(cell, key.removeprefix("cell."))
        ]
    assert not found, (
        f"{path.name} carries volatile metadata ({len(found)}: {', '.join(found[:5])}, ...); "
        "strip it with the command in tests/test_notebooks.py's docstring"
    )


def test_stripping_changes_nothing() -> None:
    """nbstripout with the hook's arguments would leave every committed notebook as it is."""
    pytest.importorskip("nbstripout", reason="pip install nbstripout")
    result = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--verify", *_strip_args(), *map(str, NOTEBOOKS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"not stripped:\n{result.stdout}{result.stderr}"


def test_stripping_keeps_outputs_and_drops_timestamps(tmp_path: Path) -> None:
    """The hook's arguments do what the docstring says, on a notebook that has it all."""
    pytest.importorskip("nbstripout", reason="pip install nbstripout")
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python", "version": "3.11.7", "pygments_lexer": "ipython3"}
    cell = nbformat.v4.new_code_cell("1 + 1", execution_count=3)
    cell.id = "keep-this-id"
    cell.metadata["tags"] = ["hide-input"]
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000000Z"}
    cell.outputs = [
        nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3),
        nbformat.v4.new_output("stream", name="stdout", text="printed\n"),
    ]
    notebook.cells = [nbformat.v4.new_markdown_cell("# Title"), cell]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(notebook, path)
    before = copy.deepcopy(json.loads(path.read_text()))

    result = subprocess.run(
        [sys.executable, "-m", "nbstripout", *_strip_args(), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    after = json.loads(path.read_text())

    stripped, original = after["cells"][1], before["cells"][1]
    assert "execution" not in stripped["metadata"]
    assert "version" not in after["metadata"]["language_info"]
    assert stripped["outputs"] == original["outputs"]
    assert stripped["execution_count"] == 3
    assert stripped["id"] == "keep-this-id"
    assert stripped["metadata"]["tags"] == ["hide-input"]
    assert after["metadata"]["kernelspec"] == before["metadata"]["kernelspec"]
    assert after["metadata"]["language_info"]["pygments_lexer"] == "ipython3"
