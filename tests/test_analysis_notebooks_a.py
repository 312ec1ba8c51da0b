"""The analysis notebooks 01 (model comparison), 02 (performance) and 05 (training dynamics), executed with papermill on
a tiny experiment trained for the purpose (two seeds; an ESN with a ridge grid, a GRU with a search, the mean-pool
control), and on a cut-down copy of it (one seed, two models, no search) where sections must skip with a message."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import ROOT, TINY

NOTEBOOKS = ("01_model_comparison", "02_performance", "05_training_dynamics")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    "A finished tiny experiment: esn (no search, 3 ridge values), gru (a 3-trial search), mean; split 1, seeds 0 and 1."
    with warnings.catch_warnings():  # torch's and fastai's import-time deprecation notices
        warnings.simplefilter("ignore")
        from esn_video.config import load_config
        from esn_video.experiment import run_comparison
        from esn_video.records import experiment_dir

    tmp = tmp_path_factory.mktemp("analysis_a")
    cfg = load_config(
        TINY,
        [
            f"models_dir={tmp}/models",
            f"dataset.root={tmp}/data/synth-tiny",
            f"cache.root={tmp}/cache/frames",
            f"features.cache_dir={tmp}/cache/features",
            "evaluation.seeds=[0, 1]",
            "models.esn.search.trials=0",
            "models.esn.hp.ridges=[0.1, 10.0, 1000.0]",
            "models.gru.search.trials=3",
            "models.gru.search.space={hidden: {choice: [8, 16]}, training.lr: {log: [0.003, 0.03]}}",
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_comparison(cfg, verbose=False)
    return experiment_dir(cfg)


@pytest.fixture(scope="module")
def small(experiment, tmp_path_factory) -> Path:
    "A copy of the experiment with one seed and two models (no search, no recurrent model)."
    out = tmp_path_factory.mktemp("analysis_a_small") / "small"
    for run in ("esn-split1-seed0", "mean-split1-seed0"):
        shutil.copytree(experiment / run, out / run)
    return out


def execute(name: str, experiment_dir: Path, out_dir: Path) -> dict:
    "Execute `analysis/<name>.ipynb` with papermill on `experiment_dir`; the executed notebook as JSON."
    import papermill as pm

    out = out_dir / f"{name}.ipynb"
    pm.execute_notebook(
        str(ROOT / "analysis" / f"{name}.ipynb"), str(out), parameters={"experiment_dir": str(experiment_dir)},
        kernel_name="python3", progress_bar=False, cwd=str(ROOT),
    )  # fmt: skip
    return json.loads(out.read_text())


def outputs(nb: dict) -> tuple[str, int, list[str]]:
    "The text of every output (Markdown, plain text, streams), the number of images, and the stderr streams."
    text, images, stderr = [], 0, []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                (stderr if o["name"] == "stderr" else text).append("".join(o["text"]))
            elif o["output_type"] == "error":
                text.append(f"{o['ename']}: {o['evalue']}")
            data = o.get("data", {})
            images += "image/png" in data
            for kind in ("text/markdown", "text/plain"):
                if kind in data:
                    text.append("".join(data[kind]))
    return "\n".join(text), images, stderr


def records(experiment_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(experiment_dir.glob("*/metrics.json"))]


def test_the_committed_notebooks_are_clean():
    for name in NOTEBOOKS:
        nb = json.loads((ROOT / "analysis" / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0].get("metadata", {}).get("tags", []), name
        assert "".join(code[0]["source"]).strip() == 'experiment_dir = "models/default"', name
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{name} holds outputs"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_on_a_real_experiment(name, experiment, tmp_path):
    nb = execute(name, experiment, tmp_path)
    text, images, stderr = outputs(nb)
    assert not stderr, stderr  # no warnings, no progress bars
    assert images >= 1
    for model in ("esn", "gru", "mean"):
        assert f"`{model}`" in text or f" {model} " in text, (model, text[:3000])
    assert "Provenance" in json.dumps(nb) and "fingerprint" in text
    recs = records(experiment)
    commit = json.loads((experiment / "esn-split1-seed0" / "environment.json").read_text())["git"]["commit"]
    if commit:
        assert commit in text
    if name == "01_model_comparison":
        acc = np.array([r["accuracy"] for r in recs if r["model"] == "gru"])
        row = next(line for line in text.splitlines() if " gru " in line and "±" in line)
        assert f"{100 * acc.mean():.1f} ± {100 * acc.std(ddof=1):.1f}" in row, row  # the table's gru accuracy
        assert "pairs of models compared" in text or "share more than one split/seed pair" in text
        assert "On the front, fastest first" in text
    if name == "02_performance":
        assert "Hardest classes" in text and "most frequent confusion" in text
        assert "With 4 classes, top-5 is 100% by construction" in text  # the tiny dataset has 4 classes
        assert "One split only" in text
    if name == "05_training_dynamics":
        esn = next(r for r in recs if r["model"] == "esn")
        assert f"ridge {esn['closed_form']['ridge']:g} chosen" in text
        assert "`gru`, split 1: 3 trials" in text  # the search, once for both seeds
        assert "No search: `esn`" in text
        assert "Read per step" in text  # the learning-rate schedule from the TensorBoard logs


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_on_one_seed_and_two_models(name, small, tmp_path):
    nb = execute(name, small, tmp_path)
    text, images, stderr = outputs(nb)
    assert not stderr, stderr
    assert images >= 1 and "`esn`" in text and "`mean`" in text
    skipped = {
        "01_model_comparison": ["share more than one split/seed pair", "No headline", "Every model ran once"],
        "02_performance": ["Every model ran once: there is no spread to break down"],
        "05_training_dynamics": ["No model of this experiment ran a search"],
    }[name]
    for message in skipped:
        assert message in text, (message, text[:3000])


def test_analyze_command(experiment, tmp_path):
    "`esn-video analyze DIR --only ...` executes the chosen notebooks into the output folder; a folder without runs is one error line."
    from cli_helpers import run_cli

    out = tmp_path / "records"
    r = run_cli(["analyze", str(experiment), "--only", "01,training_dynamics", "--output-dir", str(out)])
    assert r.returncode == 0, r.stderr
    made = sorted(p.name for p in out.glob("*.ipynb"))
    assert len(made) == 2 and made[0].endswith("_tiny-01_model_comparison.ipynb"), made
    assert made[1].endswith("_tiny-05_training_dynamics.ipynb"), made
    nb = json.loads((out / made[0]).read_text())
    shown = "".join("".join(c["source"]) for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []) or
                    "injected-parameters" in c["metadata"].get("tags", []))  # fmt: skip
    assert str(experiment) in shown, shown  # the experiment it was asked for (outside the project: as given)
    assert nb["metadata"]["papermill"]["input_path"] == "analysis/01_model_comparison.ipynb"  # not its whole text
    assert "2 executed analysis notebook(s)" in r.stdout, r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = run_cli(["analyze", str(empty)])
    assert bad.returncode == 1 and "holds no finished run" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    bad = run_cli(["analyze", str(experiment), "--only", "99"])
    assert bad.returncode == 1 and "no analysis notebook '99'" in bad.stderr, bad.stderr
