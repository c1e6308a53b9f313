#!/bin/bash
# Issue 25 on the study's data (see benchmarks/budget_swaps.py, which summarizes these runs):
# SRPO on hopper-medium-replay, 5 seeds, at the previous default budget (behavior 1.5k, critic 4k,
# policy 2k), and the study's policy budget (10k) with one upstream part short:
#   S1: the study's behavior model (10k) + the short critic (4k)
#   S2: the short behavior model (1.5k) + the study's critic (20k)
# Needs the study's runs (make repro). About 50 core-minutes on this CPU, one thread; resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
export MINARI_DATASETS_PATH=$PWD/data/default/minari
TASK=hopper-medium-replay; STUDY=runs/default/$TASK; W=runs/issue25; SEEDS="0 1 2 3 4"
evaluate() {  # the pipeline's final evaluation: 10 episodes, episode i of seed S reset with 100000 + 1000 S + i
  for s in $SEEDS; do
    .venv/bin/srpo evaluate --checkpoint "$1/seed$s" --episodes 10 --seed $((100000 + 1000 * s)) \
      --num-envs 5 --out "$1/seed$s/evaluation.json"
  done
}
.venv/bin/srpo train --task $TASK --dataset generated --seeds $SEEDS --threads 1 --no-progress --out $W/short \
  --set behavior.steps=1500 --set behavior.width=128 --set critic.steps=4000 --set policy.steps=2000 \
  --set checkpoint_every=500
evaluate $W/short
for sw in S1 S2; do
  for s in $SEEDS; do
    up=$W/$sw/up/seed$s; mkdir -p $up
    if [ $sw = S1 ]; then b=$STUDY/behavior/seed$s; c=$W/short/seed$s; else b=$W/short/seed$s; c=$STUDY/critic/seed$s; fi
    ln -sf "$PWD/$b/behavior.pt" $up/; ln -sf "$PWD/$c/critic.pt" $up/
  done
  if [ $sw = S1 ]; then steps="--set behavior.steps=10000 --set critic.steps=4000"
  else steps="--set behavior.steps=1500 --set critic.steps=20000"; fi
  .venv/bin/srpo train --task $TASK --dataset generated --seeds $SEEDS --threads 1 --no-progress --stage policy \
    --upstream $W/$sw/up --out $W/$sw/pi $steps --set behavior.width=128 --set policy.steps=10000 \
    --set checkpoint_every=1000
  evaluate $W/$sw/pi
done
