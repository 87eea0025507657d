# shellcheck shell=bash
# gpu_common.sh — the start every bench/gpu_*.sh shares (sourced right after
# a script's header comment, not run itself):
#   . "$(dirname "$0")/gpu_common.sh"
# strict mode (set -u -o pipefail), the repository root as the working
# folder (exit 1 when it cannot be entered), T0 (the start, epoch seconds),
# and
#   gpu_devdeps   exports PKG_CONFIG_SYSROOT_DIR=/tmp/devdeps unless set (the
#                 device's unpacked cJSON / PCRE2, .devdeps/device-deps.sh)
#   say TEXT...   echoes TEXT and appends it to $S (the script's summary)
#   left          the seconds left of BUDGET_S since T0
#   has SECTION   whether SECTION is one of $secs (the sections asked for)
#   gpu_stamp [FIELDS]  "date <UTC time> commit <short hash> <the GPUs'
#                 nvidia-smi FIELDS>" (default name,driver_version)
#   gpu_build DIR LOG TARGET...  cmake -DLMC_WERROR=${LMC_WERROR:-ON} in DIR,
#                 then make -j16 of the targets (under `timeout
#                 $GPU_MAKE_TIMEOUT` when set), all output in LOG; returns
#                 their status (the script says what a failure prints)
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
gpu_devdeps() { export PKG_CONFIG_SYSROOT_DIR=${PKG_CONFIG_SYSROOT_DIR:-/tmp/devdeps}; }
say() { echo "$*" | tee -a "$S"; }
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
has() { [[ " $secs " == *" $1 "* ]]; }
gpu_stamp() {
  echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null)" \
       "$(nvidia-smi --query-gpu="${1:-name,driver_version}" --format=csv,noheader 2>/dev/null)"
}
gpu_build() {
  local dir=$1 log=$2; shift 2
  cmake -S . -B "$dir" -DLMC_WERROR="${LMC_WERROR:-ON}" >"$log" 2>&1 &&
    ${GPU_MAKE_TIMEOUT:+timeout "$GPU_MAKE_TIMEOUT"} make -C "$dir" -j16 "$@" >>"$log" 2>&1
}
