"""`esn-video azure ...` as a user runs it, against the loopback ARM stand-in (esn_video.cloud.arm_standin).

This is a stand-in, not Azure: it answers the Resource Manager calls the commands make and records them, so these
tests assert what the commands send (the deployment's template and parameters, the tag filter of cleanup, the groups
deleted) and that bad input creates or deletes nothing. The credential is the real AzureCliCredential, which runs an
`az` stand-in script on PATH; `ssh` is a stand-in script that records its arguments. What only a real subscription
shows (Azure accepting the deployment, quota, the GPU driver, eviction) is listed in nbs/65_cloud.azure.ipynb.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli

from esn_video.cloud.arm_standin import ArmStandIn
from esn_video.cloud.azure import fake_az

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq8bX0Eoq2M8cY7k7d3b5f0v1bR0pQ9m3sVq1yFQzZk tester@laptop"
MUTATING = ("PUT", "POST", "DELETE", "PATCH")


def _env(arm: ArmStandIn, tmp: Path, **az_kw) -> dict:
    bin_ = tmp / "bin"
    fake_az(bin_, **az_kw)
    ssh = bin_ / "ssh"
    ssh.write_text(
        f'#!/bin/sh\n# ssh stand-in (tests only): records its arguments\nprintf "%s\\n" "$@" > {tmp}/ssh-args\n'
    )
    ssh.chmod(0o755)
    env = cli_env(
        PATH=f"{bin_}:{os.environ['PATH']}", REQUESTS_CA_BUNDLE=str(arm.cert), ESN_VIDEO_ARM_ENDPOINT=arm.endpoint,
        AZURE_SUBSCRIPTION_ID=arm.state.subscription, HOME=str(tmp),
    )  # fmt: skip
    for k in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"):
        env.pop(k, None)
    (tmp / ".ssh").mkdir(exist_ok=True)
    (tmp / ".ssh" / "id_ed25519.pub").write_text(KEY + "\n")
    return env


@pytest.fixture
def arm():
    with ArmStandIn() as a:
        yield a


def _mutations(arm: ArmStandIn) -> list[str]:
    return [f"{r.method} {r.path}" for r in arm.state.requests if r.method in MUTATING]


UP = ["azure", "up", "configs/tiny.yaml", "-e", "tiny", "--caller-address", "198.51.100.23", "--storage-account",
      "esnvideolab", "--ref", "0123abc", "--repo", "https://example.org/esn-video.git"]  # fmt: skip


def test_lifecycle_up_status_run_tensorboard_logs_cost_down(arm, tmp_path):
    env = _env(arm, tmp_path)
    r = run_cli([*UP, "--spot", "--hours", "48"], env=env)
    assert r.returncode == 0, r.stderr
    assert "203.0.113.7" in r.stdout
    (put,) = arm.requests_to("PUT", "/deployments/esn-video-train")
    template = json.loads((Path(__file__).parent.parent / "infra/arm/gpu_vm.json").read_text())
    assert put.body["properties"]["template"] == template
    params = {k: v["value"] for k, v in put.body["properties"]["parameters"].items()}
    assert set(params) == set(template["parameters"])
    assert (params["callerAddress"], params["sshPublicKey"], params["priority"]) == ("198.51.100.23", KEY, "Spot")
    assert "git, clone, https://example.org/esn-video.git" in params["cloudInit"]
    assert {r.token for r in arm.state.requests} == {"test-token"}
    group = arm.state.groups["esn-video-tiny"]["tags"]
    assert group["project"] == "esn-video" and group["experiment"] == "tiny" and group["expiry"] == params["expiresOn"]

    r = run_cli(["azure", "status", "-e", "tiny"], env=env)
    assert r.returncode == 0 and "running" in r.stdout and "Spot" in r.stdout, r.stdout + r.stderr

    r = run_cli(["azure", "tensorboard", "-e", "tiny", "--port", "16006"], env=env)
    assert r.returncode == 0, r.stderr
    assert "http://127.0.0.1:16006/" in r.stdout
    args = (tmp_path / "ssh-args").read_text().split("\n")
    assert args[:3] == ["-N", "-L", "127.0.0.1:16006:127.0.0.1:6006"] and "esn@203.0.113.7" in args

    r = run_cli(["azure", "logs", "-e", "tiny", "-n", "20", "-f"], env=env)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "ssh-args").read_text().split()
    assert args[-5:] == ["tail", "-n", "20", "-F", "/var/log/esn-video/job.log"]

    r = run_cli(["azure", "down", "-e", "tiny"], env=env)
    assert r.returncode == 0 and arm.state.vms[("esn-video-tiny", "esn-tiny")]["power"] == "deallocated"
    r = run_cli(
        ["azure", "run", "configs/tiny.yaml", "-e", "tiny", "--resume", "--storage-account", "esnvideolab"], env=env
    )
    assert r.returncode == 0, r.stderr
    assert arm.state.vms[("esn-video-tiny", "esn-tiny")]["power"] == "running"
    (cmd,) = arm.requests_to("POST", "/runcommand")
    assert cmd.body["commandId"] == "RunShellScript" and "--resume" in cmd.body["script"][1]

    arm.state.budgets[("esn-video-tiny", "esn-video-tiny")]["spend"] = 31.0
    r = run_cli(["azure", "cost", "-e", "tiny"], env=env)
    assert r.returncode == 0 and "31.00 USD of 100.00" in r.stdout, r.stdout + r.stderr

    r = run_cli(["azure", "down", "-e", "tiny", "--delete", "--dry-run"], env=env)
    assert r.returncode == 0 and "esn-video-tiny" in arm.state.groups
    r = run_cli(["azure", "down", "-e", "tiny", "--delete"], env=env)
    assert r.returncode == 0 and "esn-video-tiny" not in arm.state.groups


def test_cleanup_deletes_only_expired_project_groups(arm, tmp_path):
    env = _env(arm, tmp_path)
    arm.state.add_group("esn-video-old", {"project": "esn-video", "expiry": "2026-01-01"})
    arm.state.add_group("esn-video-live", {"project": "esn-video", "expiry": "2099-01-01"})
    arm.state.add_group("esn-video-untimed", {"project": "esn-video"})
    arm.state.add_group("payroll", {"expiry": "2000-01-01"})
    r = run_cli(["azure", "cleanup", "--dry-run"], env=env)
    assert r.returncode == 0 and "would delete esn-video-old" in r.stdout and _mutations(arm) == []
    r = run_cli(["azure", "cleanup"], env=env)
    assert r.returncode == 0, r.stderr
    assert all(
        q.query.get("$filter") == "tagName eq 'project' and tagValue eq 'esn-video'"
        for q in arm.requests_to("GET", "/resourcegroups")
        if q.path.lower().endswith("/resourcegroups")
    )
    assert [m.rsplit("/", 1)[1] for m in _mutations(arm)] == ["esn-video-old"]
    assert sorted(arm.state.groups) == ["esn-video-live", "esn-video-untimed", "payroll"]


def test_cleanup_refuses_a_listing_with_untagged_groups(tmp_path):
    with ArmStandIn(ignore_filter=True) as arm:  # answers as if the tag filter had been ignored
        env = _env(arm, tmp_path)
        arm.state.add_group("esn-video-old", {"project": "esn-video", "expiry": "2026-01-01"})
        arm.state.add_group("payroll", {"expiry": "2000-01-01"})
        r = run_cli(["azure", "cleanup"], env=env)
        assert r.returncode == 2 and "payroll" in r.stderr and "refusing to delete anything" in r.stderr, r.stderr
        assert _mutations(arm) == [] and sorted(arm.state.groups) == ["esn-video-old", "payroll"]


def test_no_credential_expired_credential_and_missing_permission_are_exit_2(arm, tmp_path):
    env = _env(arm, tmp_path)
    (tmp_path / "bin" / "az").unlink()
    env["PATH"] = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    r = run_cli(UP, env=env)
    assert r.returncode == 2 and "no Azure credential" in r.stderr, r.stderr

    env = _env(arm, tmp_path, fail="ERROR: Please run 'az login' to setup account.")
    r = run_cli(["azure", "check", "-e", "tiny"], env=env)
    assert r.returncode == 2 and "not usable" in r.stderr and "az login" in r.stderr, r.stderr

    env = _env(arm, tmp_path, token="old", expires_on=1_000)
    r = run_cli(UP, env=env)
    assert r.returncode == 2 and "expired" in r.stderr, r.stderr

    # a token Azure refuses though it looks valid locally: ARM's 401 ExpiredAuthenticationToken
    arm.state.expired_tokens.add("stale")
    env = _env(arm, tmp_path, token="stale")
    r = run_cli(UP, env=env)
    assert r.returncode == 2 and "ExpiredAuthenticationToken" in r.stderr, r.stderr

    env = _env(arm, tmp_path)
    arm.state.add_group("esn-video-tiny", {"project": "esn-video", "expiry": "2099-01-01"})
    arm.state.permissions["esn-video-tiny"] = [{"actions": ["*"], "notActions": ["Microsoft.Authorization/*/Write"]}]
    r = run_cli(["azure", "check", "-e", "tiny"], env=env)
    assert r.returncode == 2 and "MISSING Microsoft.Authorization/roleAssignments/write" in r.stdout, r.stdout
    r = run_cli(UP, env=env)
    assert r.returncode == 2 and "roleAssignments/write" in r.stderr, r.stderr
    assert _mutations(arm) == []


def test_up_refuses_a_group_that_is_not_the_projects(arm, tmp_path):
    env = _env(arm, tmp_path)
    arm.state.add_group("esn-video-tiny", {"owner": "someone"})
    r = run_cli(UP, env=env)
    assert r.returncode == 2 and "without the tag project=esn-video" in r.stderr, r.stderr
    assert _mutations(arm) == [] and arm.state.groups["esn-video-tiny"]["tags"] == {"owner": "someone"}


def test_dry_runs_change_nothing(arm, tmp_path):
    env = _env(arm, tmp_path)
    arm.state.add_group("esn-video-tiny", {"project": "esn-video", "expiry": "2000-01-01"})
    arm.state.vms[("esn-video-tiny", "esn-tiny")] = {
        "power": "running",
        "size": "Standard_NC4as_T4_v3",
        "priority": "Regular",
    }
    r = run_cli(
        [
            "azure",
            "run",
            "configs/tiny.yaml",
            "-e",
            "tiny",
            "--storage-account",
            "esnvideolab",
            "--dry-run",
            "--set",
            "training.epochs=2",
        ],
        env=env,
    )
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)["runCommand"]
    assert body["commandId"] == "RunShellScript" and "training.epochs=2" in body["script"][1]
    for args in (
        ["down", "-e", "tiny", "--dry-run"],
        ["down", "-e", "tiny", "--delete", "--dry-run"],
        ["cleanup", "--dry-run"],
    ):
        r = run_cli(["azure", *args], env=env)
        assert r.returncode == 0, r.stderr
    assert _mutations(arm) == [] and arm.state.vms[("esn-video-tiny", "esn-tiny")]["power"] == "running"
    assert "esn-video-tiny" in arm.state.groups


def test_a_failed_deployment_says_the_group_stays(arm, tmp_path):
    env = _env(arm, tmp_path)
    r = run_cli([*UP, "--subscription", "11111111-1111-1111-1111-111111111111"], env=env)  # a subscription ARM lacks
    assert r.returncode == 2 and "SubscriptionNotFound" in r.stderr and arm.state.groups == {}, r.stderr
    arm.state.deployment_error = (
        "QuotaExceeded",
        "Operation results in exceeding approved standardNCASv3_T4Family Cores quota",
    )
    r = run_cli(UP, env=env)
    assert r.returncode == 1 and "QuotaExceeded" in r.stderr and "stays" in r.stderr, r.stderr
    assert arm.state.groups["esn-video-tiny"]["tags"]["project"] == "esn-video"  # kept, tagged, with its expiry
