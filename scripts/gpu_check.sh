#!/usr/bin/env bash
# The checks that need a GPU, in one command (under 8 minutes on one GPU): kornia's connected components on CUDA =
# the CPU labeller, a LESPS round on CUDA = the CPU round, bf16 training finite, a 2-process DDP round = one
# process, and the CUDA columns of bench_evolution, bench_models and bench_train. Without a GPU the CUDA rows read
# SKIPPED (no GPU) and the CPU halves still run (a few minutes on 2 cores). Prints one table (check, device,
# result, figures, seconds); exits 1 if any check failed. Each check's output goes to a log folder, named at the end.
#
#   scripts/gpu_check.sh                          # SIRST beside the repo (../shared/datasets/SIRST), else synthetic
#   scripts/gpu_check.sh --data-root DIR [--split X] [--images N] [--ddp-backend auto|nccl|gloo]
#
# Environment: PY (the python, default .venv/bin/python), CHECK_TIMEOUT (seconds per check, default 300),
# GPU_CHECKS (the checks to run, default all), GPU_CHECK_LOGS (the log folder, default a new temporary one).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
CHECK_TIMEOUT=${CHECK_TIMEOUT:-300}
GPU_CHECKS=${GPU_CHECKS:-"components lesps_round bf16 ddp bench_evolution bench_models bench_train"}
logs=${GPU_CHECK_LOGS:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$logs"
results="$logs/results.jsonl"
: > "$results"
start=$(date +%s)
for check in $GPU_CHECKS; do
    before=$(wc -l < "$results")
    echo "# $check ($(( $(date +%s) - start )) s)" >&2
    timeout "$CHECK_TIMEOUT" "$PY" scripts/gpu_check.py "$check" --results "$results" "$@" > "$logs/$check.log" 2>&1
    status=$?
    if [ "$(wc -l < "$results")" -eq "$before" ]; then
        # the check died before it wrote a row (a crash, a bad option or the timeout)
        tail -n 5 "$logs/$check.log" >&2
        "$PY" scripts/gpu_check.py record --results "$results" --check "$check" --status "$status"
    fi
done
echo "# logs: $logs" >&2
"$PY" scripts/gpu_check.py table --results "$results" --elapsed $(( $(date +%s) - start ))
