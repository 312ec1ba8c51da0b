#!/usr/bin/env python3
"""The whole test suite, as `make test` runs it: lint, notebook hygiene, nbdev-test per notebook, pytest.

Every step runs even when an earlier one failed, so one run shows every problem; the exit status is non-zero if
any step failed, and the last line is `N passed, N failed` (one count per check, notebook and pytest test).

Environment: ESN_VIDEO_TEST_FLAGS="slow gpu" also runs notebook cells with those nbdev flags;
ESN_VIDEO_TEST_JOBS (default: number of CPUs, at most 4) notebooks are tested in parallel.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
results: list[tuple[str, bool, float]] = []


def step(name: str, cmd: list[str], **kw) -> bool:
    t0 = time.perf_counter()
    print(f"==> {name}: {' '.join(cmd)}", flush=True)
    r = subprocess.run(cmd, cwd=ROOT, **kw)
    ok = r.returncode == 0
    results.append((name, ok, time.perf_counter() - t0))
    print(f"<== {name}: {'passed' if ok else 'FAILED'} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return ok


def notebooks() -> list[Path]:
    return sorted(
        p
        for p in (ROOT / "nbs").rglob("*.ipynb")
        if not any(part.startswith((".", "_")) for part in p.relative_to(ROOT / "nbs").parts)
    )


def test_notebook(nb: Path, flags: str) -> tuple[str, bool, float, str]:
    t0 = time.perf_counter()
    cmd = [str(BIN / "nbdev-test"), str(nb), "--n-workers", "0"]
    if flags:
        cmd += ["--flags", flags]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return str(nb.relative_to(ROOT)), r.returncode == 0, time.perf_counter() - t0, r.stdout + r.stderr


def main() -> int:
    lint_paths = ["esn_video"] + (["tests"] if (ROOT / "tests").is_dir() else [])
    step("ruff check", [str(BIN / "ruff"), "check", *lint_paths, "nbs"])
    step("ruff format --check", [str(BIN / "ruff"), "format", "--check", "nbs", *lint_paths[1:]])
    for check in ("outputs", "sync", "readme", "package-format"):
        step(f"nbcheck {check}", [sys.executable, "scripts/nbcheck.py", check])

    flags = os.environ.get("ESN_VIDEO_TEST_FLAGS", "").strip()
    jobs = int(os.environ.get("ESN_VIDEO_TEST_JOBS", min(os.cpu_count() or 1, 4)))
    nbs = notebooks()
    print(f"==> nbdev-test: {len(nbs)} notebooks, {jobs} at a time, flags={flags or '(none)'}", flush=True)
    with ThreadPoolExecutor(jobs) as ex:
        for name, ok, secs, out in ex.map(lambda nb: test_notebook(nb, flags), nbs):
            results.append((f"nbdev-test {name}", ok, secs))
            print(f"    {'passed' if ok else 'FAILED'} {name} ({secs:.1f}s)", flush=True)
            if not ok:
                print("      " + out.strip().replace("\n", "\n      "), flush=True)

    junit = ROOT / ".pytest-results.xml"
    t0 = time.perf_counter()
    print("==> pytest tests/", flush=True)
    r = subprocess.run([sys.executable, "-m", "pytest", "tests", f"--junitxml={junit}", "-q"], cwd=ROOT)
    if r.returncode not in (0, 1, 5):  # 5: no tests collected is fine while tests/ is empty
        results.append(("pytest (did not run: exit %d)" % r.returncode, False, time.perf_counter() - t0))
    elif junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            bad = any(ch.tag in ("failure", "error") for ch in case)
            skipped = any(ch.tag == "skipped" for ch in case)
            if not skipped:
                name = f"pytest {case.get('classname')}::{case.get('name')}"
                results.append((name, not bad, float(case.get("time", 0))))
        junit.unlink()

    failed = [n for n, ok, _ in results if not ok]
    print("\n==> summary")
    for n, ok, s in results:
        print(f"    {'ok    ' if ok else 'FAILED'} {n} ({s:.1f}s)")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
