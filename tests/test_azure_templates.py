"""The ARM templates in infra/arm/: checkov finds no failed check, every parameter is declared and used, and the CLI's
dry-run deploys exactly the template with exactly its parameters (caller address and SSH key in place, no secret).

checkov runs from its own environment `.venv-checkov` (its pinned dependencies clash with the project's), which
`make setup-dev` (scripts/setup.sh dev) creates.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from cli_helpers import ROOT, cli_env, run_cli

from esn_video.cloud.azure import check_parameters, unused_parameters
from esn_video.credentials import secret_reason

ARM = ROOT / "infra" / "arm"
TEMPLATES = sorted(ARM.glob("*.json"))
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq8bX0Eoq2M8cY7k7d3b5f0v1bR0pQ9m3sVq1yFQzZk tester@laptop"


def test_templates_exist():
    assert {p.name for p in TEMPLATES} >= {"storage.json", "gpu_vm.json"}


def _checkov(folder: Path) -> list[dict]:
    r = subprocess.run(
        [str(CHECKOV), "-d", str(folder), "--framework", "arm", "--output", "json", "--quiet", "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},  # offline: no guideline download from checkov's vendor
    )  # fmt: skip
    assert r.stdout.strip(), r.stderr[-2000:]
    reports = json.loads(r.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_checkov_catches_a_weakened_template(tmp_path):
    "The check is real: SSH open to the internet and password logins in a copy of the VM template are failures."
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run 'make setup-dev' (scripts/setup.sh dev creates it)"
    t = json.loads((ARM / "gpu_vm.json").read_text())
    nsg = next(r for r in t["resources"] if r["type"] == "Microsoft.Network/networkSecurityGroups")
    nsg["properties"]["securityRules"][0]["properties"]["sourceAddressPrefix"] = "*"
    vm = next(r for r in t["resources"] if r["type"] == "Microsoft.Compute/virtualMachines")
    vm["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] = False
    (tmp_path / "weak.json").write_text(json.dumps(t))
    failed = {c["check_id"] for rep in _checkov(tmp_path) for c in rep.get("results", {}).get("failed_checks", [])}
    assert {"CKV_AZURE_1", "CKV_AZURE_10"} <= failed, failed


def test_checkov_passes_every_template():
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run 'make setup-dev' (scripts/setup.sh dev creates it)"
    reports = _checkov(ARM)
    failed = [c for rep in reports for c in rep.get("results", {}).get("failed_checks", [])]
    summary = reports[0].get("summary", {}) if reports else {}
    assert not failed, [(c["check_id"], c["check_name"], c["file_path"]) for c in failed]
    assert summary.get("passed", 0) >= 15, summary  # it really checked the resources
    # every skip is written in the template, with its reason
    for rep in reports:
        for c in rep.get("results", {}).get("skipped_checks", []):
            assert len((c.get("check_result") or {}).get("suppress_comment", "")) > 30, c["check_id"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_parameter_declared_and_used(path: Path):
    t = json.loads(path.read_text())
    declared = set(t.get("parameters", {}))
    used = set(re.findall(r"parameters\('([^']+)'\)", json.dumps({k: v for k, v in t.items() if k != "parameters"})))
    # a nested deployment's inner template declares its own parameters: those count as declared there
    inner = set()
    for r in t.get("resources", []):
        if r.get("type") == "Microsoft.Resources/deployments":
            inner |= set(r["properties"]["template"].get("parameters", {}))
    assert used - declared - inner == set(), f"used but not declared: {used - declared - inner}"
    assert unused_parameters(t) == [], f"declared but not used: {unused_parameters(t)}"
    for name, spec in t["parameters"].items():
        assert spec.get("metadata", {}).get("description"), f"{path.name}: parameter {name} has no description"


def _dry_run(tmp_path: Path, *extra: str, env: dict | None = None):
    key = tmp_path / "id_ed25519.pub"
    key.write_text(KEY + "\n")
    args = ["azure", "up", "configs/tiny.yaml", "-e", "tiny-gpu", "--ssh-key", str(key), "--caller-address",
            "198.51.100.23", "--storage-account", "esnvideolab", "--ref", "0123abc", "--dry-run", *extra]  # fmt: skip
    return run_cli(args, env=env)


def test_dry_run_is_exactly_the_template_and_its_parameters(tmp_path):
    secrets = {
        "AZURE_CLIENT_SECRET": "Zq8~s3cr3tValueThatMustNeverBePrinted0123456789",
        "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0==",
    }  # fmt: skip
    env = cli_env(AZURE_CLIENT_ID="11111111-2222-3333-4444-555555555555", AZURE_TENANT_ID="t", **secrets)
    env["ESN_VIDEO_ARM_ENDPOINT"] = "https://127.0.0.1:9"  # nothing listens: a dry run must not call Azure
    r = _dry_run(tmp_path, "--spot", "--workload", "train", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    template = json.loads((ARM / "gpu_vm.json").read_text())
    assert out["properties"]["template"] == template
    params = {k: v["value"] for k, v in out["properties"]["parameters"].items()}
    assert set(params) == set(template["parameters"])
    check_parameters(template, params)
    assert params["callerAddress"] == "198.51.100.23" and params["sshPublicKey"] == KEY
    assert params["priority"] == "Spot" and params["vmSize"] == "Standard_NC4as_T4_v3"
    assert out["tags"]["project"] == "esn-video" and out["tags"]["expiry"] == params["expiresOn"]
    # no secret anywhere: the caller's secrets are absent, and nothing but the public key looks like one
    text = r.stdout + r.stderr
    for v in secrets.values():
        assert v not in text and v.split("AccountKey=")[-1] not in text
    assert secret_reason(value=text.replace(KEY, "")) is None, secret_reason(value=text.replace(KEY, ""))


def test_dry_run_of_the_mlflow_server_vm(tmp_path):
    r = _dry_run(tmp_path, "--workload", "mlflow", "--size", "Standard_B2s")
    assert r.returncode == 0, r.stderr
    p = {k: v["value"] for k, v in json.loads(r.stdout)["properties"]["parameters"].items()}
    assert p["workload"] == "mlflow" and "--mlflow-server" in p["cloudInit"] and p["mlflowPort"] == 5000


@pytest.mark.parametrize(
    "extra,says",
    [
        (["--size", "Standard_NC4"], "unknown VM size 'Standard_NC4'"),
        (["--region", "westeu"], "unknown Azure region 'westeu'"),
        (["--disk-gb", "4096"], "osDiskSizeGB=4096 is out of range 64..2048"),
        (["--budget", "0"], "budgetAmount=0 is out of range"),
        (["--caller-address", "0.0.0.0/0"], "would admit"),
        (["--set", "mlflow.tracking_uri=https://bob:hunter2@mlflow.example.org"], "refusing parameter"),
    ],
)
def test_dry_run_bad_input_is_exit_2(tmp_path, extra, says):
    r = _dry_run(tmp_path, *extra)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert says in r.stderr and r.stdout == "", r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
