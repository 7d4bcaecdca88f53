"""The docs site, read as a person reads it: built once, every page loaded in a real browser.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven with selenium) loads
each page of the built site from a loopback HTTP server, and the home page also from
``file://``. A page fails on: a console error; a request to another host, or one that failed;
an image that did not load; a link to a page or anchor that does not exist; a raw reST role
(``:class:`X```) or Markdown left unrendered in its text; an element the browser does not
know (a placeholder such as ``<host>`` swallowed as an HTML tag); a page wider than the
window. Search must find "SLURM" and "checkpoint". Screenshots of a few pages go to
``$CHESTER_DOCS_SCREENSHOTS`` (default: ``site-screenshots/`` in the checkout, git-ignored),
with ``pages-checked.txt``, the list of pages checked and what each one failed on.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from functools import partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Chromium as root, headless, and quiet on the network: without the background-networking
#: flags it would call home (component updates, sync), which a closed network refuses
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900",
                  # a request to another host never leaves this machine, and is still seen
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
#: the browser's own pages (its new-tab page), never a request of the site
BROWSER_OWN = ("chrome://", "chrome-untrusted://", "chrome-extension://", "devtools://")
#: page (site path) -> screenshot name; the state diagram is shot as its own element
SCREENSHOTS = {"index.html": "home.png", "getting-started.html": "getting-started.png",
               "howto/hydra-slurm.html": "howto-slurm.png", "reference/cli.html": "cli.png"}
STATE_DIAGRAM = ("architecture.html", "img[src$='diagrams/states.svg']", "state-diagram.png")
#: a role's name, in text whose code (the role's `target`) was taken out
RAW_ROLE = re.compile(r"(?<![\w:-]):(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj|const|ref)"
                      r":")
#: Markdown that did not become HTML, in a page's text outside code
UNRENDERED = {
    "a fenced code block's backticks": re.compile(r"```"),
    "a Markdown link": re.compile(r"\]\((?:[^)\s]+)\)"),
    "a reference-style link": re.compile(r"\[[^\]\n]+\]\[[^\]\n]*\]"),
    "bold asterisks": re.compile(r"(?:^|\s)\*\*\S[^*\n]*\*\*"),
    "a heading's hashes": re.compile(r"^#{1,6} \S", re.M),
    "an escaped entity": re.compile(r"&(?:lt|gt|amp);"),
}

COLLECT_JS = r"""
const main = document.querySelector('.md-content') || document.body;
const copy = main.cloneNode(true);
copy.querySelectorAll('pre, code, .highlight, script, style, svg').forEach(e => e.remove());
const unknown = [...new Set([...main.querySelectorAll('*')]
    .filter(e => e instanceof HTMLUnknownElement ||
                 (e.tagName.includes('-') && !customElements.get(e.localName)))
    .map(e => e.localName))];
return {
  text: copy.innerText,
  unknown: unknown,
  images: [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  title: document.title,
};
"""


def _need(ok: bool, what: str) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (.ci/install.sh installs it; pip install 'chester-ml[docs]')")
    pytest.skip(what)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for this module as `nox -s docs` builds it."""
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
    except ImportError:
        _need(False, "mkdocs-material is needed to build the docs")
    _need(shutil.which("dot") is not None, "graphviz's dot is needed to draw the diagrams")
    out = tmp_path_factory.mktemp("docs") / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def server(site):
    """The built site on a loopback HTTP server."""
    handler = partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test reports what matters
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need(False, "selenium is needed for the browser test")
    _need(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
          "Debian's chromium and chromium-driver are needed for the browser test")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot_dir() -> Path:
    d = Path(os.environ.get("CHESTER_DOCS_SCREENSHOTS") or ROOT / "site-screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _requests(driver, base: str) -> list[str]:
    """What the page asked for that it must not: another host, or a request that failed."""
    bad = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith((base, "data:", "blob:", "about:", "file://")) and \
                    not url.startswith(BROWSER_OWN):
                bad.append(f"request to another host: {url}")
        elif msg["method"] == "Network.loadingFailed" and not params.get("canceled"):
            bad.append(f"request failed: {params.get('errorText')} "
                       f"({params.get('type', '?')})")
        elif msg["method"] == "Network.responseReceived":
            status = params["response"].get("status", 200)
            if status >= 400:
                bad.append(f"HTTP {status}: {params['response']['url']}")
    return bad


def _console_errors(driver) -> list[str]:
    return [f"console: {e['message']}" for e in driver.get_log("browser")
            if e["level"] == "SEVERE"]


def _load(driver, url: str) -> dict:
    driver.get(url)
    deadline = time.monotonic() + 30
    while driver.execute_script("return document.readyState") != "complete":
        assert time.monotonic() < deadline, f"{url} never finished loading"
        time.sleep(0.05)
    return driver.execute_script(COLLECT_JS)


def _text_faults(text: str) -> list[str]:
    out = []
    m = RAW_ROLE.search(text)
    if m:
        out.append(f"raw reST role: ...{text[max(0, m.start() - 40):m.end() + 30]!r}")
    for what, pattern in UNRENDERED.items():
        m = pattern.search(text)
        if m:
            out.append(f"unrendered Markdown ({what}): "
                       f"...{text[max(0, m.start() - 40):m.end() + 20]!r}")
    return out


def _search(driver, word: str) -> int:
    """How many results the site's own search lists for ``word``."""
    from selenium.webdriver.common.by import By

    driver.execute_script("document.querySelector('label.md-search__icon, "
                          "label[for=__search]').click()")
    box = driver.find_element(By.CSS_SELECTOR, "input.md-search__input")
    box.clear()
    box.send_keys(word)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        n = len(driver.find_elements(By.CSS_SELECTOR, ".md-search-result__item"))
        if n:
            return n
        time.sleep(0.1)
    return 0


@pytest.mark.slow  # mkdocs builds the whole site
def test_the_api_pages_render_the_docstrings(site):
    """mkdocs --strict built the site (a broken link, a page missing from the navigation or
    a stale API reference fails the build); the API page holds the records and launch."""
    api = (site / "api.html").read_text()
    for name in ("RunStatus", "RunHandle", "stderr_tail", "pending_reason", "launch",
                 "ConformanceEnv", "probe", "follow"):
        assert name in api, name
    assert 'class="autorefs autorefs-internal"' in api  # roles became links


@pytest.mark.slow  # builds the site and starts a browser
def test_every_page_renders_offline_in_a_real_browser(site, server, browser, capsys):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                   if p.name != "404.html")  # the 404 page is the server's, not the reader's
    assert {"index.html", "getting-started.html", "reference/cli.html",
            "reference/config.html", "api.html", "hooks.html", "records.html",
            "target.html"} <= set(pages)
    shots = _screenshot_dir()
    faults: dict[str, list[str]] = {}
    seen: dict[str, dict] = {}
    browser.get("about:blank")
    browser.get_log("performance")  # start clean
    browser.get_log("browser")
    for page in pages:
        info = _load(browser, server + page)
        f = _requests(browser, server) + _console_errors(browser)
        for src, complete, width in info["images"]:
            if not complete or width == 0:
                f.append(f"image did not load: {src}")
        if info["unknown"]:
            f.append("elements the browser does not know (an unescaped <placeholder>?): "
                     + ", ".join(f"<{t}>" for t in info["unknown"]))
        if info["overflow"] > 1:
            f.append(f"page wider than the window by {info['overflow']} px")
        f += _text_faults(info["text"])
        if page in SCREENSHOTS:
            browser.save_screenshot(str(shots / SCREENSHOTS[page]))
        if page == STATE_DIAGRAM[0]:
            from selenium.webdriver.common.by import By

            el = browser.find_element(By.CSS_SELECTOR, STATE_DIAGRAM[1])
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
            el.screenshot(str(shots / STATE_DIAGRAM[2]))
        faults[page] = f
        seen[page] = info
    # links: every page and anchor a link names exists
    for page, info in seen.items():
        for href in info["links"]:
            if not href.startswith(server):
                continue
            url = urllib.parse.urlsplit(href)
            target = urllib.parse.unquote(url.path)[1:] or "index.html"
            if target.endswith("/"):
                target += "index.html"
            if target in seen:
                if url.fragment and urllib.parse.unquote(url.fragment) not in seen[target]["ids"]:
                    faults[page].append(f"broken anchor: {href}")
            elif not (site / target).is_file():
                faults[page].append(f"broken link: {href}")
    # search, from the site itself: over HTTP, and from file:// (no server at all)
    _load(browser, server + "index.html")
    hits = {word: _search(browser, word) for word in ("SLURM", "checkpoint")}
    for word, n in hits.items():
        if not n:
            faults["index.html"].append(f"search found nothing for {word!r}")
    browser.get_log("performance")
    browser.get_log("browser")
    _load(browser, (site / "index.html").as_uri())
    file_hits = _search(browser, "SLURM")
    faults["file://index.html"] = [f for f in _requests(browser, server)
                                   + _console_errors(browser)]
    if not file_hits:
        faults["file://index.html"].append("search from file:// found nothing for 'SLURM'")
    report = [f"{'FAIL' if f else 'ok  '} {page}" + "".join(f"\n       {x}" for x in f)
              for page, f in faults.items()]
    report.append(f"search: {hits} (file://: SLURM {file_hits})")
    report.append(f"screenshots: {', '.join(sorted(p.name for p in shots.glob('*.png')))} "
                  f"in {shots}")
    (shots / "pages-checked.txt").write_text("\n".join(report) + "\n")
    with capsys.disabled():
        print(f"\ndocs site: {len(faults)} pages checked in Chromium\n" + "\n".join(report))
    failed = {p: f for p, f in faults.items() if f}
    assert not failed, "\n".join(f"{p}: {x}" for p, f in failed.items() for x in f)
    for name in (*SCREENSHOTS.values(), STATE_DIAGRAM[2]):
        assert (shots / name).stat().st_size > 10_000, name
