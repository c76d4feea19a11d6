#!/usr/bin/env bash
# Everything GPU-side in one call, for a lent GPU machine (see /work/.library/device/README.md):
# the CUDA tests, the selfcheck with CUDA rows, and the GPU benchmark; all output to $OUT.
#
# The GPU image has torch, numpy, numba, pytest, hypothesis, einops and transformers, but not
# flamingo-pytorch or einops-exts (pure-Python wheels). Before the call, here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl flamingo-pytorch==0.1.2 einops-exts==0.0.4
# then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -uo pipefail
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
exec > >(tee "$OUT/gpu_check.log") 2>&1
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m refimpl selfcheck || status=1
python3 -m pytest -q -p no:cacheprovider tests/test_torch_port.py tests/test_selfcheck.py tests/test_interop.py -rs || status=1
(cd benchmarks && python3 gpu_resampler.py) || status=1
echo "gpu_check: exit $status"
exit $status
