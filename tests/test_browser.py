"""The rendered book as a reader sees it: every page opened in headless Chromium, with no network.

The HTML is served from 127.0.0.1 and Chromium resolves no other host, so a page that needs the
internet (a CDN script, a web font, a launch-button script fetched at page view) shows up as a
request to another host and fails here. For every page of the table of contents, plus the search
page and the index, the tests check that

- MathJax (served from the book's own ``_static/mathjax/``) typeset every formula: each ``.math``
  element holds an ``mjx-container``, no raw TeX (``\\(``, ``$$``, ``\\begin{``) is left in the visible
  text, and MathJax reported no error;
- every image loaded (``naturalWidth > 0``);
- every link into the book points at a file that exists, and its ``#anchor`` at an id on that page;
- the browser console logged no error, and the local server answered no request with an error;
- no request went to any host but the local server;
- at phone width (390 px) the page does not scroll sideways (wide tables and code scroll in place);
- with ``prefers-color-scheme: dark`` the theme turns dark.

The backward-pass animations (matplotlib's JavaScript players) must play: pressing Play changes
the frame shown, with no network; the book has at least six of them.

Two more tests: the root ``index.html`` redirects to the introduction, and the search page finds a
chapter (its index is a local file too).

Screenshots of each page (desktop 1280 px light and dark, phone 390 px) go to
``_build/screenshots/`` for a person to look at.

The site comes from ``$CNNBP_BOOK_HTML`` if set, else from ``_build/html`` when that build is newer
than every source file (CI builds the book first), else from a fresh build in a temporary folder
(about a minute). Without Chromium the tests are skipped: install it with
``apt-get install chromium chromium-driver`` (Debian/Ubuntu).
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
BUILT_HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
SOURCES = ["_config.yml", "_toc.yml", "book", "book_site", "cnnbp_ref"]

yaml = pytest.importorskip("yaml", reason="the browser tests need PyYAML (pip install -r requirements.txt)")
# Debian's chromium, or the Google Chrome that GitHub's Ubuntu runners ship with its matching driver.
CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "google-chrome", "chromium-browser"])), None)
CHROMEDRIVER = shutil.which("chromedriver") or shutil.which(
    "chromedriver", path=os.environ.get("CHROMEWEBDRIVER")
)
INSTALL_HINT = "install it with `apt-get install chromium chromium-driver` (Debian/Ubuntu)"
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(f"the browser tests need Chromium and chromedriver: {INSTALL_HINT}", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need `pip install selenium`")

DESKTOP = (1280, 900)
PHONE = (390, 844)
PAGE_LOAD_TIMEOUT_S = 60


def toc_pages() -> list[str]:
    """Every page of ``_toc.yml`` as a path relative to the site root, plus the search page and index."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def add(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            if "glob" in entry:  # e.g. the API reference's pages, book/api/*
                matches = sorted(ROOT.glob(entry["glob"] + ".*"))
                files.extend(
                    str(m.relative_to(ROOT).with_suffix("")) for m in matches if m.suffix in (".md", ".ipynb")
                )
            add(entry.get("sections", []))

    for part in toc.get("parts", []):
        add(part["chapters"])
    unique = list(dict.fromkeys(files))
    return [f"{file}.html" for file in unique] + ["search.html", "genindex.html"]


PAGES = toc_pages()


def newest_source_mtime() -> float:
    paths = [ROOT / name for name in SOURCES]
    files = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]
    return max(p.stat().st_mtime for p in files if "__pycache__" not in p.parts)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built HTML: ``_build/html`` when it is up to date, else a fresh strict build in a temp folder."""
    if os.environ.get("CNNBP_BOOK_HTML"):
        return Path(os.environ["CNNBP_BOOK_HTML"])
    stamp = BUILT_HTML / "searchindex.js"  # rewritten by every HTML build
    if stamp.is_file() and stamp.stat().st_mtime > newest_source_mtime():
        return BUILT_HTML
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.exists():
        pytest.skip("no up-to-date build in _build/html, and jupyter-book is not installed to make one")
    out = tmp_path_factory.mktemp("book")
    command = [str(jupyter_book), "build", "-W", "-n", "--keep-going", "--path-output", str(out), str(ROOT)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, f"the book build failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return out / "_build" / "html"


@dataclass
class Server:
    base_url: str
    failed: list[str] = field(default_factory=list)  # "404 /path" for every request answered with an error

    def take_failures(self) -> list[str]:
        failures, self.failed[:] = list(self.failed), []
        return failures


@pytest.fixture(scope="session")
def server(site: Path):
    """A static file server for the site on 127.0.0.1 (a free port), in a background thread."""
    record = Server(base_url="")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

        def log_request(self, code="-", size="-"):
            if int(getattr(code, "value", code)) >= 400:
                record.failed.append(f"{int(code)} {self.path}")

        def log_message(self, format, *args):  # keep pytest's output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield record
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Headless Chromium that can reach no host but 127.0.0.1, logging console and network events."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    driver.set_script_timeout(PAGE_LOAD_TIMEOUT_S)
    driver.execute_cdp_cmd("Network.enable", {})
    yield driver
    driver.quit()


# Runs in the page: resolves once MathJax has typeset everything (at once on a page without it) and
# the theme's colour transitions have ended (the light-to-dark switch fades for a moment).
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const start = Date.now();
const settle = (result) => {
  const transitions = document.getAnimations().map((animation) => animation.finished.catch(() => null));
  const timeout = new Promise((resolve) => setTimeout(resolve, 2000));
  Promise.race([Promise.all(transitions), timeout]).then(() => done(result));
};
(function poll() {
  const script = document.querySelector('script[src*="mathjax"]');
  if (!script) return settle('no-mathjax');
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise && mj.typesetPromise) {
    return mj.startup.promise.then(() => settle('typeset'), (e) => done('error: ' + e));
  }
  if (Date.now() - start > 30000) return done('error: MathJax never started');
  setTimeout(poll, 50);
})();
"""

# Runs in the page: everything the checks need, read from the rendered DOM.
INSPECT_PAGE = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach((img) => { img.loading = 'eager'; });
Promise.all(images.map((img) => img.decode().catch(() => null))).then(() => {
  const text = document.body.cloneNode(true);
  text.querySelectorAll('pre, code, script, style, mjx-container, .highlight, textarea')
      .forEach((el) => el.remove());
  const mathElements = Array.from(document.querySelectorAll('.math'));
  done({
    visibleText: text.textContent,
    mathElements: mathElements.length,
    mathWithoutContainer: mathElements.filter((el) => !el.querySelector('mjx-container'))
        .map((el) => el.textContent.slice(0, 80)),
    mathContainers: document.querySelectorAll('mjx-container').length,
    mathErrors: Array.from(document.querySelectorAll('mjx-merror'))
        .map((el) => el.getAttribute('data-mjx-error') || el.textContent),
    brokenImages: images.filter((img) => !img.complete || img.naturalWidth === 0)
        .map((img) => img.getAttribute('src')),
    links: Array.from(document.querySelectorAll('a[href]')).map((a) => a.href),
  });
});
"""

PAGE_WIDTH = "return [document.documentElement.scrollWidth, window.innerWidth];"


@dataclass
class Visit:
    """What one page showed in the browser, in each of the three views."""

    page: dict
    requests: list[str]
    console_errors: list[str]
    server_errors: list[str]
    mathjax: str
    phone_width: tuple[int, int]
    dark_theme: str


def drain_logs(driver) -> tuple[list[str], list[str]]:
    """The URLs requested and the console errors since the last call."""
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return requests, errors


def emulate(driver, width: int, height: int, mobile: bool, color_scheme: str) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": color_scheme}]}
    )


def load(driver, url: str) -> str:
    driver.get(url)
    return driver.execute_async_script(WAIT_FOR_MATHJAX)


@pytest.fixture(scope="session")
def visit(browser, server: Server, site: Path):
    """Open a page (once per session) in the three views; save screenshots; return what it showed."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    @functools.cache
    def open_page(page: str) -> Visit:
        assert (site / page).is_file(), f"{page} is in _toc.yml but missing from the build in {site}"
        url = server.base_url + page
        shot = SCREENSHOTS / page.replace("/", "__").removesuffix(".html")
        drain_logs(browser)
        server.take_failures()

        emulate(browser, *DESKTOP, mobile=False, color_scheme="light")
        mathjax = load(browser, url)
        browser.save_screenshot(f"{shot}--desktop.png")
        inspected = browser.execute_async_script(INSPECT_PAGE)

        emulate(browser, *DESKTOP, mobile=False, color_scheme="dark")
        load(browser, url)
        dark_theme = browser.execute_script("return document.documentElement.dataset.theme || ''")
        browser.save_screenshot(f"{shot}--dark.png")

        emulate(browser, *PHONE, mobile=True, color_scheme="light")
        load(browser, url)
        phone_width = tuple(browser.execute_script(PAGE_WIDTH))
        browser.save_screenshot(f"{shot}--phone.png")

        requests, console_errors = drain_logs(browser)
        return Visit(
            inspected, requests, console_errors, server.take_failures(), mathjax, phone_width, dark_theme
        )

    yield open_page
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name in ("id", "name") and value)


@functools.cache
def anchors_in(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$")


@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset(visit, page):
    shown = visit(page)
    assert not shown.mathjax.startswith("error"), f"{page}: {shown.mathjax}"
    info = shown.page
    assert info["mathWithoutContainer"] == [], (
        f"{page}: formulas MathJax did not typeset: {info['mathWithoutContainer']}"
    )
    assert info["mathErrors"] == [], f"{page}: MathJax errors {info['mathErrors']}"
    if info["mathElements"]:
        assert info["mathContainers"] >= info["mathElements"]
    raw = sorted({match.group(0)[:60] for match in RAW_TEX.finditer(info["visibleText"])})
    assert raw == [], f"{page}: raw TeX left in the visible text: {raw}"


def test_math_check_is_not_vacuous(visit):
    """The introduction, which has formulas, shows them as ``.math`` elements typeset by MathJax."""
    introduction = visit(PAGES[0]).page
    assert introduction["mathElements"] > 10
    assert introduction["mathContainers"] >= introduction["mathElements"]


@pytest.mark.parametrize("page", PAGES)
def test_images_load(visit, page):
    broken = visit(page).page["brokenImages"]
    assert broken == [], f"{page}: images that did not load: {broken}"


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_resolve(visit, server, site, page):
    broken = []
    for href in visit(page).page["links"]:
        if not href.startswith(server.base_url):
            continue
        parts = urlsplit(href)
        relative = posixpath.normpath(unquote(parts.path)).lstrip("/")
        target = site / relative
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href} (no file {relative})")
        elif (
            parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in anchors_in(target)
        ):
            broken.append(f"{href} (no anchor #{parts.fragment} in {relative})")
    assert broken == [], f"{page}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES)
def test_no_console_or_server_errors(visit, page):
    shown = visit(page)
    assert shown.console_errors == [], f"{page}: console errors: {shown.console_errors}"
    assert shown.server_errors == [], f"{page}: requests the server could not answer: {shown.server_errors}"


@pytest.mark.parametrize("page", PAGES)
def test_no_request_leaves_the_machine(visit, server, page):
    outside = [
        url
        for url in visit(page).requests
        if not url.startswith((server.base_url, "data:", "blob:", "about:", "chrome-extension:"))
    ]
    assert outside == [], f"{page}: requests to other hosts (the page must work offline): {outside}"


@pytest.mark.parametrize("page", PAGES)
def test_views(visit, page):
    """Dark mode follows the reader's system setting; at phone width nothing scrolls the page sideways."""
    shown = visit(page)
    assert shown.dark_theme == "dark", f"{page}: prefers-color-scheme: dark did not switch the theme"
    scroll_width, window_width = shown.phone_width
    assert scroll_width <= window_width, f"{page}: {scroll_width} px wide in a {window_width} px phone window"


def test_root_redirects_to_the_introduction(browser, server, site):
    browser.get(server.base_url + "index.html")
    browser.execute_async_script(WAIT_FOR_MATHJAX)
    root = yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]
    assert browser.current_url == f"{server.base_url}{root}.html"


def test_search_finds_a_chapter(browser, server):
    """The search page works offline: its index is a local file, and a query lists the chapter."""
    browser.get(server.base_url + "search.html?q=pooling")
    results = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const start = Date.now();
        (function poll() {
          const links = Array.from(document.querySelectorAll('#search-results li a'));
          if (links.length || Date.now() - start > 20000) return done(links.map((a) => a.href));
          setTimeout(poll, 100);
        })();
        """
    )
    assert f"{server.base_url}book/05_pooling.html" in [url.split("?")[0].split("#")[0] for url in results]


# Runs in the page: presses Play on every animation player, waits, and reports whether its frame changed.
PLAY_ANIMATIONS = """
const done = arguments[arguments.length - 1];
const players = Array.from(document.querySelectorAll('div.animation'));
(async () => {
  const results = [];
  for (const player of players) {
    const img = player.querySelector('img');
    player.scrollIntoView();
    const before = img.src;
    player.querySelector('button[title="Play"]').click();
    await new Promise((resolve) => setTimeout(resolve, 2500));
    player.querySelector('button[title="Pause"]').click();
    results.push({id: img.id, loaded: img.naturalWidth > 0, changed: img.src !== before});
  }
  done(results);
})();
"""

ANIMATED_PAGES = [page for page in PAGES if page.startswith("book/") and not page.startswith("book/api/")]


@functools.cache
def players_on(site: Path, page: str) -> int:
    path = site / page
    return path.read_text(encoding="utf-8").count('<div class="animation">') if path.is_file() else 0


@pytest.mark.parametrize("page", ANIMATED_PAGES)
def test_animations_play_offline(browser, server, site, page):
    if not players_on(site, page):
        pytest.skip(f"{page} has no animation")
    drain_logs(browser)
    emulate(browser, *DESKTOP, mobile=False, color_scheme="light")
    load(browser, server.base_url + page)
    played = browser.execute_async_script(PLAY_ANIMATIONS)
    assert len(played) == players_on(site, page)
    assert [p["id"] for p in played if not p["loaded"]] == [], f"{page}: animation frames that did not load"
    assert [p["id"] for p in played if not p["changed"]] == [], f"{page}: animations that did not move"
    requests, console_errors = drain_logs(browser)
    outside = [url for url in requests if not url.startswith((server.base_url, "data:", "blob:", "about:"))]
    assert outside == [] and console_errors == [], f"{page}: {outside} {console_errors}"


def test_the_book_has_six_animations(site):
    counts = {page: players_on(site, page) for page in ANIMATED_PAGES}
    assert sum(counts.values()) >= 6, f"animations per page: {counts}"
