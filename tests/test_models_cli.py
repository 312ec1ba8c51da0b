"""The models chapters through the real command line and across modules.

`esn-video bench esn` dispatched by the installed console script (a tiny run, with reservoirpy), its usage errors,
every model of the registry saved and restored through `torch.save` with the same outputs, the shipped configs'
hyperparameters accepted by `check_hyperparameters`, and the baselines importable without the ESN.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esn_video.config import load_config
from esn_video.models.registry import MODELS, build_model, check_hyperparameters

CLI = str(Path(sys.executable).parent / "esn-video")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_bench_esn_cli_writes_ratios(tmp_path):
    out = tmp_path / "bench.json"
    args = [CLI, "bench", "esn", "--units", "48", "--train", "40", "--test", "20", "--batch-size", "20"]
    r = subprocess.run([*args, "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    ratios = res["ratios"]
    for key in ("fit_speedup_vs_reservoirpy", "accuracy_minus_reservoirpy", "state_loop_fraction_of_matmul"):
        assert isinstance(ratios[key], float), key
    assert ratios["fit_speedup_vs_reservoirpy"] > 0
    assert 0 <= res["runs"]["48"]["reservoirpy"]["test_accuracy"] <= 1
    assert "fit s" in r.stdout


@pytest.mark.parametrize("argv", [["--units", "ten"], ["--train", "0"], ["--threads", "-1"]])
def test_bench_esn_cli_usage_errors(argv):
    r = subprocess.run([CLI, "bench", "esn", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--" in r.stderr  # names the option to fix


@pytest.mark.parametrize("name", list(MODELS))
def test_models_round_trip_through_torch_save(name, tmp_path):
    torch.manual_seed(0)
    x, lengths = torch.randn(4, 7, 5), torch.tensor([7, 3, 5, 1])
    hp = {"n_units": 40} if name == "esn" else {}
    model = build_model(name, 5, 3, **hp).eval()
    if name == "esn":  # a fitted readout, so the restored weights are not the initial ones
        model.fit_readout([(x, lengths, torch.tensor([0, 1, 2, 0]))], ridge=1.0)
    f = tmp_path / "m.pt"
    torch.save(model.state_dict(), f)
    restored = build_model(name, 5, 3, **hp).eval()
    if name == "esn":
        restored.w0.zero_()  # the reservoir, too, must come from the file
    restored.load_state_dict(torch.load(f))
    with torch.no_grad():
        torch.testing.assert_close(restored(x, lengths), model(x, lengths))


def _space_corners(space: dict) -> list[dict]:
    "The search space's values at its bounds: each range's ends, each choice (the rest at the configured hp)."
    pts = []
    for name, spec in space.items():
        vals = (spec.get("choice") or spec.get("log")) if isinstance(spec, dict) else spec
        pts += [{name: v} for v in vals]
    return pts


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_pass_check_hyperparameters(config):
    cfg = load_config(CONFIGS / config, check_hardware=False)  # resolves `extends`
    for m in cfg.models:
        check_hyperparameters(m.kind, m.hp)
        for corner in _space_corners(m.search.space):
            model_knobs = {k: v for k, v in corner.items() if not k.startswith("training.")}  # config checks those
            check_hyperparameters(m.kind, {**m.hp, **model_knobs})


def test_baselines_import_without_the_esn():
    code = "import sys, esn_video.models.baselines; print('esn_video.models.esn' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
