#!/usr/bin/env bash
# Everything GPU-side in one call, for a lent GPU machine (see /work/.library/device/README.md),
# sized to end within about 8 minutes: nvidia-smi, `python3 -m refimpl selfcheck` (its CUDA
# rows), the CUDA tests, benchmarks/gpu_resampler.py with its defaults, then
# benchmarks/gpu_profile.py (eager only: where the time goes, kernel by kernel). Each stage
# runs under its own time limit (`timeout`), so that a slow test stage still leaves the
# benchmark its time; the benchmark gets what is left of TOTAL_S after PROFILE_S (at least
# BENCH_MIN_S), and no compile starts in its last 30%. Every stage's output, and a line with its exit status and seconds,
# goes to $OUT/gpu_check.log (default /tmp/gpu-check). Exit status 1 if any stage failed.
#
# The GPU image has torch, numpy, numba, pytest, hypothesis, einops and transformers, but not
# flamingo-pytorch or einops-exts (pure-Python wheels, which the benchmark and the interop
# tests need). Before the call, here, once, in the checkout the device tool sends:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl flamingo-pytorch==0.1.2 einops-exts==0.0.4
# then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#
# On a machine without a GPU, `GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh` checks the script
# itself: it skips nvidia-smi, runs the selfcheck (CPU rows only), only collects the tests
# (pytest --collect-only: the files exist and import) and runs the benchmark with --smoke.
set -uo pipefail
OUT="${OUT:-/tmp/gpu-check}"
SMOKE="${GPU_CHECK_SMOKE:-0}"
TOTAL_S="${TOTAL_S:-470}"
PROFILE_S="${PROFILE_S:-45}"
BENCH_MIN_S="${BENCH_MIN_S:-240}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
exec > >(tee "$OUT/gpu_check.log") 2>&1
status=0

# stage NAME LIMIT_S COMMAND...: run COMMAND under a limit of LIMIT_S seconds; log its status and time
stage() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "=== $name (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "($name stopped at its ${limit} s limit)"; fi
  echo "=== $name: exit $rc, $((SECONDS - start)) s (total $SECONDS s)"
  [ "$rc" -eq 0 ] || status=1
}

# test_torch_compile.py: only its CUDA tests (its CPU tests compile with inductor for minutes)
TESTS=(tests/test_torch_port.py tests/test_torch_family.py tests/test_selfcheck.py tests/test_interop.py
  tests/test_torch_compile.py::test_compiled_module_on_cuda_is_close_to_the_float64_reference
  tests/test_torch_compile.py::test_cuda_graph_captures_the_module_and_replays_a_spoiled_mask_as_nan)

if [ "$SMOKE" = 1 ]; then
  echo "GPU_CHECK_SMOKE=1: a check of this script on the CPU, not a GPU result"
  stage selfcheck 120 python3 -m refimpl selfcheck
  stage tests 120 python3 -m pytest -q -p no:cacheprovider --collect-only "${TESTS[@]}"
  BENCH=(--smoke --runs 1)
else
  stage nvidia-smi 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  echo "C compiler for Triton's launchers: $(command -v gcc || command -v cc || echo none)"
  stage selfcheck 60 python3 -m refimpl selfcheck
  stage tests 150 python3 -m pytest -q -p no:cacheprovider "${TESTS[@]}" -rs
  BENCH=()
fi
bench_s=$((TOTAL_S - PROFILE_S - SECONDS))
[ "$bench_s" -ge "$BENCH_MIN_S" ] || bench_s=$BENCH_MIN_S
stage benchmark "$bench_s" bash -c 'cd benchmarks && exec python3 gpu_resampler.py "$@"' gpu_resampler.py \
  --compile-deadline-s $((bench_s * 7 / 10)) "${BENCH[@]}"
PROFILE=(--eager-only)
[ "$SMOKE" = 1 ] && PROFILE+=(--smoke)
stage profile "$PROFILE_S" bash -c 'cd benchmarks && exec python3 gpu_profile.py "$@"' gpu_profile.py "${PROFILE[@]}"
echo "gpu_check: exit $status, $SECONDS s in all"
exit $status
