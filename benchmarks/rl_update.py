"""The PPO update of an organism on one step's rollouts: micro-batch layouts against a plain padded batch.

    OMP_NUM_THREADS=1 python benchmarks/rl_update.py                     # the shipped rich organism
    OMP_NUM_THREADS=1 python benchmarks/rl_update.py --model PRIMED_DIR  # e.g. an all_strategies primed model
    python benchmarks/rl_update.py --micro 32 8 --reps 5 --threads 2

One rollout (8 Countdown prompts × 4 samples at T = 1, up to 448 new tokens, the `cpu` preset's task
range) is sampled once; then, on those very episodes, in one run:

- plain: the textbook step on the whole batch padded to its longest sequence — ``model(tokens).logits``,
  log-softmax, gather, a surrogate ``−(logp · adv).sum()``, ``backward()`` (one forward + backward;
  no old-policy or reference pass, so it is a floor for the gradient pass, not the whole update);
- reasonlab ``RLTrainer.update`` (PPO, value head, in-reward KL to a frozen reference: a no-grad pass of
  policy and reference, then the gradient pass) at each ``optim.micro_batch_size`` given. Micro-batches
  are sorted by length and each is cut to its own longest sequence, so with 32 (one micro-batch) the
  update pads like the plain step and smaller ones skip the padding of short answers.

Prints the length spread, the padded tokens each layout computes, and the median wall time of
``--reps`` updates (each from the same starting weights). Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def default_model() -> str:
    from reasonlab.organisms import shipped_dir

    d = sorted(shipped_dir().glob("rich-*"))
    if not d:
        sys.exit("no shipped rich organism found; pass --model DIR")
    return str(d[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="organism or primed model folder (default: shipped rich base)")
    ap.add_argument("--micro", type=int, nargs="+", default=[32, 16, 8], help="micro-batch sizes to time")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from reasonlab.quiet import quiet_libraries
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import RLTrainer, collate

    quiet_libraries()
    model = a.model or default_model()
    tmp = Path(tempfile.mkdtemp(prefix="rl-update-bench-"))

    def trainer(mbs: int) -> RLTrainer:
        cfg = RLConfig.model_validate(dict(
            model=model, task="countdown", seed=a.seed, steps=1, train_pool=64, algorithm="ppo", critic="head",
            task_args={"min_numbers": 3, "max_numbers": 3, "number_range": [1, 10], "target_range": [5, 30]},
            rollout={"prompts_per_step": 8, "n": 4, "temperature": 1.0, "max_new_tokens": 448},
            optim={"lr": 1e-4, "micro_batch_size": mbs},
            loss={"kl_coef": 0.05, "kl_estimator": "k1", "kl_in_reward": True, "gamma": 1.0, "lam": 1.0},
            tensorboard=False, out=str(tmp / f"mb{mbs}")))
        return RLTrainer(cfg)

    tr = trainer(max(a.micro))
    t0 = time.perf_counter()
    episodes = tr.rollout(0)
    t_roll = time.perf_counter() - t0
    b = collate(episodes, tr.pad_id)
    lengths = b["attn"].sum(1)
    B, T = b["tokens"].shape
    gen = [e.stats["generated_tokens"] for e in episodes]
    print(f"model {model}\nthreads {a.threads}; rollout {t_roll:.1f} s; {B} sequences, length "
          f"{int(lengths.min())}-{int(lengths.max())} (mean {lengths.float().mean():.0f}; generated "
          f"{min(gen)}-{max(gen)}, mean {statistics.mean(gen):.0f}); real tokens {int(lengths.sum())}")
    state = {k: v.clone() for k, v in tr.policy.state_dict().items()}

    # plain: one padded forward + backward of the whole batch
    policy = tr.policy
    adv = torch.randn(B, T)
    times = []
    for _ in range(a.reps):
        policy.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        logits = policy(input_ids=b["tokens"], attention_mask=b["attn"]).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, b["tokens"][:, 1:, None])[..., 0]
        (-(logp * adv[:, 1:] * b["mask"][:, 1:]).sum()).backward()
        times.append(time.perf_counter() - t0)
    plain = statistics.median(times)
    print(f"{'layout':<34} {'padded tokens':>13} {'s/update':>9} {'vs plain':>9}")
    print(f"{'plain fwd+bwd, 32 padded':<34} {B * T:>13} {plain:>9.2f} {1.0:>8.2f}x")

    for mbs in a.micro:
        t = tr if mbs == max(a.micro) else trainer(mbs)
        order = torch.argsort(lengths, stable=True)
        padded = sum(int(lengths[order[i:i + mbs]].max()) * len(order[i:i + mbs]) for i in range(0, B, mbs))
        times = []
        for _ in range(a.reps):
            t.policy.load_state_dict(state)
            t0 = time.perf_counter()
            t.update(episodes)
            times.append(time.perf_counter() - t0)
        s = statistics.median(times)
        print(f"{'reasonlab update, micro-batch ' + str(mbs):<34} {padded:>13} {s:>9.2f} {s / plain:>8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
