#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (a lent GPU machine's time is short):
#   1. tests/gpu: every fit method and every answering command on CUDA against the CPU;
#   2. benchmarks/fit.py --device cuda on resnet18 and All-CNN-C, uncert beside its peers.
# Run from the repository root: `bash benchmarks/gpu_check.sh`. Logs go to $OUT (default /tmp/gpu-check).
# Libraries missing on the machine may be carried as wheels in .whl/ (installed into /tmp/site first).
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/machine.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/machine.txt"
timeout "${GPU_TEST_SECONDS:-220}" python3 -m pytest -q -p no:cacheprovider -rfE tests/gpu 2>&1 | tee "$OUT/gpu_tests.log"
peers="uncert diag exact,backpack DiagGGNExact,uncert kfac exact,curvlinops KFAC exact,uncert kfac mc,curvlinops KFAC mc"
timeout "${GPU_BENCH_SECONDS:-130}" python3 benchmarks/fit.py --device cuda --model allcnn --batch-size 32 --n 512 --repeat 2 \
    --only "$peers" 2>&1 | tee "$OUT/fit_allcnn_cuda.md"
timeout "${GPU_BENCH_SECONDS:-120}" python3 benchmarks/fit.py --device cuda --model resnet18 --batch-size 32 --n 512 --repeat 2 \
    --only "uncert diag exact,uncert diag mc,uncert kfac exact,uncert kfac mc,uncert kfac empirical" 2>&1 | tee "$OUT/fit_resnet18_cuda.md"
