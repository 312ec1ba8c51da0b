"""scripts/azure/vm_job.sh, the Azure VM's job.

Its self-deallocation (and group deletion) runs here against the loopback ARM stand-in, which also plays the VM's
instance metadata service (a managed-identity token and the VM's subscription, group and name): the script's own
curl calls are pointed at it by ESN_VIDEO_IMDS_ENDPOINT / ESN_VIDEO_ARM_ENDPOINT and trust its certificate through
CURL_CA_BUNDLE. A job that is already done (its `done` marker) goes straight to that step, so these tests need no
storage; the end-to-end run of a config against Azurite is in tests/test_azure_vm_job_e2e.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_helpers import ROOT, cli_env

from esn_video.cloud.arm_standin import ArmStandIn

SCRIPT = ROOT / "scripts" / "azure" / "vm_job.sh"


def _job(arm: ArmStandIn, state: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    e = cli_env(ESN_VIDEO_IMDS_ENDPOINT=arm.endpoint, ESN_VIDEO_ARM_ENDPOINT=arm.endpoint, CURL_CA_BUNDLE=str(arm.cert))
    e.update({"ESN_VIDEO_STORAGE_ACCOUNT": "esnvideolab", **env})
    cmd = [
        str(SCRIPT),
        "--skip-install",
        "--config",
        "configs/tiny.yaml",
        "--state-dir",
        str(state),
        "--log",
        str(state / "job.log"),
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=e, timeout=120)


@pytest.fixture
def vm(tmp_path):
    with ArmStandIn() as arm:
        arm.state.add_group("esn-video-tiny", {"project": "esn-video"})
        arm.state.vms[("esn-video-tiny", "esn-tiny")] = {
            "power": "running",
            "size": "Standard_NC4as_T4_v3",
            "priority": "Spot",
        }
        arm.state.imds_vm = ("esn-video-tiny", "esn-tiny")
        state = tmp_path / "state"
        state.mkdir()
        (state / "done").write_text("2026-11-30T21:00:00Z\n")
        yield arm, state


def test_done_job_deallocates_its_vm_through_the_managed_identity(vm):
    arm, state = vm
    r = _job(arm, state)
    assert r.returncode == 0, r.stdout + r.stderr
    assert arm.state.vms[("esn-video-tiny", "esn-tiny")]["power"] == "deallocated"
    (post,) = arm.requests_to("POST", "/virtualmachines/esn-tiny/deallocate")
    assert post.token == "test-token"  # the token the metadata service handed out
    assert "already done" in (state / "job.log").read_text()
    assert [r.path for r in arm.state.requests if r.method == "DELETE"] == []


def test_delete_group_when_asked(vm):
    arm, state = vm
    r = _job(arm, state, ESN_VIDEO_JOB_DELETE_GROUP="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "esn-video-tiny" not in arm.state.groups
    assert arm.requests_to("POST", "/deallocate") == []


def test_no_deallocate_flag_touches_nothing(vm):
    arm, state = vm
    r = _job(arm, state, "--no-deallocate")
    assert r.returncode == 0, r.stdout + r.stderr
    assert arm.state.requests == [] and arm.state.vms[("esn-video-tiny", "esn-tiny")]["power"] == "running"


@pytest.mark.parametrize(
    "args,env,says",
    [
        (["--bogus"], {}, "unknown argument '--bogus'"),
        (["--config", "configs/nope.yaml"], {}, "config configs/nope.yaml not found"),
        ([], {"ESN_VIDEO_STORAGE_ACCOUNT": ""}, "no storage target"),
    ],
)
def test_bad_usage_is_exit_2(vm, args, env, says):
    arm, state = vm
    r = _job(arm, state, *args, **env)
    assert r.returncode == 2 and says in r.stderr, (r.returncode, r.stderr)
    assert arm.state.requests == []
