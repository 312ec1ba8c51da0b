#!/usr/bin/env bash
# The job of an esn-video Azure VM (started at every boot by the systemd unit that cloud-init writes; see
# infra/arm/gpu_vm.json and `esn-video azure up`). It can also be run by hand, or by the tests against Azurite.
#
#   1. install the project as the README says (scripts/setup.sh azure)            skipped by --skip-install
#   2. run `esn-video run CONFIG` (papermill) with the live record sync to Blob (storage.sync=true) and the
#      processed-data caches pulled from and pushed to Blob (storage.caches=both); the dataset comes from Blob when
#      the config's dataset.root is an az:// location (or --dataset az://C/PREFIX: a UCF101-layout tree there).
#      After an eviction (a `started` marker without `done`), the run is resumed from the last synced checkpoint
#      (--resume).
#   3. upload the executed notebook, the report and this log to experiment-artifacts/EXPERIMENT/ (the config's
#      experiment: the live sync puts the run folders there too)
#   4. deallocate this VM (or delete its resource group when ESN_VIDEO_JOB_DELETE_GROUP=1), through its managed
#      identity and the instance metadata service                               skipped by --no-deallocate
#      (a job already done, with a `done` marker, goes straight to this step)
#
# usage: scripts/azure/vm_job.sh [--from-env] [--config CONFIG] [--experiment NAME] [--dataset az://C/PREFIX]
#                                [--set KEY=VALUE]... [--resume] [--skip-install] [--no-deallocate]
#                                [--state-dir DIR] [--log FILE]
#        scripts/azure/vm_job.sh --mlflow-server [--port 5000] [--host 0.0.0.0]   (the MLflow server VM)
#
# Environment: ESN_VIDEO_STORAGE_ACCOUNT (the VM: managed identity) or AZURE_STORAGE_CONNECTION_STRING (Azurite, a
# key of your own); --from-env reads ESN_VIDEO_JOB_CONFIG, ESN_VIDEO_JOB_EXPERIMENT, ESN_VIDEO_JOB_DELETE_GROUP and
# the extra arguments, one per line, of ${ESN_VIDEO_JOB_ARGS:-/etc/esn-video/job.args}.
# Exit status: 0 when the job finished (or was already done), 1 when it failed (what it made is still uploaded and
# the VM still deallocated, so a failed job costs nothing; the next start retries with --resume), 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"

config="" experiment="" dataset="" resume=0 install=1 deallocate=1 mlflow=0 port=5000 host=0.0.0.0
state="${ESN_VIDEO_JOB_STATE:-/var/lib/esn-video}" log="${ESN_VIDEO_JOB_LOG:-/var/log/esn-video/job.log}"
sets=()
exec 3>&2   # the caller's stderr: usage errors go there (and into the log once it is open)
logging=0
usage() { echo "vm_job.sh: $*" >&3; [ "$logging" = 1 ] && echo "vm_job.sh: $*"; exit 2; }
parse() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --from-env) config="${ESN_VIDEO_JOB_CONFIG:-}"; experiment="${ESN_VIDEO_JOB_EXPERIMENT:-}"
                  args_file="${ESN_VIDEO_JOB_ARGS:-/etc/esn-video/job.args}"
                  if [ -f "$args_file" ]; then mapfile -t extra < <(grep -v '^[[:space:]]*$' "$args_file"); parse "${extra[@]}"; fi ;;
      --config) config="${2:?--config needs a value}"; shift ;;
      --experiment) experiment="${2:?--experiment needs a value}"; shift ;;
      --dataset) dataset="${2:?--dataset needs az://CONTAINER/PREFIX}"; shift ;;
      --set) sets+=(--set "${2:?--set needs KEY=VALUE}"); shift ;;
      --resume) resume=1 ;;
      --skip-install) install=0 ;;
      --no-deallocate) deallocate=0 ;;
      --state-dir) state="${2:?}"; shift ;;
      --log) log="${2:?}"; shift ;;
      --mlflow-server) mlflow=1 ;;
      --port) port="${2:?}"; shift ;;
      --host) host="${2:?}"; shift ;;
      -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
      *) usage "unknown argument '$1' (see --help)" ;;
    esac
    shift
  done
}
parse "$@"

mkdir -p "$state" "$(dirname "$log")" 2>/dev/null || true
if ! touch "$log" 2>/dev/null; then log="$state/job.log"; fi
exec > >(tee -a "$log") 2>&1
logging=1
say() { echo "[vm_job $(date -u +%H:%M:%S)] $*"; }

if [ "$install" = 1 ]; then
  say "installing the project (scripts/setup.sh azure)"
  bash scripts/setup.sh azure || { say "install failed"; exit 1; }
fi
VENV="${VENV:-$ROOT/.venv}"
ESN="$VENV/bin/esn-video"
[ -x "$ESN" ] || usage "$ESN not found: install first (drop --skip-install)"

if [ "$mlflow" = 1 ]; then
  # the MLflow server VM (workload=mlflow): the project's server, its database on this disk, artifacts in Blob
  # (through the managed identity, or the account of AZURE_STORAGE_CONNECTION_STRING); the network security group
  # admits the caller's address only, so any Host header is accepted
  mkdir -p "$state"
  dest_args=()
  if [ -z "${AZURE_STORAGE_CONNECTION_STRING:-}" ]; then
    acct="${ESN_VIDEO_STORAGE_ACCOUNT:-}"
    [ -n "$acct" ] || usage "the MLflow server needs ESN_VIDEO_STORAGE_ACCOUNT (or AZURE_STORAGE_CONNECTION_STRING)"
    dest_args=(--artifacts-destination "wasbs://experiment-artifacts@$acct.blob.core.windows.net/mlflow")
  fi
  "$ESN" storage create >/dev/null || say "could not create the containers (they may exist already)"
  say "MLflow server on $host:$port"
  exec "$ESN" mlflow-server --host "$host" --port "$port" --backend-store-uri "sqlite:///$state/mlflow.db" \
    "${dest_args[@]}" --allowed-hosts '*' --log "$state/mlflow-server.log"
fi

[ -n "$config" ] || usage "no config: pass --config CONFIG (or --from-env with ESN_VIDEO_JOB_CONFIG)"
[ -f "$config" ] || usage "config $config not found in $ROOT"
if [ -z "${AZURE_STORAGE_CONNECTION_STRING:-}" ] && [ -z "${ESN_VIDEO_STORAGE_ACCOUNT:-}" ]; then
  usage "no storage target: set ESN_VIDEO_STORAGE_ACCOUNT (managed identity) or AZURE_STORAGE_CONNECTION_STRING"
fi
# the config's experiment and its folder (where the report goes); a config that does not load stops here
overrides=("${sets[@]}")
[ -n "$dataset" ] && overrides+=(--set dataset.kind=ucf101 --set "dataset.root=$dataset")
where="$("$VENV/bin/python" -c 'import sys
from esn_video.config import load_config
from esn_video.records import experiment_dir
a = sys.argv[2:]
cfg = load_config(sys.argv[1], [v for k, v in zip(a[::2], a[1::2])])
print(cfg.experiment)
print(experiment_dir(cfg))' "$config" "${overrides[@]}")" || usage "config $config does not load (see above)"
cfg_experiment="$(sed -n 1p <<<"$where")" expdir="$(sed -n 2p <<<"$where")"
[ -n "$experiment" ] || experiment="$cfg_experiment"
# the run folders are synced to experiment-artifacts/<the config's experiment>/<run>/: the rest goes beside them
dest="az://experiment-artifacts/$cfg_experiment"
if [ -f "$state/done" ]; then
  say "job $experiment already done ($(cat "$state/done")); nothing to run"
  job=0
else
  [ -f "$state/started" ] && resume=1   # started before and not done: evicted or stopped, so continue
  date -u +%FT%TZ > "$state/started"
  run=(run "$config" --set storage.sync=true --set storage.caches=both --output-dir "$state/executed" "${overrides[@]}")
  [ "$resume" = 1 ] && run+=(--resume)
  "$ESN" storage create >/dev/null || say "could not create the containers (they may exist already)"
  tb=""
  if [ -x "$VENV/bin/tensorboard" ]; then  # for `esn-video azure tensorboard` (SSH tunnel to the VM's loopback)
    "$VENV/bin/tensorboard" --logdir "$expdir" --host 127.0.0.1 --port 6006 >/dev/null 2>&1 &
    tb=$!
  fi
  say "esn-video ${run[*]}"
  "$ESN" "${run[@]}"
  job=$?
  [ "$job" = 0 ] || job=1
  [ -n "$tb" ] && kill "$tb" 2>/dev/null
  if [ "$job" = 0 ]; then date -u +%FT%TZ > "$state/done"; say "job finished"; else say "job failed (exit $job)"; fi

  if [ -d "$state/executed" ]; then "$ESN" storage upload "$state/executed" "$dest/papermill_runs" || job=1; fi
  report="$expdir/report"
  if [ -n "$report" ] && [ -d "$report" ]; then "$ESN" storage upload "$report" "$dest/report" || job=1; fi
  mkdir -p "$state/log" && cp "$log" "$state/log/job.log" && "$ESN" storage upload "$state/log" "$dest/log" >/dev/null 2>&1 || true
fi

if [ "$deallocate" = 1 ]; then
  # the VM's managed identity: a token from the instance metadata service, then Resource Manager's REST API
  # (ESN_VIDEO_IMDS_ENDPOINT and ESN_VIDEO_ARM_ENDPOINT point both elsewhere for the tests' stand-in)
  imds="${ESN_VIDEO_IMDS_ENDPOINT:-http://169.254.169.254}/metadata"
  token="$(curl -sf -H Metadata:true "$imds/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/" \
           | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
  meta="$(curl -sf -H Metadata:true "$imds/instance/compute?api-version=2021-02-01&format=json")"
  field() { printf %s "$meta" | "$VENV/bin/python" -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
  sub="$(field subscriptionId)" rg="$(field resourceGroupName)" vm="$(field name)"
  arm="${ESN_VIDEO_ARM_ENDPOINT:-https://management.azure.com}/subscriptions/$sub/resourceGroups/$rg"
  if [ "${ESN_VIDEO_JOB_DELETE_GROUP:-0}" = 1 ]; then
    say "deleting resource group $rg"
    curl -sf -X DELETE -H "Authorization: Bearer $token" "$arm?api-version=2021-04-01" -o /dev/null
  else
    say "deallocating VM $vm"
    curl -sf -X POST -H "Authorization: Bearer $token" -H "Content-Length: 0" \
      "$arm/providers/Microsoft.Compute/virtualMachines/$vm/deallocate?api-version=2024-03-01" -o /dev/null
  fi || say "could not deallocate (the daily auto-shutdown still stops the VM)"
fi
exit "$job"
