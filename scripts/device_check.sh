#!/usr/bin/env bash
# The GPU checks of the sCT data path in one run (issue 18): training throughput (bare network vs the real
# loop with device-side crops, crops/s, peak memory) for train.json's default and the docs' GPU recipe, GPU
# utilisation during a short bundle training run, and whole-volume inference split by stage.
#
#   scripts/device_check.sh [OUT]        (DEVICE=cpu SHAPE="96 96 64" ITERATIONS=5 for a smoke test on a CPU)
#
# Everything it prints also goes to OUT (default runs/device_check-<time>). Wheels that the machine lacks can be
# carried in .whl/ (see the device tool's notes); they are installed first when present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/device_check-$(date +%Y%m%d-%H%M%S)}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-160 192 112}
ITERATIONS=${ITERATIONS:-60}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/device_check.log") 2>&1

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

echo "== training throughput: bare network vs real loop (device-side crops), L1 recipe, three planes"
"$PYTHON" -m scripts.benchmark_training --device "$DEVICE" --configs default gpu --iterations "$ITERATIONS" \
    --phantom-shape $SHAPE

echo "== a short bundle training run (docs' GPU recipe) with GPU utilisation sampled every second"
"$PYTHON" -c "from pipeline.data.phantoms.head import write_phantom_dataset
write_phantom_dataset('$OUT/phantoms', n=7, size=tuple(int(n) for n in '$SHAPE'.split()))"
"$PYTHON" -m scripts.make_manifest --root "$OUT/phantoms" --out "$OUT/manifest.csv" --val 0.15 --test 0.15
if command -v nvidia-smi >/dev/null && [ "$DEVICE" != cpu ]; then
    nvidia-smi dmon -s u -d 1 > "$OUT/dmon.txt" 2>&1 &
    DMON=$!
fi
start=$(date +%s.%N)
"$PYTHON" -m monai.bundle run --config_file bundles/mri_to_ct/configs/train.json --manifest "$OUT/manifest.csv" \
    --output_dir "$OUT/train" --batch_size 8 --samples_per_volume 4 --epochs 3 --epoch_length "$ITERATIONS" \
    --val_interval 3 2>&1 | grep -E "INFO - Epoch\[[0-9]+\] Complete|val_mae_hu|error" | tail -8
echo "bundle training wall time $("$PYTHON" -c "import time; print(round(time.time() - $start, 1))") s ($((3 * ITERATIONS)) iterations of 32 crops + 1 validation; the device train.json picks: CUDA when present)"
if [ -n "${DMON:-}" ]; then
    kill "$DMON"
    awk '$1 !~ /#/ && NF > 2 {n++; s += $2} END {if (n) printf "GPU busy (SM %%) mean %.1f over %d samples\n", s / n, n}' "$OUT/dmon.txt"
fi

echo "== whole-volume inference, three planes, split by stage"
"$PYTHON" -m scripts.benchmark_inference --device "$DEVICE" --modes 2.5d --shape $SHAPE \
    --planes axial coronal sagittal --work-dir "$OUT/inference"
