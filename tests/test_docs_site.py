"""The documentation site (`make docs`, scripts/docs.py) built and opened page by page in real headless Chromium.

The site is built (or reused when `_site/.build-stamp` says it was built from this very tree), served over a loopback
HTTP server (the search box fetches its index, which a `file://` page may not), and every page is opened in Debian's
Chromium driven through the DevTools protocol, with every host but 127.0.0.1 unresolvable, so a page that needs the
network fails here as it would offline. Each page must render its main content with no console error; every internal
link and image must resolve; every module of esn_video must have its API page with an entry per exported name;
search must find a known word. The home page's screenshot is saved to `_site_check/home.png` (the path is printed).

Chromium: taken from PATH (`chromium`, `chromium-browser`, `google-chrome`) or $ESN_VIDEO_CHROMIUM; where none is
found, installed with apt-get when running as root (scripts/setup.sh does the same for the dev extras); where that is
impossible the test fails and says so: it never passes without a browser.
"""

from __future__ import annotations

import ast
import base64
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "_site_check"


def _load_docs():
    spec = importlib.util.spec_from_file_location("esn_video_site_docs", ROOT / "scripts" / "docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


docs = _load_docs()


# ------------------------------------------------------------------------------------------------------ the browser
def find_chromium() -> str:
    "A Chromium to drive: $ESN_VIDEO_CHROMIUM, one on PATH, or Debian's installed now (as root); else fail loudly."
    env = os.environ.get("ESN_VIDEO_CHROMIUM")
    if env:
        return env
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if found:
        return found
    why = "not root" if os.geteuid() != 0 else "no apt-get" if not shutil.which("apt-get") else ""
    if not why:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(
            "apt-get update -qq && apt-get install -y -qq chromium", shell=True, env=env, capture_output=True, text=True
        )
        found = shutil.which("chromium")
        if found:
            return found
        why = f"apt-get install chromium failed: {(r.stdout + r.stderr).strip()[-800:]}"
    pytest.fail(
        f"NO BROWSER: the docs site's browser check needs Chromium and none could be found or installed ({why}). "
        "Install it (`apt-get install chromium`) or set ESN_VIDEO_CHROMIUM to a Chromium/Chrome binary."
    )


class CDP:
    "A minimal DevTools-protocol client for one page target, over websocket-client."

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True, enable_multithread=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, name: str, timeout: float = 30) -> dict:
        end = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e["method"] == name:
                    return e
            if time.monotonic() > end:
                raise TimeoutError(f"no {name} within {timeout}s")
            self.ws.settimeout(max(0.1, end - time.monotonic()))
            try:
                msg = json.loads(self.ws.recv())
            except Exception:
                continue
            finally:
                self.ws.settimeout(60)
            if "method" in msg:
                self.events.append(msg)

    def drain(self, seconds: float) -> None:
        "Collect events for `seconds` (late console errors, failed loads)."
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ws.settimeout(max(0.05, end - time.monotonic()))
            try:
                msg = json.loads(self.ws.recv())
            except Exception:
                break
            if "method" in msg:
                self.events.append(msg)
        self.ws.settimeout(60)

    def evaluate(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")


class Browser:
    "Headless Chromium on a scratch profile, with every host but 127.0.0.1 unresolvable (the site must work offline)."

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="esn-video-chromium-")
        args = [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-allow-origins=*",
            "--remote-debugging-port=0",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--window-size=1280,900",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port, log, end = None, [], time.monotonic() + 60
        while time.monotonic() < end:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            log.append(line)
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            self.close()
            pytest.fail(f"Chromium ({binary}) did not start its DevTools endpoint:\n{''.join(log)[-2000:]}")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        page = next(t for t in targets if t["type"] == "page")
        self.cdp = CDP(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            self.cdp.call(f"{domain}.enable")
        self.cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)

    def open(self, url: str, settle: float = 0.4) -> list[str]:
        "Load `url`; return the console errors, uncaught exceptions and failed loads it caused."
        self.cdp.events.clear()
        r = self.cdp.call("Page.navigate", url=url)
        if r.get("errorText"):
            return [f"navigation failed: {r['errorText']}"]
        self.cdp.wait_event("Page.loadEventFired", timeout=60)
        self.cdp.drain(settle)
        errors = []
        for e in self.cdp.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                errors.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(
                    "console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
                )
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(f"{p['entry'].get('source')}: {p['entry']['text']} {p['entry'].get('url', '')}".strip())
        return errors

    def screenshot(self, path: Path) -> None:
        data = self.cdp.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            if hasattr(self, "cdp"):
                self.cdp.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the browser closing a connection early is normal
            super().handle_error(request, client_address)


class Server:
    "The site over HTTP on 127.0.0.1 (an ephemeral port), in a thread."

    def __init__(self, folder: Path):
        handler = functools.partial(_Quiet, directory=str(folder))
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# what each page reports about itself
PAGE_JS = r"""(() => {
  const main = document.querySelector('article.md-content__inner') || document.querySelector('main') || document.body;
  return {
    title: document.title,
    main: (main.innerText || '').trim().length,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    images: [...document.querySelectorAll('img')].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    assets: [...document.querySelectorAll('link[href][rel=stylesheet], script[src]')].map(e => e.href || e.src),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    emptyToc: [...document.querySelectorAll('nav.md-nav--secondary a.md-nav__link')].filter(a => !a.textContent.trim()).length,
  };
})()"""


def check_pages(browser: Browser, base: str, pages: list[str]) -> tuple[list[str], dict[str, dict]]:
    "Open every page; return the problems found (rendering, console, links, images, anchors) and each page's report."
    problems, reports, targets = [], {}, {}
    for page in pages:
        url = base + page
        errors = browser.open(url)
        info = browser.cdp.evaluate(PAGE_JS)
        reports[page] = info
        problems += [f"{page}: {e}" for e in errors]
        if info["main"] < 40:
            problems.append(f"{page}: main content is empty ({info['main']} characters)")
        if info["emptyToc"]:
            problems.append(f"{page}: {info['emptyToc']} entries of the table of contents have no text")
        for img in info["images"]:
            if not img["ok"]:
                problems.append(f"{page}: image does not display: {img['src'][:120]}")
        for link in info["links"] + [i["src"] for i in info["images"]] + info["assets"]:
            if link.startswith(base):
                targets.setdefault(link, page)
    status: dict[str, int] = {}
    for link, page in sorted(targets.items()):
        plain, frag = urldefrag(link)
        if plain not in status:
            try:
                status[plain] = urllib.request.urlopen(plain, timeout=30).status
            except urllib.error.HTTPError as e:
                status[plain] = e.code
        if status[plain] != 200:
            problems.append(f"{page}: broken link {link[len(base) :]} (HTTP {status[plain]})")
            continue
        target = urlparse(plain).path.lstrip("/")
        if frag and target in reports and frag not in reports[target]["ids"]:
            problems.append(f"{page}: link to a missing anchor {link[len(base) :]}")
    return problems, reports


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def browser():
    b = Browser(find_chromium())
    yield b
    b.close()


@pytest.fixture(scope="module")
def site():
    t0 = time.perf_counter()
    folder = docs.build()
    print(f"docs site ready in {time.perf_counter() - t0:.0f}s")
    srv = Server(folder)
    yield folder, srv.url
    srv.close()


@pytest.fixture(scope="module")
def site_check(site, browser):
    folder, base = site
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html") if p.name != "404.html")
    # the 404 page's links are absolute for the published host, so it is opened but its links are not followed
    t0 = time.perf_counter()
    problems, reports = check_pages(browser, base, pages)
    return pages, problems, reports, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------------ the site
def test_every_page_renders_without_errors_and_every_link_resolves(site_check, capsys):
    pages, problems, _, secs = site_check
    with capsys.disabled():
        print(f"\n[docs site] opened {len(pages)} pages in Chromium in {secs:.0f}s; {len(problems)} problem(s)")
    assert not problems, "\n".join(problems[:60])


def test_site_has_every_expected_page(site_check):
    pages = set(site_check[0])
    expected = docs.expected_pages()
    assert len(expected) > 40
    assert not [p for p in expected if p not in pages], "missing pages"
    # every notebook under nbs/ is a page, every guide too
    assert {docs.page_name(nb) for nb in docs.notebooks()} <= pages
    assert {f"guides/{g.stem}.html" for g in docs.guides()} <= pages


def _exported(mod: str) -> list[str]:
    "The names in a module's __all__, read from its source."
    tree = ast.parse((ROOT / (mod.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]
    return []


def test_every_module_has_an_api_page_with_every_exported_name(site_check):
    _, _, reports, _ = site_check
    mods = docs.package_modules()
    assert len(mods) >= 20
    missing = []
    for mod in mods:
        report = reports.get(f"api/{mod}.html")
        if report is None:
            missing.append(f"{mod}: no API page")
            continue
        ids = set(report["ids"])
        if mod not in ids:
            missing.append(f"{mod}: the page has no entry for the module")
        missing += [f"{mod}.{n}: not on its API page" for n in _exported(mod) if f"{mod}.{n}" not in ids]
    assert not missing, "\n".join(missing)


def test_notebook_pages_show_outputs_plots_and_link_to_their_api(site_check, site):
    folder, _ = site
    _, _, reports, _ = site_check
    # executed: the ESN notebook prints; the synth notebook plots, and its figure displays
    esn = (folder / "models.esn.html").read_text(encoding="utf-8")
    assert "jp-OutputArea-output" in esn
    assert any(i["ok"] and i["src"].startswith("data:image/png") for i in reports["data.synth.html"]["images"])
    # hidden cells and directives are not on the page
    assert "#| hide" not in esn and "#| export" not in esn
    # both ways: notebook page -> API page -> notebook page
    assert any(link.endswith("api/esn_video.models.esn.html") for link in reports["models.esn.html"]["links"])
    assert any(link.endswith("/models.esn.html") for link in reports["api/esn_video.models.esn.html"]["links"])
    # nbdev 3's module docstrings link NAME.html.md: it exists for every notebook page
    assert all((folder / (docs.page_name(nb) + ".md")).is_file() for nb in docs.notebooks())


def test_nav_lists_guides_in_numeric_order(site_check, site):
    folder, _ = site
    html = (folder / "index.html").read_text(encoding="utf-8")
    order = [m.group(1) for m in re.finditer(r'href="guides/([^"#]+)\.html"', html)]
    order = list(dict.fromkeys(order))
    want = [g.stem for g in docs.guides()]
    assert order == want


def test_search_finds_a_known_word(site, browser):
    _, base = site
    assert not browser.open(base + "index.html")
    browser.cdp.evaluate("document.querySelector('label.md-search__icon, label[for=__search]').click()")
    browser.cdp.evaluate("document.querySelector('input.md-search__input').focus()")
    browser.cdp.call("Input.insertText", text="reservoir")
    hits, end = [], time.monotonic() + 30
    while time.monotonic() < end and not hits:
        time.sleep(0.3)
        hits = browser.cdp.evaluate(
            "[...document.querySelectorAll('.md-search-result__item a')].map(a => a.getAttribute('href'))"
        )
    assert hits, "the search box found nothing for 'reservoir'"
    assert any("esn" in h for h in hits), hits[:10]


def test_home_page_screenshot(site, browser, capsys):
    _, base = site
    assert not browser.open(base + "index.html", settle=1.0)
    out = CHECK / "home.png"
    browser.screenshot(out)
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with capsys.disabled():
        print(f"\n[docs site] home page screenshot: {out}")


# ------------------------------------------------------------------------------------------------------ fault tests
def test_checker_reports_a_broken_page(tmp_path, browser):
    "The page checker itself catches what it must: empty page, console error, failed script, broken link and image."
    icon = "<link rel='icon' href='data:,'>"
    (tmp_path / "ok.html").write_text(icon + "<main>" + "a fine page with enough words to count " * 3 + "</main>")
    (tmp_path / "bad.html").write_text(
        icon + "<main>tiny</main><a href='missing.html'>x</a><a href='ok.html#nowhere'>y</a>"
        "<img src='nope.png'><script>console.error('boom from the page')</script>"
        "<script src='http://example.com/cdn.js'></script>"
    )
    srv = Server(tmp_path)
    try:
        problems, _ = check_pages(browser, srv.url, ["ok.html", "bad.html"])
    finally:
        srv.close()
    text = "\n".join(problems)
    assert not [p for p in problems if p.startswith("ok.html")], text
    assert "bad.html: main content is empty" in text
    assert "boom from the page" in text
    assert "broken link missing.html (HTTP 404)" in text
    assert "missing anchor ok.html#nowhere" in text
    assert "image does not display" in text and "nope.png" in text
    assert "example.com" in text  # a page that needs the network fails the offline check


def _nb(tmp_path: Path, cells: list[tuple[str, str]]) -> Path:
    nb = {
        "cells": [
            {
                "cell_type": t,
                "metadata": {},
                "source": s,
                **({"outputs": [], "execution_count": None} if t == "code" else {}),
            }
            for t, s in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    # inside nbs/ of a scratch project so nbdev finds the project's settings (tst_flags)
    proj = tmp_path / "proj"
    (proj / "nbs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    path = proj / "nbs" / "01_x.ipynb"
    path.write_text(json.dumps(nb))
    return path


def _exec(src: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs.py"), "_exec", str(src), str(out)],
        capture_output=True,
        text=True,
        cwd=src.parent,
    )


def test_notebook_execution_hides_skips_and_keeps_outputs(tmp_path):
    src = _nb(
        tmp_path,
        [
            ("markdown", "# X\n\n> one line"),
            ("code", "#| hide\nsecret = 41"),
            ("code", "#| slow\nraise RuntimeError('a slow cell must not run')"),
            ("code", "#| export\ndef f(x: int) -> int:\n    'add one'\n    return x + 1"),
            ("code", "print(f(secret))"),
        ],
    )
    out = tmp_path / "out.ipynb"
    r = _exec(src, out)
    assert r.returncode == 0, r.stderr
    cells = json.loads(out.read_text())["cells"]
    sources = [c["source"] for c in cells]
    assert not any("secret = 41" in s for s in sources)  # the hidden cell ran but is not shown
    assert not any("#|" in s for s in sources)
    slow = next(c for c in cells if "a slow cell" in c["source"])
    assert slow["source"].startswith("# not run in the docs build (flagged slow)") and slow["outputs"] == []
    printed = next(c for c in cells if c["source"] == "print(f(secret))")
    assert "".join(printed["outputs"][0]["text"]).strip() == "42"
    assert json.loads(src.read_text())["cells"][4]["outputs"] == []  # the source notebook stays stripped


def test_failing_notebook_fails_naming_itself(tmp_path):
    src = _nb(tmp_path, [("markdown", "# X"), ("code", "x = 1"), ("code", "raise ValueError('boom in the notebook')")])
    out = tmp_path / "out.ipynb"
    r = _exec(src, out)
    assert r.returncode == 1
    assert "boom in the notebook" in r.stderr
    assert not out.exists()


def test_build_stops_naming_the_notebook_that_failed(tmp_path, monkeypatch, capsys):
    "The build's execution step, over a notebook folder holding one good and one failing notebook."
    good = _nb(tmp_path, [("markdown", "# good"), ("code", "print('fine')")])
    bad = good.with_name("02_broken.ipynb")
    nb = json.loads(good.read_text())
    nb["cells"][1]["source"] = "raise KeyError('missing piece')"
    bad.write_text(json.dumps(nb))
    monkeypatch.setattr(docs, "NBS", good.parent)
    monkeypatch.setattr(docs, "BUILD", tmp_path / "build")
    with pytest.raises(SystemExit) as e:
        docs.execute_all(jobs=2)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "nbs/02_broken.ipynb failed to execute" in err and "missing piece" in err
    assert "01_x.ipynb failed" not in err
    # the good notebook's executed copy is kept for the next build; nothing is left for the broken one
    kept = [p.name for p in (tmp_path / "build" / "exec").glob("*.ipynb")]
    assert any(n.startswith("01_x.ipynb.") for n in kept) and not any(n.startswith("02_broken") for n in kept)
