"""What the in-reward KL charges a response, by its length (docs/priming.md, "Why PPO erodes the search:
the in-reward KL is a length tax").

    OMP_NUM_THREADS=1 python scripts/kl_by_length.py RL_DIR POLICY_STEP EVAL_STEP [--limit 96] [--coef 0.05]

RL_DIR is one seed's RL folder of a ``reasonlab run countdown-behaviors`` output, e.g.
``OUT/conditions/curated_enriched/seed-0/rl``. The policy is its checkpoint at POLICY_STEP, the reference
the model its ``config.yaml`` starts from (what PPO's KL is measured against); the responses are its
eval Episodes at EVAL_STEP (``episodes/eval-step-NNNNNN.jsonl``). For each response the script sums
k1 = log π(y_t) − log π_ref(y_t) over the response tokens, then prints, per length band (< 60, 60–199,
≥ 200 tokens): responses, mean length, mean Σ k1, mean per-token k1, the reward that Σ k1 costs with
``kl_reward_norm: sum`` (coef × Σ k1) and with ``mean`` (coef × per-token k1), and accuracy.
"""
from __future__ import annotations

import argparse
import json
import statistics as st
from pathlib import Path

import torch
import yaml


def response_k1(policy, ref, tok, messages) -> torch.Tensor:
    """k1 per response token of the last (assistant) message, policy against reference."""
    prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    ids_p = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(prompt + messages[-1]["content"], add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(policy(x).logits[0, :-1].float(), -1)
        lr = torch.log_softmax(ref(x).logits[0, :-1].float(), -1)
    t = x[0, 1:, None]
    return (lp.gather(-1, t)[:, 0] - lr.gather(-1, t)[:, 0])[len(ids_p) - 1:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rl_dir", type=Path)
    ap.add_argument("policy_step", type=int)
    ap.add_argument("eval_step", type=int)
    ap.add_argument("--limit", type=int, default=96, help="responses to score (default 96)")
    ap.add_argument("--coef", type=float, default=0.05, help="kl_coef to price the charge with (default 0.05)")
    a = ap.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.set_num_threads(1)
    ckpt = a.rl_dir / "checkpoints" / f"step-{a.policy_step:06d}"
    episodes = a.rl_dir / "episodes" / f"eval-step-{a.eval_step:06d}.jsonl"
    for p in (ckpt, episodes, a.rl_dir / "config.yaml"):
        if not p.exists():
            ap.error(f"{p} does not exist (is {a.rl_dir} a run's rl folder, and were those steps saved?)")
    ref_path = yaml.safe_load((a.rl_dir / "config.yaml").read_text())["model"]
    tok = AutoTokenizer.from_pretrained(ref_path)
    ref = AutoModelForCausalLM.from_pretrained(ref_path).eval()
    policy = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    eps = [json.loads(line) for line in episodes.read_text().splitlines() if line.strip()][: a.limit]
    rows = []
    for e in eps:
        k1 = response_k1(policy, ref, tok, e["messages"])
        rows.append((len(k1), k1.sum().item(), bool(e.get("correct"))))
    print(f"policy {ckpt}\nreference {ref_path}\n{len(rows)} responses of {episodes.name}")
    print(f"{'tokens':>9} {'n':>4} {'len':>5} {'sum k1':>7} {'k1/tok':>7} {'cost sum':>8} {'cost mean':>9} {'acc':>5}")
    for lo, hi in ((0, 60), (60, 200), (200, 10**9)):
        s = [r for r in rows if lo <= r[0] < hi]
        if not s:
            continue
        total = st.mean(r[1] for r in s)
        per_tok = st.mean(r[1] / max(r[0], 1) for r in s)
        band = f"{lo}-{hi - 1}" if hi < 10**9 else f">={lo}"
        print(f"{band:>9} {len(s):>4} {st.mean(r[0] for r in s):>5.0f} {total:>7.3f} {per_tok:>7.4f} "
              f"{a.coef * total:>8.3f} {a.coef * per_tok:>9.4f} {st.mean(float(r[2]) for r in s):>5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
