#!/usr/bin/env python3
"""Build the documentation site from nbs/ into _site/ (what `make docs` runs), offline.

    python scripts/docs.py build [--jobs N] [--force]     # the site, into _site/
    python scripts/docs.py pages                          # list the pages the site must have (one per line)

What it does, all in the scratch folder _site_build/ (git-ignored; the committed notebooks stay stripped):

1. Executes every notebook of nbs/ (found by walking the folder, like scripts/run_tests.py) in its own process, the way
   `nbdev-test` does: nbdev's own directive parser and execnb's shell, run from the notebook's folder, cells flagged
   with the project's `tst_flags` (`#| slow`, `#| gpu`) not run (their source is shown, marked as not run), then
   `#| hide` cells and `#|` directive lines removed from the page. Notebooks run in parallel (--jobs, default: the
   CPUs this process may use); an executed copy is reused while the notebook, the package, configs/ and this script
   are unchanged. A notebook that fails stops the build, named with its traceback.
2. Writes the pages: one per notebook, the newest executed record of each kind in papermill_runs/ as it is, named as nbdev names them (`00_core.ipynb` -> `core.html`, so the "Docs:" link
   in every module docstring resolves, and `core.html.md` beside it as nbdev 3 links it), every guide in
   docs/guides/ in numeric order, and an API page per module of esn_video (signatures and docstrings, read statically
   by mkdocstrings), each linked to its notebook and back.
3. Runs `mkdocs build --strict` with docs/mkdocs.yml plus the discovered nav, into _site/.

The site is static: open _site/index.html, or serve it (`python -m http.server -d _site`) for the search box.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
PKG = ROOT / "esn_video"
DOCS = ROOT / "docs"
SITE = ROOT / "_site"
BUILD = ROOT / "_site_build"
STAMP = ".build-stamp"
EXEC_VERSION = 2  # bump when execute_one changes what an executed page holds: the cached copies are made again

# Sections of the notebook nav, by the tens of a notebook's number (a number outside these gets its own section)
SECTIONS = {
    0: "Foundations",
    1: "Data",
    2: "Models",
    3: "Training pieces",
    4: "Experiments",
    5: "Command line",
    6: "Cloud",
    9: "Training notebook",
}


# ---------------------------------------------------------------------------------------------------------- discovery
def notebooks() -> list[Path]:
    "Every notebook under nbs/, outside hidden and `_` folders (the same set `make test` runs)."
    return sorted(
        p for p in NBS.rglob("*.ipynb") if not any(part.startswith((".", "_")) for part in p.relative_to(NBS).parts)
    )


def page_name(nb: Path) -> str:
    "The page of notebook `nb`, as nbdev names it: `00_core.ipynb` -> `core.html` (strip the number prefix)."
    rel = nb.relative_to(NBS)
    return rel.with_name(re.sub(r"^\d+[a-zA-Z0-9]*_", "", rel.name.lower())).with_suffix(".html").as_posix()


def read_nb(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _normalized(page: dict) -> dict:
    "An executed page as strict nbformat 4.5: output texts as strings, an id on every cell."
    for i, cell in enumerate(page["cells"]):
        cell.setdefault("id", f"cell-{i}")
        for out in cell.get("outputs", []):
            if isinstance(out.get("text"), list):
                out["text"] = "".join(out["text"])
            for k, v in (out.get("data") or {}).items():
                if isinstance(v, list) and not k.endswith("json"):
                    out["data"][k] = "".join(v)
    return page


def _src(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def nb_title(nb: dict, fallback: str) -> tuple[str, str]:
    "The notebook's title (its first `# ` heading) and its one-line summary (the `> ` line under it)."
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        m = re.search(r"^#\s+(.+)$", _src(cell), re.M)
        if m:
            d = re.search(r"^>\s*(.+)$", _src(cell), re.M)
            return m.group(1).strip(), (d.group(1).strip() if d else "")
    return fallback, ""


def nb_module(nb: dict) -> str | None:
    "The module a notebook exports to (`#| default_exp data.cache` -> `esn_video.data.cache`), or None."
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", _src(cell), re.M)
            if m:
                return f"{PKG.name}.{m.group(1)}"
    return None


def package_modules() -> list[str]:
    "Every module of the package (what nbdev-export wrote), by walking esn_video/."
    mods = []
    for f in sorted(PKG.rglob("*.py")):
        if "__pycache__" in f.parts or f.name.startswith("_"):
            continue
        mods.append(".".join(f.relative_to(ROOT).with_suffix("").parts))
    return mods


def module_summary(mod: str) -> str:
    "The first line of a module's docstring, read from its file (no import)."
    f = ROOT / (mod.replace(".", "/") + ".py")
    m = re.match(r'\s*(?:"""|\'\'\')(.*?)(?:\n|"""|\'\'\')', f.read_text(encoding="utf-8"), re.S)
    return m.group(1).strip() if m else ""


def guides() -> list[Path]:
    "The guides in docs/guides/, `NN_topic.md` in numeric order, then any without a number by name."

    def key(p: Path):
        m = re.match(r"(\d+)_", p.name)
        return (0, int(m.group(1)), p.name) if m else (1, 0, p.name)

    return sorted((DOCS / "guides").glob("*.md"), key=key)


def records() -> dict[str, Path]:
    "The newest executed record in papermill_runs/ of each experiment and analysis notebook: {name: file}."
    newest: dict[str, Path] = {}
    for f in sorted((ROOT / "papermill_runs").glob("*.ipynb")):  # names sort by time: the last one wins
        m = re.match(r"\d{8}T\d{6}Z_(.+)\.ipynb$", f.name)
        if m:
            newest[m.group(1)] = f
    return newest


def record_page(name: str) -> str:
    return f"record-{name}.html"


def md_title(path: Path) -> str:
    m = re.search(r"^#\s+(.+)$", path.read_text(encoding="utf-8"), re.M)
    return m.group(1).strip() if m else path.stem


def expected_pages() -> list[str]:
    "Every page the built site must have, relative to _site/ (the browser check opens each)."
    pages = [page_name(nb) for nb in notebooks()]
    pages += [g.relative_to(DOCS).with_suffix(".html").as_posix() for g in guides()]
    pages += ["api/index.html"] + [f"api/{m}.html" for m in package_modules()]
    pages += [record_page(n) for n in records()]
    return pages


# ---------------------------------------------------------------------------------------------------------- hashing
def _hash_files(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def code_hash() -> str:
    "What an executed notebook depends on besides itself: the package, configs, pyproject, and how it is executed."
    files = [f for f in sorted(PKG.rglob("*.py")) if "__pycache__" not in f.parts]
    files += sorted((ROOT / "configs").glob("*"))
    files += [ROOT / "pyproject.toml"]
    return hashlib.sha256((_hash_files(files) + f"exec-{EXEC_VERSION}").encode()).hexdigest()


def site_hash() -> str:
    "Everything the site is made of; _site/.build-stamp holds it, so an unchanged tree is not built again."
    files = [f for f in sorted(DOCS.rglob("*")) if f.is_file()] + notebooks() + [Path(__file__).resolve()]
    files += sorted(records().values())
    return hashlib.sha256((_hash_files(files) + code_hash()).encode()).hexdigest()


def site_is_fresh() -> bool:
    s = SITE / STAMP
    return s.exists() and s.read_text().strip() == site_hash()


# ---------------------------------------------------------------------------------------------------------- execution
def _skip_flags() -> list[str]:
    from nbdev.config import get_config

    flags = get_config(NBS).tst_flags or ""
    return flags.split() if isinstance(flags, str) else list(flags)


def execute_one(src: Path, out: Path) -> int:
    "Execute notebook `src` as nbdev-test does and write the page's notebook to `out`; 1 with a traceback if it fails."
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.test import nb_test_cells

    flags = _skip_flags()
    run = {c.idx_ for c in nb_test_cells(src, skip_flags=flags)}
    nb = NBProcessor(src, rm_directives=False, process=True).nb
    os.environ["IN_TEST"] = "1"  # as under nbdev-test: notebooks keep their checks short
    shell = CaptureShell(src)
    try:
        with working_directory(src.parent):
            shell.run_all(nb, exc_stop=True, preproc=lambda c: c.idx_ not in run, cell_timeout=900)
    except BaseException:
        import traceback

        sys.stderr.write((shell.prettytb(fname=src) or traceback.format_exc()) + "\n")
        return 1

    cells = []
    for c in nb.cells:
        directives = getattr(c, "directives_", None) or {}
        if "hide" in directives:
            continue
        src_text = _src(c)
        if c.cell_type == "code":
            lines = [ln for ln in src_text.splitlines() if not re.match(r"\s*#\s*\|", ln)]
            src_text = "\n".join(lines).strip("\n")
            if not src_text.strip():
                continue
            not_run = [f for f in flags if f in directives]
            if not_run:
                src_text = f"# not run in the docs build (flagged {' '.join(not_run)})\n" + src_text
            outputs = [] if c.idx_ not in run else [dict(o) for o in (c.get("outputs") or [])]
            cells.append(
                {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": outputs, "source": src_text}
            )
        else:
            cells.append({"cell_type": c.cell_type, "metadata": {}, "source": src_text})
    page = {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(page, default=str), encoding="utf-8")
    tmp.replace(out)
    return 0


def execute_all(jobs: int) -> dict[Path, Path]:
    "Every notebook executed (or its cached executed copy): {notebook: executed copy}. Exits 1 naming failures."
    cache = BUILD / "exec"
    cache.mkdir(parents=True, exist_ok=True)
    base = code_hash()
    todo, done = [], {}
    for nb in notebooks():
        key = hashlib.sha256((base + hashlib.sha256(nb.read_bytes()).hexdigest()).encode()).hexdigest()[:16]
        out = cache / f"{nb.relative_to(NBS).as_posix().replace('/', '__')}.{key}.ipynb"
        done[nb] = out
        if not out.exists():
            todo.append((nb, out))
    # biggest first: the long notebooks start at once instead of last
    todo.sort(key=lambda t: -t[0].stat().st_size)
    print(
        f"docs: executing {len(todo)} of {len(done)} notebooks ({jobs} at a time; the rest are unchanged)", flush=True
    )

    def run(item):
        nb, out = item
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, __file__, "_exec", str(nb), str(out)], cwd=ROOT, capture_output=True, text=True
        )
        return nb, r, time.perf_counter() - t0

    failed = []
    with ThreadPoolExecutor(max(1, jobs)) as ex:
        for nb, r, secs in ex.map(run, todo):
            rel = Path(NBS.name) / nb.relative_to(NBS)  # nbs/NAME.ipynb
            print(f"    {'executed' if r.returncode == 0 else 'FAILED  '} {rel} ({secs:.1f}s)", flush=True)
            if r.returncode:
                failed.append((rel, r.stdout + r.stderr))
    for rel, log in failed:
        print(f"\ndocs: {rel} failed to execute:\n{log.strip()}", file=sys.stderr)
    if failed:
        names = ", ".join(str(r) for r, _ in failed)
        print(
            f"\ndocs: build stopped: {names} failed to execute (run `.venv/bin/nbdev-test {failed[0][0]}`)",
            file=sys.stderr,
        )
        sys.exit(1)
    # drop stale executed copies
    keep = set(done.values())
    for f in cache.glob("*.ipynb"):
        if f not in keep:
            f.unlink()
    return done


# ---------------------------------------------------------------------------------------------------------- pages
_NB_LINK = re.compile(r"\]\((?:\.\./)?(?:nbs/)?([\w./-]+?)\.ipynb(#[^)]*)?\)")


def _link_notebooks(text: str, names: dict[str, str]) -> str:
    "Markdown links to notebooks of nbs/ -> links to their pages."

    def sub(m):
        page = names.get(m.group(1) + ".ipynb")
        return f"]({page}{m.group(2) or ''})" if page else m.group(0)

    return _NB_LINK.sub(sub, text)


def _site_url() -> str:
    "The published address (docs/mkdocs.yml's site_url), ending with a slash."
    m = re.search(r"^site_url:\s*(\S+)", (DOCS / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    return m.group(1).rstrip("/") + "/" if m else "https://invalid.example/"


def write_pages(executed: dict[Path, Path], pages: Path) -> list:
    "Fill `pages` (the mkdocs docs_dir) and return the nav."
    if pages.exists():
        shutil.rmtree(pages)
    shutil.copytree(DOCS, pages, ignore=shutil.ignore_patterns("mkdocs.yml", ".*"))
    import jupyter_server_mathjax

    mathjax = pages / "assets" / "mathjax"
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", mathjax)
    # MathJax writes MathML, which browsers render themselves (its HTML-CSS output would want the TeX web fonts,
    # which that package does not ship, and probes fonts in a way the browser reports as an error); the few web fonts
    # its MathML styles name are those same missing files, so they name fonts of the machine instead
    (mathjax / "config" / "local").mkdir(parents=True, exist_ok=True)
    faces = ", ".join(f'"@font-face /*{i}*/": {{src: "local(\'STIX Two Math\')"}}' for i in range(1, 7))
    (mathjax / "config" / "local" / "esn.js").write_text(
        'MathJax.Hub.Config({menuSettings: {renderer: "NativeMML"}, NativeMML: {styles: {' + faces + "}}, "
        '"HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null}});\n'
        'MathJax.Ajax.loadComplete("[MathJax]/config/local/esn.js");\n'
    )

    names = {nb.relative_to(NBS).as_posix(): page_name(nb) for nb in executed}
    site_url = _site_url()
    mod_nb: dict[str, Path] = {}
    titles: dict[Path, tuple[str, str]] = {}
    for nb in executed:
        raw = read_nb(nb)
        titles[nb] = nb_title(raw, nb.stem)
        mod = nb_module(raw)
        if mod:
            mod_nb[mod] = nb

    # notebook pages
    for nb, done in executed.items():
        page = _normalized(read_nb(done))
        mod = nb_module(read_nb(nb))
        depth = "../" * page_name(nb).count("/")
        for cell in page["cells"]:
            if cell["cell_type"] == "markdown":
                # links to notebooks, and links into the published site (README's), stay inside this build
                text = _link_notebooks(cell["source"], names)
                cell["source"] = re.sub(
                    r"\]\(" + re.escape(site_url) + r"([^)]*)\)", lambda m, d=depth: f"]({d}{m.group(1)})", text
                )
        note = f"*Notebook `nbs/{nb.relative_to(NBS).as_posix()}`"
        if mod:
            note += f"; its API: [`{mod}`]({depth}api/{mod}.html) (signatures and docstrings).*"
        else:
            note += ".*"
        first_h1 = next(
            (
                i
                for i, c in enumerate(page["cells"])
                if c["cell_type"] == "markdown" and re.search(r"^#\s", c["source"], re.M)
            ),
            -1,
        )
        page["cells"].insert(first_h1 + 1, {"cell_type": "markdown", "metadata": {}, "source": note})
        target = pages / Path(page_name(nb)).with_suffix(".ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(page), encoding="utf-8")

    # executed records, as they were executed
    for name, f in records().items():
        page = _normalized(read_nb(f))
        note = (
            f"# Record: {name}\n\n*Executed record `papermill_runs/{f.name}`, shown as it was executed "
            "(`esn-video run` and `esn-video analyze` write these); the newest record of its kind.*"
        )
        page["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": note, "id": "record-note"})
        (pages / Path(record_page(name)).with_suffix(".ipynb")).write_text(json.dumps(page), encoding="utf-8")

    # API pages
    api = pages / "api"
    api.mkdir(exist_ok=True)
    rows = []
    for mod in package_modules():
        nb = mod_nb.get(mod)
        lines = []
        if nb:
            title, _ = titles[nb]
            lines.append(
                f"The notebook [{title}](../{Path(page_name(nb)).with_suffix('.ipynb').as_posix()}) "
                f"(`nbs/{nb.relative_to(NBS).as_posix()}`) defines this module: its prose, examples and tests.\n"
            )
        lines.append(f"::: {mod}\n")
        (api / f"{mod}.md").write_text("\n".join(lines), encoding="utf-8")
        nb_cell = f"[{nb.relative_to(NBS).as_posix()}](../{names[nb.relative_to(NBS).as_posix()]})" if nb else ""
        rows.append(f"| [`{mod}`]({mod}.md) | {module_summary(mod)} | {nb_cell} |")
    (api / "index.md").write_text(
        "# API reference\n\nOne page per module of the `esn_video` package: every exported function and class with its "
        "signature and docstring. The notebook that defines a module explains it, with examples and tests.\n\n"
        "| module | what it holds | notebook |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    # the API index links notebooks by their .ipynb source name so mkdocs checks and rewrites them
    text = (api / "index.md").read_text(encoding="utf-8")
    for html in names.values():
        text = text.replace(f"](../{html})", f"](../{Path(html).with_suffix('.ipynb').as_posix()})")
    (api / "index.md").write_text(text, encoding="utf-8")

    # nav
    nav: list = [{"Home": "index.ipynb"}]
    nav.append({"Guides": [{md_title(g): g.relative_to(DOCS).as_posix()} for g in guides()]})
    for extra in sorted(DOCS.glob("*.md")):
        if extra.name != "index.md":
            nav.append({md_title(extra): extra.name})
    sections: dict[str, list] = {}
    for nb in executed:
        if nb.name == "index.ipynb" and nb.parent == NBS:
            continue
        m = re.match(r"(\d+)", nb.name)
        tens = int(m.group(1)) // 10 if m else None
        sec = SECTIONS.get(tens, f"Notebooks {tens}0-{tens}9" if tens is not None else "Other notebooks")
        sections.setdefault(sec, []).append({titles[nb][0]: Path(page_name(nb)).with_suffix(".ipynb").as_posix()})
    nav.append({"Notebooks": [{k: v} for k, v in sections.items()]})
    nav.append({"API reference": ["api/index.md"] + [{m: f"api/{m}.md"} for m in package_modules()]})
    if records():
        nav.append({"Records": [{n: Path(record_page(n)).with_suffix(".ipynb").as_posix()} for n in records()]})
    return nav


def fix_anchors(html: str) -> str:
    """Make a notebook page's table of contents point at its headings.

    mkdocs-jupyter names the headings' ids one way (nbconvert, from the rendered text, duplicates kept) and the
    table of contents another (Python-Markdown, from the source: a heading that is only code becomes `_1`), so their
    links can miss. Here the headings get unique ids and the contents' links are matched to them in order."""
    start, end = html.find("<article"), html.find("</article>")
    if start < 0 or end < 0:
        return html
    art, seen, ids = html[start:end], {}, []

    def unique(m):
        i = m.group(2)
        n = seen.get(i, 0)
        seen[i] = n + 1
        new = i if n == 0 else f"{i}_{n}"
        ids.append(new)
        return f'<h{m.group(1)} id="{new}"'

    art = re.sub(r'<h([1-6]) id="([^"]+)"', unique, art)
    # each heading's text, for contents entries left empty (a heading that is only code has no text there)
    texts = {}
    for m in re.finditer(r'<h[1-6] id="([^"]+)">(.*?)</h[1-6]>', art, re.S):
        texts[m.group(1)] = re.sub(r"<[^>]+>", "", m.group(2)).replace("¶", "").strip()
    html = html[:start] + art + html[end:]
    toc = re.findall(r'<a href="#([^"]*)" class="md-nav__link"', html)
    toc = list(dict.fromkeys(toc))
    heads = ids if len(toc) == len(ids) else ids[1:] if len(toc) == len(ids) - 1 else []
    mapping = {old: new for old, new in zip(toc, heads) if old != new and old not in ids}
    for old, new in mapping.items():
        html = html.replace(f'href="#{old}"', f'href="#{new}"')

    def fill(m):
        return m.group(1) + (texts.get(m.group(2), "") if not m.group(3).strip() else m.group(3)) + m.group(4)

    return re.sub(r'(<a href="#([^"]*)" class="md-nav__link">\s*<span class="md-ellipsis">)(\s*)(</span>)', fill, html)


def markdown_twins(executed: dict[Path, Path]) -> None:
    "`NAME.html.md` beside each notebook page: the page as markdown, where nbdev 3's module docstrings link."
    from nbconvert import MarkdownExporter

    exporter = MarkdownExporter()
    for nb, done in executed.items():
        page = _normalized(read_nb(done))
        for cell in page["cells"]:
            for out in cell.get("outputs", []):
                data = out.get("data")
                if data:  # text only: the images are on the HTML page
                    for k in [k for k in data if k.startswith("image/")]:
                        del data[k]
        import nbformat

        body, _ = exporter.from_notebook_node(nbformat.from_dict(page))
        (SITE / (page_name(nb) + ".md")).write_text(body, encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------- build
def build(jobs: int | None = None, force: bool = False) -> Path:
    "Build _site/ (skipped when its stamp says it was built from this very tree, unless `force`)."
    if not force and site_is_fresh():
        print(f"docs: {SITE.relative_to(ROOT)}/ is up to date with nbs/, docs/ and the package", flush=True)
        return SITE
    t0 = time.perf_counter()
    stamp = site_hash()
    jobs = jobs or int(os.environ.get("ESN_VIDEO_DOCS_JOBS", 0)) or len(os.sched_getaffinity(0))
    executed = execute_all(jobs)
    t1 = time.perf_counter()
    src = BUILD / "src"
    src.mkdir(parents=True, exist_ok=True)
    nav = write_pages(executed, src / "pages")
    import yaml

    cfg = yaml.safe_load((DOCS / "mkdocs.yml").read_text(encoding="utf-8").replace("__ROOT__", str(ROOT)))
    cfg.update(docs_dir=str(src / "pages"), site_dir=str(SITE), nav=nav)
    (src / "mkdocs.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    (SITE / STAMP).unlink(missing_ok=True)
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(src / "mkdocs.yml")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    if r.returncode:
        print("docs: mkdocs build failed (see above)", file=sys.stderr)
        sys.exit(1)
    for name in [page_name(nb) for nb in executed] + [record_page(n) for n in records()]:
        page = SITE / name
        page.write_text(fix_anchors(page.read_text(encoding="utf-8")), encoding="utf-8")
    markdown_twins(executed)
    missing = [p for p in expected_pages() if not (SITE / p).is_file()]
    if missing:
        print(f"docs: the build lacks pages: {', '.join(missing)}", file=sys.stderr)
        sys.exit(1)
    (SITE / STAMP).write_text(stamp + "\n")
    (SITE / ".nojekyll").write_text("")
    t2 = time.perf_counter()
    n = len(expected_pages())
    print(
        f"docs: built {SITE.relative_to(ROOT)}/ ({n} pages) in {t2 - t0:.0f}s "
        f"(notebooks {t1 - t0:.0f}s with {jobs} jobs, mkdocs {t2 - t1:.0f}s); open {SITE.relative_to(ROOT)}/index.html",
        flush=True,
    )
    return SITE


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_exec"]:
        return execute_one(Path(argv[1]), Path(argv[2]))
    p = argparse.ArgumentParser(prog="scripts/docs.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build _site/")
    b.add_argument("--jobs", type=int, default=None, help="notebooks executed at once (default: the CPUs)")
    b.add_argument("--force", action="store_true", help="build even when _site/ is up to date")
    sub.add_parser("pages", help="list the pages the site must have")
    a = p.parse_args(argv)
    if a.cmd == "pages":
        print("\n".join(expected_pages()))
        return 0
    build(a.jobs, a.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
