"""One GRPO step, timed in reasonlab (``RLTrainer.step``) and in TRL's ``GRPOTrainer``, in one run.

    python benchmarks/rl_step.py                      # fp32 and bf16, 1 warm-up + 3 timed steps each
    python benchmarks/rl_step.py --quick              # bf16 only, 1 warm-up + 1 timed step
    python benchmarks/rl_step.py --dtype fp32 --steps 5 --only reasonlab --micro-batch 8
    python benchmarks/rl_step.py --threads 1          # one thread: CPU time is robust to a loaded machine

The step is the same on both sides:
- model: the embedded SmolLM2-135M-Instruct, fp32 master weights; ``bf16`` = autocast (reasonlab's
  ``RLConfig.dtype='bf16'``, TRL's ``bf16=True`` through accelerate);
- data: 8 Countdown train prompts per step (the very same problems, in the same order, on both sides:
  TRL's dataset is built from reasonlab's per-step problem choice and not shuffled), rendered with the
  chat template; 4 samples each at temperature 1, top-p 1, top-k off, at most 64 new tokens;
- reward: reasonlab's Countdown scorer (1 / 0.1 / 0);
- loss: GRPO advantages (group mean and population std), PPO clipped surrogate (ε = 0.2) with token
  aggregation (reasonlab ``agg='token'`` = TRL ``loss_type='dapo'``: one normaliser, the policy tokens
  of the whole step), no KL (``kl_coef=0`` / ``beta=0``: no reference model), 1 epoch, one AdamW
  step (lr 1e-6, grad-norm clip 1) over all 8 × 4 samples: TRL gets ``per_device_train_batch_size
  = micro-batch`` and ``gradient_accumulation_steps = 32 / micro-batch``, reasonlab
  ``micro_batch_size = micro-batch`` in one minibatch.

Where the two differ by design, as each library ships: TRL's gradient checkpointing is turned off
(its default is on; reasonlab never recomputes activations, and a 135M model does not need it);
TRL keeps its default fused AdamW; TRL generates with ``model.generate``, reasonlab with its own
``HFBackend`` loop; TRL skips the old-log-prob forward when the step is exactly on-policy,
reasonlab always runs it.

Timing: each framework runs in its own subprocess (no shared threads, caches or allocator, and a
crash is reported rather than fatal). Step time = wall time of ``RLTrainer.step()``; for TRL, the
time between consecutive ``on_step_end`` callbacks (the first from ``on_train_begin``). Model
loading and trainer construction are not timed. The first step is reported separately; the mean
and spread are over the steps after it. CPU s/step (process CPU time, both threads) is printed too:
it moves much less than wall time when other processes load the machine.

Numerics (reasonlab, ``--dtype both``): on one fp32 rollout batch, log-probs of the policy tokens
and the gradient of the surrogate under fp32 and under bf16 autocast.

Not a test: run by hand. Figures and commands go to docs/benchmarks-rl.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

MODEL = "smollm2-135m"
PROMPTS, N, NEW_TOKENS, LR, SEED = 8, 4, 64, 1e-6, 0


# ----------------------------------------------------------------------------- shared setup


def rl_config(dtype: str, micro_batch: int, total_steps: int):
    from reasonlab.train.rl.config import LossSettings, OptimSettings, RLConfig, RolloutSettings

    return RLConfig(
        model=MODEL, task="countdown", algorithm="grpo", dtype=dtype, steps=total_steps, seed=SEED,
        device="cpu", train_pool=PROMPTS * total_steps, eval_limit=1, tensorboard=False,
        rollout=RolloutSettings(prompts_per_step=PROMPTS, n=N, max_new_tokens=NEW_TOKENS, temperature=1.0, top_p=1.0),
        optim=OptimSettings(lr=LR, epochs=1, minibatch_size=None, micro_batch_size=micro_batch, max_grad_norm=1.0),
        loss=LossSettings(clip_low=0.2, clip_high=0.2, agg="token", kl_coef=0.0, entropy_coef=0.0),
    )


def step_problems(cfg) -> list[list]:
    """reasonlab's problem choice for each step, computed without loading a model."""
    from reasonlab.tasks import get_task
    from reasonlab.train.rl.engine import RLTrainer

    pool = get_task(cfg.task, **cfg.task_args).problems("train", cfg.train_pool, seed=cfg.seed)
    shim = types.SimpleNamespace(cfg=cfg, pool=pool)
    return [RLTrainer.problems_for(shim, s) for s in range(cfg.steps)]


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- workers (subprocesses)


def worker_reasonlab(dtype: str, steps: int, micro_batch: int) -> dict:
    import torch

    from reasonlab.train.rl.engine import RLTrainer

    cfg = rl_config(dtype, micro_batch, steps + 1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RLTrainer(cfg, out=tmp)
        assert [p.id for p in trainer.problems_for(0)] == [p.id for p in step_problems(cfg)[0]]
        times, cpu, rows = [], [], []
        for _ in range(steps + 1):
            t, c = time.perf_counter(), time.process_time()
            row = trainer.step()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            rows.append(row)
    return {
        "times": times, "cpu": cpu, "threads": torch.get_num_threads(),
        "reward": [r["reward"] for r in rows], "loss": [r["loss"] for r in rows],
        "rollout_s": [r["time_rollout_s"] for r in rows], "train_s": [r["time_train_s"] for r in rows],
        "response_length": [r["response_length"] for r in rows],
        "problems": [[p.id for p in trainer.problems_for(s)] for s in range(steps + 1)],
    }


def worker_trl(dtype: str, steps: int, micro_batch: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from reasonlab.models import resolve_model
    from reasonlab.tasks import get_task
    from reasonlab.tasks.countdown import score_countdown

    if (PROMPTS * N) % micro_batch:
        raise ValueError(f"micro-batch {micro_batch} must divide {PROMPTS * N}")
    cfg = rl_config(dtype, micro_batch, steps + 1)
    task = get_task("countdown")
    per_step = step_problems(cfg)
    rows = [{"prompt": task.messages(p), "numbers": p.metadata["numbers"], "target": p.metadata["target"], "id": p.id}
            for probs in per_step for p in probs]
    seen: list[list[str]] = []

    def countdown_reward(prompts, completions, numbers, target, id, **_):
        seen.append(sorted(set(id)))
        return [score_countdown(c[0]["content"], ns, t).reward for c, ns, t in zip(completions, numbers, target)]

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, float]] = []

        def on_train_begin(self, *a, **k):
            self.marks.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, *a, **k):
            self.marks.append((time.perf_counter(), time.process_time()))

    path = resolve_model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, report_to="none", save_strategy="no", logging_steps=1, seed=SEED,
            use_cpu=True, bf16=dtype == "bf16", fp16=False,
            per_device_train_batch_size=micro_batch, gradient_accumulation_steps=PROMPTS * N // micro_batch,
            num_generations=N, max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0, top_k=0,
            learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group", num_iterations=1,
            mask_truncated_completions=False, gradient_checkpointing=False, shuffle_dataset=False,
            max_steps=steps + 1, dataloader_num_workers=0,
        )
        clock = Clock()
        trainer = GRPOTrainer(model=model, reward_funcs=countdown_reward, args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[clock])
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
    marks = clock.marks
    want = [sorted(p.id for p in probs) for probs in per_step]
    return {
        "times": [b[0] - a[0] for a, b in zip(marks, marks[1:])],
        "cpu": [b[1] - a[1] for a, b in zip(marks, marks[1:])], "threads": torch.get_num_threads(),
        "reward": [h.get("reward") for h in logs], "loss": [h.get("loss") for h in logs],
        "response_length": [h.get("completions/mean_length") for h in logs],
        "same_prompts_as_reasonlab": seen == want,
    }


def worker_numerics(micro_batch: int) -> dict:
    """fp32 vs bf16 autocast in reasonlab's training forward, on one rollout batch (same weights)."""
    import torch

    from reasonlab.train.rl import advantages as A
    from reasonlab.train.rl.engine import RLTrainer, chunks, collate

    cfg = rl_config("fp32", micro_batch, 1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RLTrainer(cfg, out=tmp)
        episodes = trainer.rollout(0)
    b = collate(episodes, trainer.pad_id)
    mask = b["mask"].clone()
    mask[:, 0] = 0
    m = mask.bool()
    sampled = torch.zeros(b["tokens"].shape)
    for i, e in enumerate(episodes):
        sampled[i, : len(e.logprobs)] = torch.tensor(e.logprobs)
    adv = A.group_advantages(b["rewards"], N)[:, None] * mask
    synthetic = bool(adv.abs().sum() == 0)
    if synthetic:  # every group scored the same (the untuned model gets 0 on Countdown): no gradient to
        # compare, so use fixed random per-sequence advantages; the comparison is about the forward,
        # not about these values
        adv = torch.randn(len(episodes), generator=torch.Generator().manual_seed(0))[:, None] * mask
    n_tok = mask.sum()
    out = {}
    for dtype in ("fp32", "bf16"):
        trainer.cfg.dtype = dtype
        trainer.policy.zero_grad(set_to_none=True)
        trainer.policy.eval()  # no dropout in SmolLM2 anyway; keeps the two passes comparable
        logps = torch.zeros(b["tokens"].shape)
        for idx in chunks(torch.arange(len(episodes)), micro_batch):
            _, lp, _ = trainer.forward_logp(trainer.policy, b, idx)
            # on-policy surrogate: ratio = exp(lp - lp.detach()) = 1, gradient = ∇ Σ A·logπ / n_tok
            ratio = torch.exp(lp - lp.detach())
            (-(ratio * adv[idx]) * mask[idx]).sum().div(n_tok).backward()
            logps[idx] = lp.detach()
        grad = torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None])
        out[dtype] = {"logp": logps, "grad": grad.clone()}
    d = (out["bf16"]["logp"] - out["fp32"]["logp"])[m].abs()
    ds = (out["fp32"]["logp"] - sampled)[m].abs()
    ratio16 = torch.exp(out["bf16"]["logp"] - sampled)[m]
    g32, g16 = out["fp32"]["grad"].double(), out["bf16"]["grad"].double()  # 135M-dim sums: fp64
    return {
        "policy_tokens": int(m.sum()), "synthetic_advantages": synthetic,
        "logp_max_abs_diff": d.max().item(), "logp_mean_abs_diff": d.mean().item(),
        "fp32_vs_sampler_max_abs_diff": ds.max().item(),
        "bf16_ratio_vs_fp32_sampler_mean_abs_dev": (ratio16 - 1).abs().mean().item(),
        "bf16_ratio_outside_clip": ((ratio16 < 0.8) | (ratio16 > 1.2)).float().mean().item(),
        "grad_cosine": torch.nn.functional.cosine_similarity(g32, g16, dim=0).item(),
        "grad_rel_l2_diff": ((g16 - g32).norm() / g32.norm()).item(),
        "grad_norm_fp32": g32.norm().item(), "grad_norm_bf16": g16.norm().item(),
    }


# ----------------------------------------------------------------------------- driver


def run_worker(kind: str, dtype: str, steps: int, micro_batch: int, timeout: int, threads: int | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--dtype", dtype, "--steps", str(steps),
           "--micro-batch", str(micro_batch), "--result", result] + (["--threads", str(threads)] if threads else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    load_before = load_avg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        res = json.loads(Path(result).read_text()) if proc.returncode == 0 else {
            "error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
    except subprocess.TimeoutExpired:
        res = {"error": f"timed out after {timeout} s"}
    finally:
        Path(result).unlink(missing_ok=True)
    res.update(kind=kind, dtype=dtype, micro_batch=micro_batch, load_before=load_before, load_after=load_avg(),
               wall_total_s=time.perf_counter() - t0)
    return res


def fmt_steps(res: dict) -> tuple[str, str, str, float | None]:
    t = res["times"]
    later = t[1:]
    mean = statistics.mean(later) if later else None
    spread = f" ± {statistics.stdev(later):.1f}" if len(later) > 1 else ""
    cpu_later = res["cpu"][1:]
    return (f"{t[0]:.1f}", f"{mean:.1f}{spread} (n={len(later)})" if mean is not None else "-",
            f"{statistics.mean(cpu_later):.1f}" if cpu_later else "-", mean)


def table(results: list[dict]) -> str:
    lines = ["| framework | dtype | micro-batch | first step (s) | step after warm-up (s) | CPU s/step | rollout / train (s) "
             "| reward (mean) | load before → after |",
             "|---|---|---|---|---|---|---|---|---|"]
    means: dict[tuple[str, str], float] = {}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r['dtype']} | {r['micro_batch']} | failed: {r['error']} | | | | | |")
            continue
        first, later, cpu, mean = fmt_steps(r)
        if mean is not None:
            means[(r["kind"], r["dtype"])] = mean
        split = "-"
        if r["kind"] == "reasonlab" and len(r["times"]) > 1:
            split = f"{statistics.mean(r['rollout_s'][1:]):.1f} / {statistics.mean(r['train_s'][1:]):.1f}"
        rewards = [x for x in r["reward"] if x is not None]
        rew = f"{statistics.mean(rewards):.3f}" if rewards else "-"
        lines.append(f"| {r['kind']} | {r['dtype']} | {r['micro_batch']} | {first} | {later} | {cpu} | {split} | {rew} "
                     f"| {r['load_before'].split()[0]} → {r['load_after'].split()[0]} |")
    ratios = []
    for dtype in ("fp32", "bf16"):
        if ("reasonlab", dtype) in means and ("trl", dtype) in means:
            a, b = means[("reasonlab", dtype)], means[("trl", dtype)]
            ratios.append(f"- {dtype}: reasonlab / TRL = {a:.1f} / {b:.1f} s = **{a / b:.2f}** (TRL {b / a:.1f}× slower)")
    if ("reasonlab", "bf16") in means and ("trl", "fp32") in means:
        a, b = means[("reasonlab", "bf16")], means[("trl", "fp32")]
        ratios.append(f"- reasonlab bf16 / TRL fp32 = {a / b:.2f}")
    return "\n".join(lines + ([""] + ratios if ratios else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up step")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "both"], default=None, help="default: both (bf16 with --quick)")
    ap.add_argument("--micro-batch", type=int, default=32, help="sequences per forward/backward, both frameworks")
    ap.add_argument("--only", choices=["reasonlab", "trl"], default=None, help="time one framework only")
    ap.add_argument("--quick", action="store_true", help="1 timed step, bf16 only, no numerics")
    ap.add_argument("--no-numerics", action="store_true", help="skip the fp32-vs-bf16 numerics check")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per framework run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's, = cores)")
    ap.add_argument("--worker", choices=["reasonlab", "trl", "numerics"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        fn = {"reasonlab": worker_reasonlab, "trl": worker_trl}.get(a.worker)
        res = worker_numerics(a.micro_batch) if a.worker == "numerics" else fn(a.dtype, a.steps, a.micro_batch)
        Path(a.result).write_text(json.dumps(res))
        return

    if a.quick:
        a.steps = 1
    dtypes = ["bf16"] if (a.dtype or ("bf16" if a.quick else "both")) == "bf16" else (
        ["fp32"] if a.dtype == "fp32" else ["fp32", "bf16"])
    kinds = [a.only] if a.only else ["reasonlab", "trl"]
    import torch

    print(f"# RL step: reasonlab vs TRL GRPOTrainer — {PROMPTS} prompts × {N} samples, {NEW_TOKENS} new tokens, "
          f"{MODEL}, micro-batch {a.micro_batch}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"threads {a.threads or torch.get_num_threads()}", flush=True)
    print(f"command: python benchmarks/rl_step.py {' '.join(sys.argv[1:])}", flush=True)
    results = []
    for dtype in dtypes:
        for kind in kinds:
            print(f"running {kind} {dtype} ({1 + a.steps} steps), load {load_avg()} ...", flush=True)
            r = run_worker(kind, dtype, a.steps, a.micro_batch, a.timeout, a.threads)
            if "error" in r:
                print(f"  {kind} {dtype} FAILED: {r['error']}\n{r.get('stderr_tail', '')}", flush=True)
            else:
                print(f"  steps (s): {' '.join(f'{x:.1f}' for x in r['times'])}; CPU s: "
                      f"{' '.join(f'{x:.1f}' for x in r['cpu'])}; reward {r['reward']}; loss {r['loss']}", flush=True)
                if kind == "trl":
                    print(f"  TRL saw the same prompts as reasonlab, step by step: {r['same_prompts_as_reasonlab']}")
            results.append(r)
    print()
    print(table(results))
    if not a.quick and not a.no_numerics and len(dtypes) == 2 and "reasonlab" in kinds:
        r = run_worker("numerics", "fp32", 0, a.micro_batch, a.timeout, a.threads)
        print()
        if "error" in r:
            print(f"numerics FAILED: {r['error']}\n{r.get('stderr_tail', '')}")
        else:
            print(f"reasonlab bf16 autocast vs fp32 on one rollout batch ({r['policy_tokens']} policy tokens, same weights):")
            print(f"- log-prob of policy tokens: max |Δ| {r['logp_max_abs_diff']:.4f}, mean |Δ| {r['logp_mean_abs_diff']:.4f} "
                  f"(fp32 training forward vs fp32 sampler: max |Δ| {r['fp32_vs_sampler_max_abs_diff']:.2e})")
            print(f"- ratio exp(logπ_bf16 − logπ_sampler): mean |ratio − 1| {r['bf16_ratio_vs_fp32_sampler_mean_abs_dev']:.4f}, "
                  f"outside [0.8, 1.2]: {r['bf16_ratio_outside_clip']:.2%}")
            if r.get("synthetic_advantages"):
                print("- (all rewards equal on this batch: the gradient uses fixed random per-sequence advantages)")
            print(f"- gradient of the on-policy surrogate: cosine {r['grad_cosine']:.4f}, |g_bf16 − g_fp32| / |g_fp32| "
                  f"{r['grad_rel_l2_diff']:.3f}, norms {r['grad_norm_fp32']:.4f} (fp32) / {r['grad_norm_bf16']:.4f} (bf16)")
    print(f"\nload average at the end: {load_avg()}")


if __name__ == "__main__":
    main()
