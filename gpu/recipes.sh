#!/usr/bin/env bash
# Issue 21 on a GPU lent for minutes (docs/ablation.md, "The kept recipe trained on a GPU"): the GPU check of
# the paper's MAE at 256^3 with the kept recipe's loss, then realdata/run.yaml's trainings side by side on the
# card: both MAE variants with cosines of 150 (the CPU run's) and 300 epochs, every baseline as the CPU run
# trains it (30 epochs; SwinUNETR too, its CPU cut to 20 is for the CPU budget). Validation curves only: the
# epochs of realdata/run-gpu.yaml are chosen on them; test skulls are scored afterwards, on the CPU, by
# Snakemake. Each job's curve is written epoch by epoch, so the deadline keeps what was reached.
#
#   bash gpu/recipes.sh                          # on the lent machine; results packed into $OUT
#   DEVICE=cpu MAE_EPOCHS="2 3" BASE_EPOCHS=1 CHECK="--device cpu --grid 32 --repeats 1 --warmup 1 \
#       --loader-cases 2 --num-workers 0" bash gpu/recipes.sh          # the same script, tiny, on a CPU
#
# Needs the realdata run's preprocessed training split (DATA) and, where MONAI, cc3d and edt are not
# installed, their wheels in .whl/ (docs/gpu.md).
set -u
OUT=${OUT:-results/gpu-recipes-out}
DATA=${DATA:-results/realdata-skullfix/preprocessed/skullfix/train}
RUNS=${RUNS:-results/gpu-recipes}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-330}            # seconds for all trainings together
MAE_EPOCHS=${MAE_EPOCHS:-150 300}
BASE_EPOCHS=${BASE_EPOCHS:-30}
CHECK=${CHECK:---networks mae --warmup 2 --repeats 5 --loader-cases 8 --network-timeout 80 --budget 90}
mkdir -p "$OUT" "$RUNS"
# shellcheck source=gpu/lent.sh
. gpu/lent.sh

{
    machine_header
    # the paper config with the kept recipe's MAE loss and schedule (the step time is what the projection needs)
    # shellcheck disable=SC2086
    timeout 150 python3 bench/gpu.py --config config.yaml --set "mae.loss={whole: 0, region: 0, added: 1}" \
        --set mae.train.schedule=cosine --set mae.train.warmup_epochs=5 --set mae.train.ema=0.99 $CHECK
} > "$OUT/gpu-check.txt" 2>&1

CONFIG=realdata/run.yaml
common=(--config "$CONFIG" --data "$DATA" --device "$DEVICE" --out "$RUNS" --threads 1 ${EXTRA:-})
listed() { python3 -c "import sys, yaml; print(*yaml.safe_load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])" "$CONFIG" "$@"; }
for e in $MAE_EPOCHS; do
    for v in $(listed mae variants); do
        timeout "$DEADLINE" python3 bench/recipe.py train "${common[@]}" --name "mae_$v-$e" --method "mae_$v" \
            --set mae.train.epochs="$e" --set mae.train.num_workers=1 > "$RUNS/mae_$v-$e.log" 2>&1 &
    done
done
for m in $(listed baselines methods); do
    timeout "$DEADLINE" python3 bench/recipe.py train "${common[@]}" --name "$m-$BASE_EPOCHS" --method "$m" \
        --set baselines.train.epochs="$BASE_EPOCHS" --set "baselines.epochs_per_method={}" \
        --set baselines.train.num_workers=1 > "$RUNS/$m-$BASE_EPOCHS.log" 2>&1 &
done
wait
date -u >> "$OUT/gpu-check.txt"
# curves, logs, settings and the trained networks (checkpoints stay behind), in parts the machine hands back
tar czf - --exclude='last.pt' "$RUNS" | split -b 15M - "$OUT/recipes.tar.gz.part-"
ls -la "$OUT"
for f in "$RUNS"/*/history.csv; do echo "$f $(tail -n 1 "$f")"; done
