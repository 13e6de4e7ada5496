"""The package as a user installs it: ``python -m build``, then the wheel in a fresh virtualenv.

The build and virtualenv tests are marked ``slow`` (about a minute: two builds, a virtualenv,
NumPy and scikit-learn installed into it); skip them with ``-m "not slow"``, run them alone with
``python -m pytest -m slow``.

The build runs without build isolation, on the setuptools of the running environment
(``pyproject.toml`` asks for >= 77, which reads the SPDX ``license``; ``requirements.txt`` installs
one), so it needs no network; with an older setuptools it builds in isolation.
The fresh virtualenv gets the wheel and then the dependencies that the wheel's metadata
declares, from whatever package index pip is configured with (PyPI in CI): a dependency that
``cnnbp_ref`` imports but forgot to declare fails the import there. Where no index answers,
those tests are skipped, not failed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the sdist is built from: the files pyproject.toml names (readme, license-files, the package).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "cnnbp_ref")


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)


def _setuptools_major() -> int:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return 0


def _source_version() -> str:
    """``__version__`` as written in cnnbp_ref/__init__.py (read, not imported)."""
    tree = ast.parse((ROOT / "cnnbp_ref" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [
            "__version__"
        ]:
            return ast.literal_eval(node.value)
    raise AssertionError("cnnbp_ref/__init__.py assigns no __version__")


def test_citation_names_the_package_version() -> None:
    """CITATION.cff repeats the version (CFF cannot read it from the package): they must agree."""
    yaml = pytest.importorskip("yaml", reason="reading CITATION.cff needs PyYAML")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert str(citation["version"]) == _source_version()
    assert citation["license"] == "MIT"
    assert citation["repository-code"] == "https://github.com/cnnbp/cnnbp-book"


@pytest.mark.parametrize("venv_name", ["venv", "env", ".venv", ".venv-3.13", "my-env"])
def test_book_build_reads_no_virtualenv(venv_name: str, tmp_path: Path) -> None:
    """Sphinx's file discovery, with _config.yml's exclude_patterns, skips a virtualenv in the clone.

    A package's Markdown under a hidden folder (``mathjax/.github/*.md`` in site-packages) escapes
    ``only_build_toc_files`` and fails the strict build unless it is excluded by pattern.
    """
    yaml = pytest.importorskip("yaml", reason="reading _config.yml needs PyYAML")
    matching = pytest.importorskip("sphinx.util.matching")
    patterns = yaml.safe_load((ROOT / "_config.yml").read_text())["exclude_patterns"]
    site = tmp_path / venv_name / "lib" / "python3.11" / "site-packages"
    stray = [site / "mathjax" / ".github" / "bug_report.md", site / "somepkg" / "README.md"]
    chapter = tmp_path / "book" / "01_chain_rule.ipynb"
    for path in [*stray, chapter]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# a page\n")
    found = set(matching.get_matching_files(tmp_path, ["**"], patterns))
    assert "book/01_chain_rule.ipynb" in found
    assert not {name for name in found if name.startswith(f"{venv_name}/")}, sorted(found)


def test_api_reference_has_a_page_per_public_module() -> None:
    """Each public module of cnnbp_ref has its page in book/api/ (the _toc.yml glob lists them)."""
    modules = sorted(p.stem for p in (ROOT / "cnnbp_ref").glob("*.py") if not p.stem.startswith("_"))
    missing = [
        name
        for name in modules
        if f".. cnnbp-module:: cnnbp_ref.{name}\n" not in _read(ROOT / "book" / "api" / f"{name}.md")
    ]
    assert not missing, f"no API page for {missing}: add book/api/NAME.md (copy book/api/conv.md)"
    assert ".. cnnbp-module:: cnnbp_ref\n" in _read(ROOT / "book" / "api" / "index.md")
    assert "glob: book/api/*" in _read(ROOT / "_toc.yml")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``python -m build`` (sdist, then the wheel from the sdist) of a copy of the sources."""
    pytest.importorskip("build", reason="python -m build needs `pip install build`")
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp_path_factory.mktemp("dist")
    env = dict(os.environ)
    # distutils prints "byte-compiling is disabled" under this setting: the environment's, not ours.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Offline where the running environment has a setuptools that reads PEP 639 metadata (the
    # requirements ask for one); otherwise build's isolated environment fetches it from the index.
    isolation = ["--no-isolation"] if _setuptools_major() >= 77 else []
    result = _run([sys.executable, "-m", "build", *isolation, "--outdir", str(dist), str(source)], env=env)
    log = result.stdout + result.stderr
    if result.returncode != 0 and not isolation and "No matching distribution" in log:
        pytest.skip(f"no setuptools>=77 here and no package index to fetch it from: {log[-800:]}")
    assert result.returncode == 0, log[-4000:]
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    return wheel, sdist, log


@pytest.mark.slow
def test_build_prints_no_warning(built: tuple[Path, Path, str]) -> None:
    *_, log = built
    warnings = [line for line in log.splitlines() if re.search(r"warn|deprecat", line, re.IGNORECASE)]
    assert not warnings, "python -m build warned:\n" + "\n".join(warnings)


@pytest.mark.slow
def test_wheel_metadata(built: tuple[Path, Path, str]) -> None:
    wheel, sdist, _ = built
    version = _source_version()
    assert wheel.name == f"cnnbp_ref-{version}-py3-none-any.whl"
    assert sdist.name == f"cnnbp_ref-{version}.tar.gz"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(f"cnnbp_ref-{version}.dist-info/METADATA").decode())
        license_text = archive.read(f"cnnbp_ref-{version}.dist-info/licenses/LICENSE").decode()
    assert "cnnbp_ref/py.typed" in names
    assert license_text == (ROOT / "LICENSE").read_text()
    assert metadata["Name"] == "cnnbp-ref"
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.10"
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL"))
    assert urls["Repository"] == "https://github.com/cnnbp/cnnbp-book"
    assert urls["Documentation"] == "https://cnnbp.github.io/cnnbp-book/"
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"train", "check", "symbolic", "plot", "test", "torch", "all"} <= extras
    # Every module of the source tree is in the wheel (nothing left out by the package list).
    modules = {f"cnnbp_ref/{p.name}" for p in (ROOT / "cnnbp_ref").glob("*.py")}
    assert modules <= names, sorted(modules - names)


def _requirements(wheel: Path, extra: str | None) -> list[str]:
    """The wheel's ``Requires-Dist`` without markers: the base ones, or those of one extra."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = Parser().parsestr(
            archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        )
    wanted = []
    for requirement in metadata.get_all("Requires-Dist"):
        spec, _, marker = requirement.partition(";")
        if (extra is None and not marker) or (extra is not None and f'extra == "{extra}"' in marker):
            wanted.append(spec.strip())
    return wanted


@pytest.fixture(scope="module")
def clean_venv(built: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel and its declared dependencies, nothing else."""
    wheel, *_ = built
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True, symlinks=os.name != "nt")
    python = home / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = _run([*pip, "--no-deps", str(wheel)])
    assert result.returncode == 0, result.stderr[-4000:]
    result = _run([*pip, *_requirements(wheel, None)])
    if result.returncode != 0:
        pytest.skip(f"no package index answered for the wheel's dependencies: {result.stderr[-800:]}")
    return python


@pytest.mark.slow
def test_import_with_only_the_declared_dependencies(clean_venv: Path) -> None:
    code = (
        "import sys, importlib.metadata as md, cnnbp_ref, cnnbp_ref.nn, cnnbp_ref.optim, cnnbp_ref.train;"
        "print(cnnbp_ref.__version__, md.version('cnnbp-ref'));"
        "print(sorted(m for m in ('sklearn', 'tqdm', 'sympy', 'matplotlib', 'torch') if m in sys.modules))"
    )
    result = _run([str(clean_venv), "-c", code], cwd=clean_venv.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    versions, optional = result.stdout.splitlines()
    assert versions == f"{_source_version()} {_source_version()}"
    assert optional == "[]", f"import cnnbp_ref pulled in optional packages: {optional}"


@pytest.mark.slow
def test_train_help_without_the_train_extra(clean_venv: Path) -> None:
    result = _run([str(clean_venv), "-m", "cnnbp_ref.train", "--help"], cwd=clean_venv.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "--epochs" in result.stdout


@pytest.mark.slow
def test_train_extra(built: tuple[Path, Path, str], clean_venv: Path) -> None:
    """Without the extra, training says what to install; with it (as declared), training runs."""
    wheel, *_ = built
    train = [str(clean_venv), "-m", "cnnbp_ref.train", "--epochs", "1"]
    result = _run([*train, "--no-progress"], cwd=clean_venv.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert 'pip install "cnnbp-ref[train]"' in result.stderr, result.stderr

    pip = [str(clean_venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = _run([*pip, *_requirements(wheel, "train")])
    if result.returncode != 0:
        pytest.skip(f"no package index answered for the train extra: {result.stderr[-800:]}")
    result = _run(train, cwd=clean_venv.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr
    assert re.search(r"accuracy", result.stdout, re.IGNORECASE), result.stdout
