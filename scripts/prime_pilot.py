"""A priming pilot: the behaviors experiment's priming SFT for one condition, then the primed model's
competence (docs/priming.md, "Priming the behavior-poor organism"). About 5–20 min on 1 CPU thread.

    OMP_NUM_THREADS=1 python scripts/prime_pilot.py BASE OUT CONDITION STEPS TRACES LR \
        [--phrasing organism_facts] [--max-detours 1] [--restart-only] [--replay 1024] \
        [--search faithful --phrasing organism_faithful]
"""

import argparse
import json
import time
from pathlib import Path

from transformers import AutoTokenizer

from reasonlab.config import validate
from reasonlab.episode import append_jsonl
from reasonlab.organisms import CPU_TASK_ARGS, competence_report, format_report, replay_episodes
from reasonlab.priming.traces import generate_traces
from reasonlab.train.sft import SFTSettings, train_sft

ap = argparse.ArgumentParser()
for a in ("base", "out", "condition"):
    ap.add_argument(a)
ap.add_argument("steps", type=int)
ap.add_argument("traces", type=int)
ap.add_argument("lr", type=float)
ap.add_argument("--phrasing", default="organism")
ap.add_argument("--max-detours", type=int)
ap.add_argument("--restart-only", action="store_true")
ap.add_argument("--replay", type=int, default=0)
ap.add_argument("--search", default="guided", choices=["guided", "faithful"])
ap.add_argument("--max-new-tokens", type=int, default=384)
A = ap.parse_args()
out = Path(A.out)
out.mkdir(parents=True, exist_ok=True)
data = out / "traces.jsonl"
if not data.exists():
    eps = generate_traces(A.condition, A.traces, seed=0, task_args=CPU_TASK_ARGS, paraphrase=A.phrasing,
                          tokenizer=AutoTokenizer.from_pretrained(A.base), max_detours=A.max_detours,
                          restart_only=A.restart_only, search=A.search)
    if A.replay:
        eps += replay_episodes(A.base, A.replay, seed=0)
    append_jsonl(data, eps)
t0 = time.time()
sft = validate(SFTSettings, {"max_steps": A.steps, "lr": A.lr, "warmup_ratio": 0.05, "batch_size": 16, "max_length": 512,
                             "save_steps": A.steps // 2, "dtype": "auto", "logging_steps": 50, "model": A.base,
                             "data": [str(data)], "out": str(out / "sft"), "seed": 0}, "sft")
if not (out / "sft/final/config.json").exists():
    train_sft(sft, show_progress=False)
print(f"sft {time.time() - t0:.0f} s", flush=True)
r = competence_report(out / "sft/final", task_args=CPU_TASK_ARGS, fact_max=20, problems=64, n=4,
                      max_new_tokens=A.max_new_tokens)
(out / "competence.json").write_text(json.dumps(r, indent=1))
print(format_report(r), flush=True)
