#!/usr/bin/env bash
# Issue 37 on a GPU lent for minutes: first stages of a better shape. On real skulls the second stage cannot move
# DSC because the first stage's shape limits it, and no test-time measure found one (docs/ablation.md, "The second
# stage (issue 37)"). This trains, side by side on the card, realdata/run-gpu.yaml's MAE (D) three ways that may
# give a better shape, each with the kept recipe (450 epochs at 64^3, as mae_d_gpu):
#   mae_d-wide     channels 16-32-64-128-128 (twice mae_d_gpu's)
#   mae_d-augment  the healthy skulls augmented before masking (flips, small affine, elastic: the paper's future work)
#   mae_d-128      the 128^3 grid of the same box (1.7 mm, the second stage's), one level more, FINE_EPOCHS epochs
# and, so that a kept change can be given to every method alike, the UNet baseline (the MAE's network) and
# SegResNet at 128^3 with their 30 epochs. Validation curves only; afterwards, on a CPU, each network is bundled
# with its post-processing and scored on the trainers' 4 validation skulls (003, 006, 026, 047), never a test skull:
#   python -c "from skullrecon.models import bundle_model; import json; bundle_model('RUN/model.pt', \
#       json.load(open('models/mae_d_gpu.json'))['training']['postprocess'], 'RUN/bundled.pt')"
#   skullrecon evaluate --model RUN/bundled.pt --data ../shared/data/skullfix/training_set --ids 003 006 026 047 \
#       --out RUN/validation.csv
#
#   bash gpu/shape.sh                            # on the lent machine; results packed into $OUT
#   DEVICE=cpu EPOCHS=1 FINE_EPOCHS=1 BASE_EPOCHS=1 DEADLINE=1200 EXTRA="--set mae.train.warmup_epochs=0 \
#       --set baselines.train.warmup_epochs=0" bash gpu/shape.sh                 # the same script, tiny, on a CPU
#
# Needs the realdata run's preprocessed training splits at 64^3 (DATA) and 128^3 (FINE: `snakemake --profile
# realdata results/realdata-skullfix/preprocessed_fine/skullfix/train`) and, where MONAI, cc3d and edt are not
# installed, their wheels in .whl/ (docs/gpu.md). Each job's curve is written epoch by epoch.
set -u
OUT=${OUT:-results/gpu-shape-out}
DATA=${DATA:-results/realdata-skullfix/preprocessed/skullfix/train}
FINE=${FINE:-results/realdata-skullfix/preprocessed_fine/skullfix/train}
RUNS=${RUNS:-results/gpu-shape}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-480}            # seconds for all trainings together
EPOCHS=${EPOCHS:-450}
FINE_EPOCHS=${FINE_EPOCHS:-300}
BASE_EPOCHS=${BASE_EPOCHS:-30}
CONFIG=realdata/run-gpu.yaml
mkdir -p "$OUT" "$RUNS"
# shellcheck source=gpu/lent.sh
. gpu/lent.sh
machine_header > "$OUT/gpu-check.txt" 2>&1

fine_net="mae.network={channels: [8, 16, 32, 64, 64, 64], strides: [1, 2, 2, 2, 2], num_res_units: 1, norm: instance}"
wide_net="mae.network={channels: [16, 32, 64, 128, 128], strides: [1, 2, 2, 2], num_res_units: 1, norm: instance}"
fine_unet="baselines.networks.unet={channels: [8, 16, 32, 64, 64, 64], strides: [1, 2, 2, 2, 2], num_res_units: 1, \
norm: instance}"
job() {  # name, method, data, overrides...
    local name=$1 method=$2 data=$3
    shift 3
    timeout "$DEADLINE" python3 bench/recipe.py train --config "$CONFIG" --data "$data" --device "$DEVICE" \
        --out "$RUNS" --threads 1 --name "$name" --method "$method" "$@" ${EXTRA:-} > "$RUNS/$name.log" 2>&1 &
}
mae=(--set mae.train.epochs="$EPOCHS" --set mae.train.num_workers=1)
base=(--set baselines.train.epochs="$BASE_EPOCHS" --set "baselines.epochs_per_method={}"
      --set baselines.train.num_workers=1 --set preprocess.grid=128)
job mae_d-wide mae_d "$DATA" "${mae[@]}" --set "$wide_net"
job mae_d-augment mae_d "$DATA" "${mae[@]}" --set mae.augment.activate=true
job mae_d-128 mae_d "$FINE" --set mae.train.epochs="$FINE_EPOCHS" --set mae.train.num_workers=2 \
    --set preprocess.grid=128 --set "$fine_net"
job unet-128 unet "$FINE" "${base[@]}" --set "$fine_unet"
job segresnet-128 segresnet "$FINE" "${base[@]}"
wait
date -u >> "$OUT/gpu-check.txt"
# curves, logs, settings and the trained networks (checkpoints stay behind), in parts the machine hands back
tar czf - --exclude='last.pt' "$RUNS" | split -b 15M - "$OUT/shape.tar.gz.part-"
ls -la "$OUT"
for f in "$RUNS"/*/history.csv; do echo "$f $(tail -n 1 "$f")"; done
