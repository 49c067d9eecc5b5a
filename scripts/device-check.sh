#!/usr/bin/env bash
# GPU checks for a CUDA machine with PyTorch 2.11 installed (libtorch_cuda and NCCL come from
# it): the rlvr binary built on a CPU host runs against that machine's libtorch. It measures
# generation and training against transformers / PyTorch eager on the same GPU, side by side,
# runs the tiny pipeline end to end on the GPU, profiles a decode step's kernels and, in a
# binary built by scripts/build-nccl.sh, runs NCCL collectives. BENCHMARKS.md records what it
# showed.
#
#   scripts/device-check.sh BINARY OUTDIR [SECTION...]
#
# SECTIONs (all by default; GENERATE_SHAPES and EAGER narrow `generate`, see there): generate train pipeline profile collectives zero3 weights
# rlvr-local workers rlvr-nccl smollm2-rlvr. `profile` needs the example binary built beside BINARY's target
# (cargo build --release --examples -p rlvr-rollout) or PROFILE=path; `smollm2-rlvr` needs
# GGUF=path to SmolLM2-135M-Instruct.Q4_1.gguf (scripts/smollm2.sh downloads it).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:?usage: device-check.sh BINARY OUTDIR}")
OUT=$(realpath "${2:?usage: device-check.sh BINARY OUTDIR}")
PY=${PYTHON:-python3}
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step() { echo; echo "### $*"; }
SECTIONS=${*:3}
SECTIONS=${SECTIONS:-generate train pipeline profile collectives zero3 weights rlvr-local workers rlvr-nccl smollm2-rlvr}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", torch.cuda.nccl.version(), "transformers", transformers.__version__)'
ls "$TORCH_LIB" | grep -E '^lib(torch_cuda|c10_cuda)\.so$'
"$PY" -c 'import os, torch, glob; print(*glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "*", "lib", "libnccl.so*")))'

want generate && step "generation: rlvr native engine (paged KV cache; decode steps replayed from CUDA graphs, then eager) vs transformers generate, SmolLM2-135M shape"
# PROMPTS SAMPLES PROMPT_LEN DTYPE: 32, 128 and 512 sequences of 16 + 128 tokens, and the RL
# shape (64 prompts x 8 samples of 128 + 128 tokens, samples sharing their prompt's blocks).
# GENERATE_SHAPES="32 1 16 bf16;512 1 16 bf16" picks shapes; EAGER=0 leaves out the eager runs.
IFS=';' read -r -a shapes <<< "${GENERATE_SHAPES:-32 1 16 bf16;32 1 16 f32;128 1 16 bf16;512 1 16 bf16;64 8 128 bf16}"
want generate && for shape in "${shapes[@]}"; do
  read -r prompts samples prompt_len dt <<< "$shape"
  args=(--batch "$prompts" --samples "$samples" --prompt-len "$prompt_len" --new-tokens 128 --repeats 2 --device cuda --dtype "$dt")
  timeout 300 "$BIN" bench generate "${args[@]}" --save-model "$WORK/gen-$dt" --json | tee -a "$OUT/results.jsonl"
  [ "${EAGER:-1}" = 0 ] || timeout 300 "$BIN" bench generate "${args[@]}" --eager --json | tee -a "$OUT/results.jsonl"
  timeout 300 "$PY" benches/generate_transformers.py "$WORK/gen-$dt" "${args[@]}" 2>/dev/null | tee -a "$OUT/results.jsonl"
done

want train && step "training: 8 x 1024 tokens per step, rlvr learner vs PyTorch eager"
want train && for dt in bf16 f32; do
  timeout 300 "$BIN" bench train --device cuda --dtype "$dt" --batch 8 --seq-len 1024 --steps 5 --save-model "$WORK/train-$dt" --json | tee -a "$OUT/results.jsonl"
  timeout 300 "$PY" benches/train_torch.py "$WORK/train-$dt" --device cuda --dtype "$dt" --batch 8 --seq-len 1024 --steps 5 2>/dev/null | tee -a "$OUT/results.jsonl"
done

if want pipeline; then
  step "tiny-arith pipeline on the GPU (pretrain -> SFT -> RLVR)"
  start=$(date +%s)
  timeout 240 "$BIN" run tiny-arith --out "$WORK/run" --overwrite 2>&1 | grep -vE '^\s*$' | tail -25
  echo "exit $? after $(($(date +%s) - start)) s"
  cp "$WORK/run/metrics.jsonl" "$OUT/tiny-arith-metrics.jsonl" 2>/dev/null || true
fi

if want profile; then
  step "a decode step's kernels (rollout/examples/profile_decode.rs)"
  PROFILE=${PROFILE:-$(dirname "$BIN")/examples/profile_decode}
  for dt in bf16 f32; do timeout 120 "$PROFILE" cuda "$dt"; done
fi

if want collectives; then
  step "c10d collectives: NCCL on the GPU (world size 1), Gloo between 2 local ranks"
  timeout 120 "$BIN" bench collectives --device cuda --ranks 1 | tee -a "$OUT/results.jsonl"
  timeout 120 "$BIN" bench collectives --device cpu --ranks 2 | tee -a "$OUT/results.jsonl"
fi

if want zero3; then
  step "ZeRO-3 over NCCL (one rank on the GPU) against one unsharded learner, same rows"
  for dt in f32 bf16; do
    for mode in --unsharded ""; do
      timeout 240 "$BIN" bench zero3 --device cuda --dtype "$dt" --ranks 1 --batch 8 --seq-len 512 --steps 5 $mode \
        | tee -a "$OUT/results.jsonl"
    done
  done
fi

if want weights; then
  step "weight sync over NCCL, host-staged chunks vs device-resident tensors: export, bucketed broadcast, load into an engine (one rank: NCCL takes one per GPU)"
  for shape in "smollm2-135m-sft f32" "smollm2-135m-sft bf16" "smollm2-1.7b-sft bf16"; do
    read -r recipe dt <<< "$shape"
    timeout 180 "$BIN" bench weight-sync --device cuda --dtype "$dt" --shape-from "$recipe" --ranks 1 --repeats 3 | tee -a "$OUT/results.jsonl"
  done
fi

if want rlvr-local; then
  step "tiny-arith-rlvr with its rollout engines in the process on the GPU: each version reaches them as a snapshot on the device"
  start=$(date +%s)
  timeout 180 "$BIN" run tiny-arith-rlvr --out "$WORK/local" --set train.max_steps=20 2>&1 | grep -v "rlvr step" | tail -6
  echo "run exit ${PIPESTATUS[0]} after $(($(date +%s) - start)) s"
  cp "$WORK/local/metrics.jsonl" "$OUT/rlvr-local-metrics.jsonl" 2>/dev/null || true
fi

if want workers; then
  step "tiny-arith-rlvr with its rollout and verifier workers on worker nodes (the rollout node's engine on the GPU)"
  umask 077; head -c 24 /dev/urandom | base64 > "$WORK/cookie"
  common=(--set train.max_steps=20 --set rlvr.local_rollout_batch_size=4 --set rlvr.local_mini_batch_size=32)
  start=$(date +%s)
  timeout 180 "$BIN" run tiny-arith-rlvr --out "$WORK/nodes" --listen 127.0.0.1:29650 --cookie-file "$WORK/cookie" \
    --set rollout.workers=0 --set rollout.verifier_workers=0 "${common[@]}" > "$WORK/nodes.log" 2>&1 &
  run=$!
  timeout 180 "$BIN" worker --join 127.0.0.1:29650 --role rollout --cookie-file "$WORK/cookie" 2> "$WORK/rollout.log" &
  timeout 180 "$BIN" worker --join 127.0.0.1:29650 --role verifier --workers 2 --cookie-file "$WORK/cookie" 2> "$WORK/verifier.log" &
  wait $run; echo "run exit $? after $(($(date +%s) - start)) s"; wait
  grep -v "rlvr step" "$WORK/nodes.log" | tail -12; tail -3 "$WORK/rollout.log"
  cp "$WORK/nodes/metrics.jsonl" "$OUT/workers-metrics.jsonl" 2>/dev/null || true
fi

if want rlvr-nccl; then
  step "tiny-arith-rlvr (PPO) as a launched rank: the learner over NCCL (world size 1), ZeRO-3 in bf16 with the optimiser offloaded to pinned host memory"
  start=$(date +%s)
  RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29660 timeout 300 "$BIN" run tiny-arith-rlvr --out "$WORK/nccl" \
    --set train.max_steps=10 --set rlvr.algorithm=ppo --set rlvr.num_samples_per_prompt=1 --set rlvr.local_rollout_batch_size=32 \
    --set model.dtype=bf16 --set launch.zero_stage=3 --set launch.offload_optimizer=true 2>&1 | grep -v "rlvr step" | tail -8
  echo "run exit ${PIPESTATUS[0]} after $(($(date +%s) - start)) s"
  cp "$WORK/nccl/metrics.jsonl" "$OUT/rlvr-nccl-metrics.jsonl" 2>/dev/null || true
fi

if want smollm2-rlvr; then
  # f32 and bf16 side by side: at the recipe's lr (3e-6) a bf16 weight moves only once its f32
  # master has moved half a bf16 step, which 10 steps allow for ~4% of SmolLM2's weights
  # (scripts/bf16-reach.py); the bf16 run of 2026-12-04 did not learn where f32 on the CPU did.
  "$BIN" convert "${GGUF:?smollm2-rlvr needs GGUF=path}" --out "$WORK/smollm2" 2>&1 | tail -2
  for dt in ${SMOLLM2_DTYPES:-f32 bf16}; do
    step "smollm2-135m-rlvr (GRPO from SmolLM2-135M-Instruct) as a launched rank in $dt: the learner over NCCL (world size 1), the engine on the same GPU"
    start=$(date +%s)
    RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29670 timeout 300 "$BIN" run smollm2-135m-rlvr --out "$WORK/smol-$dt" \
      --set model.name_or_path="$WORK/smollm2" --set model.dtype="$dt" 2>&1 | grep -v "rlvr step" | tail -12
    echo "run exit ${PIPESTATUS[0]} after $(($(date +%s) - start)) s"
    cp "$WORK/smol-$dt/metrics.jsonl" "$OUT/smollm2-rlvr-$dt-metrics.jsonl" 2>/dev/null || true
  done
fi
