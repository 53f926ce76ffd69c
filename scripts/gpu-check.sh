#!/usr/bin/env bash
# make gpu-check: the GPU path on one CUDA GPU, at most about 8 minutes, nothing downloaded.
#   1. the CUDA tests (block trainer, module engine and NTK recorder equal to the CPU in float64; GPU workers);
#   2. the trainer bench on CUDA: block trainer, torch.func recipe, recipe + torch.compile, per-seed loop
#      (seconds, % of the fp32 peak and of the kernel floor), and the S = 1000, N = 4096 block per step kernel
#      (torch's, one pass) and precision against the roofline floor, with its fixed cost per block (the scaling
#      table: bench_trainer.py --device cuda --table-only);
#   3. a paper-budget slice: the shallow paper protocol on mnist1d, N = 1000, 10^5 steps per run, timed;
#   4. precision = "tf32" against float64 and exact float32 (deviation beside the seed spread, speed).
# Python: $PYTHON if set, else the first of .venv/bin/python and python3 whose torch sees a GPU (the set-up's
# .venv holds the CPU build of torch; a GPU machine's own torch with CUDA runs the repository in place).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
sees_gpu() { "$1" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
if [ -z "${PYTHON:-}" ]; then
    for candidate in .venv/bin/python python3; do
        if command -v "$candidate" >/dev/null && sees_gpu "$candidate"; then PYTHON=$candidate; break; fi
    done
fi
if [ -z "${PYTHON:-}" ] || ! sees_gpu "$PYTHON"; then
    echo "make gpu-check needs a CUDA GPU and a torch built with CUDA; none seen here (set PYTHON=... to choose one)." >&2
    exit 2
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(), '|', torch.cuda.device_count(), 'GPU(s)')"
start=$(date +%s)
echo "== 1. CUDA tests"
timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_trainer.py tests/test_factory.py tests/test_gpus.py tests/test_onepass.py -k "cuda or gpu"
echo "== 2. trainer bench on CUDA"
timeout 240 "$PYTHON" benchmarks/bench_trainer.py --device cuda --repeats 2 --no-table
echo "== 3. paper-budget slice (benchmarks/gpu_paper_slice.toml)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
t0=$(date +%s)
timeout 240 "$PYTHON" -m ensemble_stats.cli run benchmarks/gpu_paper_slice.toml --store "$out/slice.zarr" --gpus 1 --no-progress
"$PYTHON" - "$out/slice.zarr" "$(( $(date +%s) - t0 ))" <<'PY'
import sys
import ensemble_stats as es
ds = es.open_ensemble(sys.argv[1])
acc = ds.accuracy.isel(time=-1).mean("seed").compute()
steps = int(ds.step.max())
print(f"slice: {steps:,} steps per run, {ds.sizes['gamma'] * ds.sizes['seed']} runs, {sys.argv[2]} s in all "
      f"(store creation and records included); final test accuracy by gamma: "
      + ", ".join(f"{float(g):g}: {float(a):.3f}" for g, a in zip(ds.gamma.values, acc.squeeze().values)))
PY
echo "== 4. precision: tf32 against float64"
timeout 90 "$PYTHON" benchmarks/bench_precision.py --device cuda --seeds 16 --width 1024 --steps 1000
echo "gpu-check done in $(( $(date +%s) - start )) s"
