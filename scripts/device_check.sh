#!/usr/bin/env bash
# The GPU checks of the sCT data path in one run (issue 18), most important first:
#   1. training throughput, bare network vs the real loop with device-side crops (crops/s, real / bare, peak
#      memory) for train.json's default (4 crops), the docs' GPU recipe (32) and 128 crops (VARIANTS: eager; also channels_last);
#   2. whole-volume inference split by stage (2.5D three planes, 3D);
#   3. a bundle training run of the GPU recipe with `nvidia-smi dmon` sampling utilisation every second, then
#      inference.json on its test subject and a geometry check of the sCT (shape, affine, int16) against the MR;
#   4. the same training under torchrun (1 process, NCCL) with --max_minutes (rank 0's clock);
#   5. torch.compile in the throughput benchmark (last: compilation takes minutes; capped by a timeout).
#
#   scripts/device_check.sh [LOG_DIR]     (DEVICE=cpu SHAPE="64 64 48" ITERATIONS=3 for a smoke test on a CPU)
#
# Everything it prints goes to LOG_DIR/device_check.log (default runs/device_check-<time>), with dmon.txt; the
# phantoms and runs go to WORK (default: a temporary folder). Wheels that the machine lacks can be carried in
# .whl/ (see the device tool's notes); they are installed first when present. On the lent H200 (python 3.12,
# torch 2.11) that was monai, pytorch-ignite, fire, termcolor, nibabel, pydicom and SimpleITK: 58 MB, of which
# SimpleITK is 53 MB, with 5 MB of project files just inside the 64 MiB that may travel.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-runs/device_check-$(date +%Y%m%d-%H%M%S)}
WORK=${WORK:-$(mktemp -d)}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-160 192 112}
ITERATIONS=${ITERATIONS:-60}
COMPILE_SECONDS=${COMPILE_SECONDS:-150}
PYTHON=${PYTHON:-python3}
mkdir -p "$LOG" "$WORK"
exec > >(tee "$LOG/device_check.log") 2>&1

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
stamp() { echo "[$(date +%T)] $*"; }
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# the bundle run's phantoms, written meanwhile on another core
"$PYTHON" -c "from pipeline.data.phantoms.head import write_phantom_dataset
write_phantom_dataset('$WORK/phantoms', n=6, size=tuple(int(n) for n in '$SHAPE'.split()))" \
    > "$WORK/phantoms.log" 2>&1 &
PHANTOMS=$!

stamp "== 1. training throughput: bare network vs real loop (device-side crops), L1 recipe, three planes"
"$PYTHON" -m scripts.benchmark_training --device "$DEVICE" --configs default gpu large --variants "${VARIANTS:-eager}" \
    --iterations "$ITERATIONS" --phantom-shape $SHAPE --work-dir "$WORK/benchmark_training"

stamp "== 2. whole-volume inference, split by stage (2.5D: three planes)"
"$PYTHON" -m scripts.benchmark_inference --device "$DEVICE" --modes 2.5d 3d --shape $SHAPE --repeats 3 \
    --planes axial coronal sagittal --work-dir "$WORK/inference"

stamp "== 3. a bundle training run (docs' GPU recipe), GPU utilisation sampled every second"
wait "$PHANTOMS" || { cat "$WORK/phantoms.log"; exit 1; }
"$PYTHON" -m scripts.make_manifest --root "$WORK/phantoms" --out "$WORK/manifest.csv" --val 0.2 --test 0.2
if command -v nvidia-smi >/dev/null && [ "$DEVICE" != cpu ]; then
    nvidia-smi dmon -s u -d 1 > "$LOG/dmon.txt" 2>&1 &
    DMON=$!
fi
start=$(date +%s.%N)
"$PYTHON" -m monai.bundle run --config_file bundles/mri_to_ct/configs/train.json --manifest "$WORK/manifest.csv" \
    --output_dir "$WORK/train" --device "\$torch.device('$DEVICE')" --batch_size 8 --samples_per_volume 4 \
    --epochs 3 --epoch_length $((ITERATIONS * 4)) --val_interval 3 2>&1 \
    | grep -E "Epoch\[[0-9]+\] Complete|val_mae_hu|rror" | tail -8
echo "bundle training wall time $("$PYTHON" -c "import time; print(round(time.time() - $start, 1))") s" \
     "($((12 * ITERATIONS)) iterations of 32 crops and one validation, process start and volume loading included)"
if [ -n "${DMON:-}" ]; then
    kill "$DMON"
    awk '$1 !~ /#/ && NF > 2 {n++; s += $2; if ($2 > 0) busy++} END {if (n) printf "GPU busy (SM %%): mean %.1f over %d one-second samples of the whole process (start, loading, training, validation); %d samples above 0\n", s / n, n, busy}' "$LOG/dmon.txt"
fi
"$PYTHON" -m monai.bundle run --config_file bundles/mri_to_ct/configs/inference.json --input "$WORK/manifest.csv" \
    --split test --output_dir "$WORK/train" --device "\$torch.device('$DEVICE')" 2>&1 | grep -E "rror|wrote|sCT" | tail -3
"$PYTHON" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.data.manifest import load_split

work = Path(sys.argv[1])
for row in load_split(work / "manifest.csv", "test"):
    mr, sct = nib.load(row["mr"]), nib.load(work / "train" / "predictions" / row["subject_id"] / "sct.nii.gz")
    same = mr.shape == sct.shape and np.allclose(mr.affine, sct.affine, atol=1e-5)
    print(f"geometry {row['subject_id']}: shape {sct.shape} == MR {mr.shape}, affine equal {same}, dtype "
          f"{sct.get_data_dtype()}, HU range {int(np.min(sct.dataobj))}..{int(np.max(sct.dataobj))} -> "
          f"{'OK' if same and sct.get_data_dtype() == np.int16 else 'FAILED'}")
EOF

stamp "== 4. torchrun, 1 process ($DEVICE), --max_minutes 0.5 (rank 0's clock, sharded final validation)"
"$PYTHON" -m torch.distributed.run --nproc_per_node=1 -m monai.bundle run \
    --config_file "['bundles/mri_to_ct/configs/train.json','bundles/mri_to_ct/configs/multi_gpu_train.json']" \
    --manifest "$WORK/manifest.csv" --output_dir "$WORK/ddp" --batch_size 8 --samples_per_volume 4 --max_minutes 0.5 \
    2>&1 | grep -E "Epoch\[[0-9]+\] Complete|val_mae_hu|budget|rror" | tail -6
ls "$WORK/ddp/models" 2>/dev/null | head -5

stamp "== 5. torch.compile in the throughput benchmark (capped at ${COMPILE_SECONDS} s)"
timeout "$COMPILE_SECONDS" "$PYTHON" -m scripts.benchmark_training --device "$DEVICE" --configs gpu large \
    --variants compile --iterations "$ITERATIONS" --phantom-shape $SHAPE --work-dir "$WORK/benchmark_training" \
    || echo "compile benchmark stopped (exit $?)"
stamp "== done"
