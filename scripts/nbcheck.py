#!/usr/bin/env python3
"""Repository checks for the notebook workflow (run by `make test`; `--fix` repairs what it can).

1. nbdev-export and nbdev-clean, run on a scratch copy of the tree, must change nothing.
2. No notebook in nbs/ holds cell outputs (executed records belong in papermill_runs/).
3. README.md is the rendering of nbs/index.ipynb.
4. The exported package is ruff-formatted apart from nbdev's own scaffolding (the `__all__` block and the blank
   lines between cells, which nbdev writes its own way and `ruff format` would always rewrite).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _files(root: Path) -> dict[str, str]:
    out = {}
    for sub in ("esn_video", "nbs"):
        for f in sorted((root / sub).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and ".ipynb_checkpoints" not in f.parts:
                out[str(f.relative_to(root))] = f.read_text(encoding="utf-8")
    return out


def check_sync(fix: bool) -> list[str]:
    "Run nbdev-export and nbdev-clean on a scratch copy; report every file they would change."
    if fix:
        for cmd in ("nbdev-export", "nbdev-clean"):
            subprocess.run([str(BIN / cmd)], cwd=ROOT, check=True)
        return []
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            if (ROOT / name).exists():
                shutil.copy2(ROOT / name, t / name)
        for sub in ("nbs", "esn_video"):
            shutil.copytree(ROOT / sub, t / sub, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        before = _files(t)
        for cmd, what in (("nbdev-export", "export"), ("nbdev-clean", "clean")):
            r = subprocess.run([str(BIN / cmd)], cwd=t, capture_output=True, text=True)
            if r.returncode:
                errors.append(f"{cmd} failed:\n{r.stdout}{r.stderr}")
                continue
            after = _files(t)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            for k in changed:
                diff = "".join(
                    list(
                        difflib.unified_diff(
                            before.get(k, "").splitlines(True), after.get(k, "").splitlines(True), k, f"{k} ({cmd})"
                        )
                    )[:40]
                )
                hint = (
                    "a notebook changed without `nbdev-export`: run `nbdev-export` (never edit esn_video/ by hand)"
                    if what == "export"
                    else "notebook not clean: run `nbdev-clean`"
                )
                errors.append(f"{k}: {hint}\n{diff}")
            before = after
    return errors


def check_outputs(fix: bool) -> list[str]:
    "No notebook under nbs/ may keep outputs or execution counts."
    errors = []
    for nb_path in sorted((ROOT / "nbs").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb_path.parts:
            continue
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        dirty = [
            i
            for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)
        ]
        if dirty and fix:
            for i in dirty:
                nb["cells"][i]["outputs"], nb["cells"][i]["execution_count"] = [], None
            nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        elif dirty:
            errors.append(
                f"{nb_path.relative_to(ROOT)}: cells {dirty} hold outputs; notebooks in nbs/ are kept stripped "
                "(executed records live in papermill_runs/). Clear them: `python scripts/nbcheck.py --fix` "
                "(or Jupyter's 'Clear All Outputs')"
            )
    return errors


def render_readme() -> str:
    "README.md from nbs/index.ipynb: markdown cells as they are, code cells fenced; nbdev directive lines dropped."
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text(encoding="utf-8"))
    parts = []
    for c in nb["cells"]:
        src = "".join(c["source"]).strip()
        if c["cell_type"] == "code":
            if re.search(r"^#\|\s*hide", src, re.M) or not src:
                continue
            src = "\n".join(line for line in src.splitlines() if not line.startswith("#|")).strip()
            src = f"```python\n{src}\n```"
        parts.append(src)
    text = "\n\n".join(parts) + "\n"
    m = re.match(r"# (.+)\n\n> (.+?)\n", text)  # nbdev's title + summary convention
    if m:
        text = f"# {m[1]}\n\n{m[2]}\n" + text[m.end() :]
    return "<!-- generated from nbs/index.ipynb by scripts/nbcheck.py --fix; edit the notebook -->\n\n" + text


def check_readme(fix: bool) -> list[str]:
    want, path = render_readme(), ROOT / "README.md"
    if fix:
        path.write_text(want, encoding="utf-8")
        return []
    have = path.read_text(encoding="utf-8") if path.exists() else ""
    if have != want:
        return ["README.md is out of date with nbs/index.ipynb: edit the notebook, then `python scripts/nbcheck.py --fix`"]
    return []


_ALL = re.compile(r"^__all__ = \[.*?\]\n", re.S | re.M)


def _normalise(src: str) -> str:
    return "\n".join(line for line in _ALL.sub("", src).splitlines() if line.strip())


def check_package_format(fix: bool) -> list[str]:
    "The exported code must be what `ruff format` writes, nbdev's `__all__` and blank lines aside."
    errors = []
    for f in sorted((ROOT / "esn_video").rglob("*.py")):
        if f.name == "_modidx.py":
            continue
        src = f.read_text(encoding="utf-8")
        r = subprocess.run(
            [str(BIN / "ruff"), "format", "--stdin-filename", str(f), "-"],
            input=src,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if r.returncode:
            errors.append(f"{f.relative_to(ROOT)}: ruff format failed: {r.stderr.strip()}")
        elif _normalise(r.stdout) != _normalise(src):
            diff = difflib.unified_diff(_normalise(src).splitlines(), _normalise(r.stdout).splitlines(), lineterm="")
            errors.append(
                f"{f.relative_to(ROOT)} is not ruff-formatted: run `ruff format nbs/` then `nbdev-export`\n"
                + "\n".join(list(diff)[:30])
            )
    return errors


CHECKS = {
    "outputs": check_outputs,
    "sync": check_sync,
    "readme": check_readme,
    "package-format": check_package_format,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checks", nargs="*", choices=[*CHECKS, []], help="which checks (default: all)")
    p.add_argument("--fix", action="store_true", help="strip outputs, export, clean and regenerate README.md")
    a = p.parse_args(argv)
    failed = 0
    for name in a.checks or list(CHECKS):
        errs = CHECKS[name](a.fix)
        status = "fixed" if a.fix else ("FAILED" if errs else "ok")
        print(f"nbcheck {name}: {status}")
        for e in errs:
            print("  " + e.replace("\n", "\n    "))
        failed += bool(errs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
