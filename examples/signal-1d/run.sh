#!/usr/bin/env bash
# A 1-D W1A1 network on signal windows (an npz archive), from `bnnflow check` to `bnnflow bench`
# on the simulated board.
#
#   ./run.sh [--quick] [WORK]     WORK defaults to ./work beside this script
#
# --quick (or QUICK=1): 6 windows per class, one epoch, a handful of verification images: the
# whole flow in about a minute, to see that it runs, not what it learns.
# BNNFLOW_BOARD names bnnflow-board of the simulated board's environment (default: the
# checkout's .venv-board, made by `make board-env`).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
QUICK="${QUICK:-0}"
if [[ "${1:-}" == "--quick" ]]; then QUICK=1; shift; fi
WORK="$(realpath -m "${1:-$HERE/work}")"
BOARD=Pynq-Z2
BOARD_CLI="${BNNFLOW_BOARD:-$HERE/../../.venv-board/bin/bnnflow-board}"

if [[ "$QUICK" == 1 ]]; then
    PER_CLASS=(--per-class 6); EPOCHS=1; VERIFY=6; BOARD_IMAGES=6
    SIM=(--batch-sizes 1 --warmup 1 --repeats 2)
else
    PER_CLASS=(); EPOCHS=${EPOCHS:-30}; VERIFY=200; BOARD_IMAGES=36
    SIM=(--batch-sizes 1,8 --warmup 1 --repeats 3)
fi
DATA="$WORK/signals.npz"
RUN="$WORK/run"
DEPLOY="$RUN/deploy"
step() { printf '\n== %s ==\n' "$*"; }

step "a numpy archive: uint8 log-energy spectrograms, 16 bands x 1 x 32 frames, 6 classes"
python "$HERE/make_signals.py" "$DATA" "${PER_CLASS[@]}"

step "bnnflow check: does the network map to FINN?"
bnnflow check "$HERE/net.py:build" --dataset "npz:$DATA" --board "$BOARD"

step "bnnflow train ($EPOCHS epochs of Bop, cosine decay)"
# the check has just run: --no-check saves running it again. A few thousand examples make few
# steps per epoch: Bop's flip threshold 1e-6 instead of 1e-8, as `bnnflow demo` trains the digits.
bnnflow train --model "$HERE/net.py:build" --dataset "npz:$DATA" --run "$RUN" \
    --epochs "$EPOCHS" --batch-size 50 --tau 1e-6 --schedule cosine --overwrite --no-check --no-progress

step "bnnflow export: QONNX, verified against PyTorch"
bnnflow export "$RUN" -n "$VERIFY"

step "bnnflow compile: FINN's hardware layers for $BOARD, verification chain"
bnnflow compile "$RUN" --board "$BOARD" --verify "$VERIFY"

step "bnnflow cpu: the C engine, classes and scores against FINN"
bnnflow cpu "$RUN" --finn "$VERIFY"

step "bnnflow package: the deployment package (no bitfile without Vivado)"
bnnflow package "$RUN" --out "$DEPLOY" --images "$BOARD_IMAGES"

step "bnnflow-board bench --simulated-board: the package on the simulated board"
REPORT=()
if [[ -x "$BOARD_CLI" ]]; then
    # the board's environment is its own interpreter: none of this one's Python path may reach it
    env -u PYTHONPATH -u PYTHONHOME "$BOARD_CLI" bench "$DEPLOY" --simulated-board \
        --sim-exec python "${SIM[@]}"
    REPORT=(--board-report "$DEPLOY/bench/bench.json")
else
    echo "simulated board: not run: $BOARD_CLI not found (\`make board-env\` builds it)"
fi

step "bnnflow bench: FPGA against CPU"
bnnflow bench "$RUN" --finn "$VERIFY" "${REPORT[@]}"
