"""The analysis notebooks `analysis/03_visualisation.ipynb` and `analysis/04_efficiency.ipynb`, executed with
papermill in quick mode on a tiny experiment trained once for the module (its data, caches and runs in a temporary
folder): they run without error or warning, show their figures, and the numbers they print agree with the records
and with recomputations."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """The tiny config's experiment (an ESN, a GRU and the mean control; split 1, seed 0), trained through the API; the
    ESN is an ensemble of two reservoirs, as the shipped configs' best ESN is (its sections once came out empty)."""
    from esn_video.config import load_config
    from esn_video.experiment import run_comparison
    from esn_video.records import experiment_dir

    d = tmp_path_factory.mktemp("analysis_b")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"models_dir={d}/models", f"dataset.root={d}/data/synth-tiny", f"cache.root={d}/cache/frames",
        f"features.cache_dir={d}/cache/features", "models.esn.hp.ensemble=2",
    ])  # fmt: skip
    run_comparison(cfg, verbose=False)
    return experiment_dir(cfg)


def execute(name: str, experiment: Path, out_dir: Path) -> list[dict]:
    "Execute `analysis/<name>` in quick mode on `experiment`; the code cells of the executed notebook."
    nb = nbformat.read(str(ROOT / "analysis" / name), as_version=4)
    for i, cell in enumerate(nb.cells):  # nbformat 4.5 wants cell ids
        cell.setdefault("id", f"cell-{i}")
    out = out_dir / name
    pm.execute_notebook(nb, str(out), parameters={"experiment_dir": str(experiment), "quick": True},
                        kernel_name="python3", progress_bar=False, cwd=str(ROOT))  # fmt: skip
    return [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]


def outputs(cells: list[dict]) -> list[dict]:
    return [o for c in cells for o in c.get("outputs", [])]


def markdown(cells: list[dict]) -> str:
    return "\n".join(
        "".join(o["data"]["text/markdown"]) for o in outputs(cells) if "text/markdown" in o.get("data", {})
    )


def check_clean(cells: list[dict], min_images: int) -> None:
    "No error, nothing on stderr (warnings, progress bars), the figures shown, no absolute path into the checkout."
    outs = outputs(cells)
    assert not [o for o in outs if o["output_type"] == "error"]
    stderr = [o for o in outs if o["output_type"] == "stream" and o["name"] == "stderr"]
    assert not stderr, "".join(t for o in stderr for t in o["text"])[:3000]
    images = [o for o in outs if "image/png" in o.get("data", {})]
    assert len(images) >= min_images, len(images)
    assert f"{ROOT}/" not in json.dumps(outs)


def record(experiment: Path, run: str) -> dict:
    return json.loads((experiment / run / "metrics.json").read_text())


def test_visualisation_notebook(experiment, tmp_path):
    cells = execute("03_visualisation.ipynb", experiment, tmp_path)
    check_clean(cells, min_images=6)  # clips, augmentations, trajectories, eigenvalues, readout, feature maps
    text = markdown(cells)
    esn = record(experiment, "esn-split1-seed0")
    assert "The ESN shown is **`esn`**" in text and "run `esn-split1-seed0`" in text, text[:2000]
    assert "averages 2 reservoirs; the sections below show the first" in text, text[:2000]
    assert f"test accuracy {100 * esn['accuracy']:.1f}%" in text
    # the eigenvalues computed from the saved reservoir: their largest modulus is the spectral radius the run chose
    m = re.search(r"largest \|λ\| = ([0-9.]+) \(the run's spectral_radius: ([0-9.]+)\)", text)
    assert m, text
    assert abs(float(m.group(1)) - esn["hp"]["spectral_radius"]) < 1e-4
    assert abs(float(m.group(2)) - esn["hp"]["spectral_radius"]) < 1e-4
    assert "5-NN accuracy" in text and f"{100 * esn['accuracy']:.1f}% per video" in text
    assert "The run's ensemble (the mean of its reservoirs' linear readouts) scored" in text  # not one reservoir's


def test_efficiency_notebook(experiment, tmp_path):
    cells = execute("04_efficiency.ipynb", experiment, tmp_path)
    check_clean(cells, min_images=2)  # the time split from the records, the sweeps
    text = markdown(cells)
    # the time split: each model's total is its record's search + build + training + feature share (one run each)
    for name in ("esn", "gru", "mean"):
        rec = record(experiment, f"{name}-split1-seed0")
        total = rec["search_seconds"] + rec["build_seconds"] + rec["train_seconds"] + rec["feature_seconds"]
        assert abs(total - rec["fit_seconds"]) < 1e-6
        assert f"- `{name}`: {total:.2f} s on average over 1 run(s)" in text, text[:3000]
    assert "Refitted: `esn`" in text and "and `gru`" in text and "12 points, one fit each" in text, text
    # each printed exponent is the slope of its two printed points (quick mode), recomputed from them
    lines = re.findall(r"- `(\w+)`, ([a-z ()]+): fit time ∝ x\^(-?[0-9.]+) .*? from (\d+) to (\d+): ([0-9.]+) s to "
                       r"([0-9.]+) s", text)  # fmt: skip
    assert len(lines) == 6, text
    for model, axis, exponent, x0, x1, t0, t1 in lines:
        slope = math.log(float(t1) / float(t0)) / math.log(float(x1) / float(x0))
        assert abs(slope - float(exponent)) < 0.03 + 0.002 / min(float(t0), float(t1)), (model, axis, slope, exponent)
    assert "the ESN was" in text  # the side-by-side comparison
