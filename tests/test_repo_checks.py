"""The repository checks of `make test` catch what they promise: an unexported notebook edit, a notebook with
outputs, a stale README. Each test works on a scratch copy of the project, never on the checkout itself."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    for sub in ("nbs", "esn_video", "scripts"):
        shutil.copytree(ROOT / sub, tmp_path / sub, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return tmp_path


def nbcheck(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "nbcheck.py"), *args], cwd=root, capture_output=True, text=True
    )


def edit_core(root: Path, fn) -> None:
    p = root / "nbs" / "00_core.ipynb"
    nb = json.loads(p.read_text())
    fn(nb)
    p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def test_clean_copy_passes(scratch):
    r = nbcheck(scratch)
    assert r.returncode == 0, r.stdout + r.stderr


def test_unexported_edit_fails_and_says_export(scratch):
    def change(nb):
        cell = next(c for c in nb["cells"] if "def torch_generator" in "".join(c["source"]))
        cell["source"] = [s.replace("seeded with `seed`", "seeded with the given `seed`") for s in cell["source"]]

    edit_core(scratch, change)
    r = nbcheck(scratch, "sync")
    assert r.returncode == 1
    assert "esn_video/core.py" in r.stdout and "run `nbdev-export`" in r.stdout, r.stdout
    # the check works on a copy: the scratch tree itself is left as the user had it
    assert "seeded with `seed`" in (scratch / "esn_video" / "core.py").read_text()


def test_outputs_fail_with_reason_and_fix_strips_them(scratch):
    def add_output(nb):
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["hello\n"]}]
        cell["execution_count"] = 3

    edit_core(scratch, add_output)
    r = nbcheck(scratch, "outputs")
    assert r.returncode == 1
    assert "nbs/00_core.ipynb" in r.stdout and "hold outputs" in r.stdout and "papermill_runs" in r.stdout, r.stdout
    assert nbcheck(scratch, "outputs", "--fix").returncode == 0
    assert nbcheck(scratch, "outputs").returncode == 0


def test_stale_readme_fails(scratch):
    def retitle(nb):
        md = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
        md["source"] = [s.replace("# esn-video", "# esn-video (renamed)") for s in md["source"]]

    p = scratch / "nbs" / "index.ipynb"
    nb = json.loads(p.read_text())
    retitle(nb)
    p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    r = nbcheck(scratch, "readme")
    assert r.returncode == 1 and "README.md is out of date" in r.stdout
    assert nbcheck(scratch, "readme", "--fix").returncode == 0
    assert "# esn-video (renamed)" in (scratch / "README.md").read_text()


def test_unformatted_export_is_caught(scratch):
    f = scratch / "esn_video" / "core.py"
    f.write_text(f.read_text().replace("    return seed\n", "    return   seed\n", 1))
    r = nbcheck(scratch, "package-format")
    assert r.returncode == 1 and "esn_video/core.py is not ruff-formatted" in r.stdout, r.stdout
