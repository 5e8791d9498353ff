#!/usr/bin/env bash
# The whole pipeline on a small offline corpus, from the repository root, results in out/demo:
#   data -> teacher -> budget-constrained search (held-out distillation loss x params) -> Pareto export ->
#   distillation of the chosen point -> int4 + 2:4 QAT -> linear probes (held-out voices, real speakers) ->
#   packed export, scored again -> one table (planner data report).
# Every step is a plain command (also in the README's "The first hour"); the recipes are recipes/demo/*.yaml.
#   bash examples/quickstart.sh              # espeak-ng speech (apt-get install espeak-ng)
#   DEMO_FLAGS=--synthetic bash examples/quickstart.sh   # tone words, where espeak-ng is missing
# Rerunning starts over: out/demo is removed first.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/demo
PLANNER=${PLANNER:-planner}
# One thread per process unless told otherwise: on a shared 2-core machine (load 7) a teacher step took
# 0.08 s with 1 thread and 1.25 s with 2 (OpenMP threads waiting for cores other jobs hold).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
rm -rf "$OUT"
mkdir -p "$OUT/eval"

step() {  # step NAME COMMAND...: prints and runs COMMAND, appends "NAME<TAB>seconds" to $OUT/stages.tsv
  local name=$1; shift
  echo "+ $*" >&2
  local t0=$EPOCHREALTIME
  "$@"
  awk -v a="$t0" -v b="$EPOCHREALTIME" -v n="$name" 'BEGIN { printf "%s\t%.2f\n", n, b - a }' >> "$OUT/stages.tsv"
}
probe() {  # probe NAME RUN TASK [--checkpoint CKPT]: planner evaluate's JSON into $OUT/eval/NAME.json
  local name=$1 run=$2 task=$3; shift 3
  step "probe $name" sh -c "$PLANNER evaluate $run --task $task $* > $OUT/eval/$name.json"
}

# 1. the corpus: spoken digits, training voices, held-out voices, real speakers where installed
step data $PLANNER data demo $OUT/data ${DEMO_FLAGS:-}
# 2. the teacher, trained from scratch to classify the words
step teacher $PLANNER train recipes/demo/teacher-arch.yaml --recipe recipes/demo/teacher.yaml --out $OUT/runs/teacher
# 3. the search: distill_loss (held-out voices) and params, params <= 150k; then the front
step search $PLANNER search searchspaces/demo.yaml --storage $OUT/search.journal --export $OUT/front
# 4. the chosen point: the front's lowest held-out distillation loss
python -c "import json,shutil; d=json.load(open('$OUT/front/pareto.json')); p=min(d['points'], key=lambda p: p['objectives']['distill_loss']); shutil.copy('$OUT/front/'+p['architecture'], '$OUT/student.yaml'); print('chosen: trial', p['trial'], p['objectives'])"
step distill $PLANNER train $OUT/student.yaml --recipe recipes/demo/distill.yaml --out $OUT/runs/distill
# 5. int4 weights + 2:4 sparsity, QAT from the distilled weights
cat $OUT/student.yaml recipes/demo/int4-2of4.section > $OUT/student-int4-2of4.yaml
step qat $PLANNER train $OUT/student-int4-2of4.yaml --recipe recipes/demo/qat.yaml --out $OUT/runs/qat
# 6. linear probes on frozen features: trained on the training voices, tested on held-out voices / real speakers
TASKS=(held); [ -f $OUT/data/task-real.yaml ] && TASKS+=(real)
for t in "${TASKS[@]}"; do
  for run in teacher distill qat; do probe "$run-$t" $OUT/runs/$run $OUT/data/task-$t.yaml; done
done
# 7. the packed export (int4 values, 2:4 masks, scales), reloaded and scored again
step export $PLANNER export $OUT/runs/qat --out $OUT/packed
for t in "${TASKS[@]}"; do probe "packed-$t" $OUT/packed $OUT/data/task-$t.yaml; done
# 8. one table
$PLANNER data report $OUT
