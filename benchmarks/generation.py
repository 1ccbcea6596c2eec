"""Generation speed: HFBackend against plain ``model.generate``, in one run, on the same prompts.

    python benchmarks/generation.py                       # batches 1,8,32,64; 128 new tokens
    python benchmarks/generation.py --quick               # batches 1,8; 32 new tokens
    python benchmarks/generation.py --batches 64 --new-tokens 256 --model smollm2-135m
    python benchmarks/generation.py --organism [PATH] --threads 2   # an organism's PPO rollout (8x4, 240 tokens)

Prompts: Countdown test problems rendered with the model's chat template, one distinct problem per
row (no shared prefixes, so the backend's prefill sharing does not help it here).

Fixed lengths, fairly: every row generates exactly ``--new-tokens`` tokens in every column.
``generate`` gets ``min_new_tokens = max_new_tokens = N`` (greedy; the min-length processor
only masks the EOS logits); the backend gets an empty EOS set and no stop strings (greedy). Both
compute one forward per token on the whole batch; the backend also returns logprobs.
tokens/s = rows × N / wall time of the whole call (prefill included), after one warm-up call per
column; the backend's first compiled call (the compile warm-up) is timed separately.

Columns:
- ``generate fp32`` / ``generate bf16``: ``model.generate`` (DynamicCache, sdpa), the baseline.
- ``eager fp32`` / ``eager bf16``: HFBackend(compile=False), the reference decoding loop.
- ``static bf16``: static KV cache + our decode attention, not compiled.
- ``compiled fp32`` / ``compiled bf16``: HFBackend(compile=True), the fast path.

Agreement of bf16 with fp32 (greedy, compiled bf16 against the fp32 reference loop, per row):
- *prefix*: the fraction of the N positions before the first token that differs, averaged;
- *per position*: the fraction of positions whose tokens are equal (after a divergence the two
  continuations differ, so this is mostly the prefix plus chance matches).
Also the fraction of rows where compiled fp32 equals the fp32 reference token for token.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def load(model_name: str, dtype: str):
    from reasonlab.models import load_model

    model, tok = load_model(model_name, dtype=dtype)
    return model.eval(), tok


def countdown_prompts(tok, k: int) -> list[list[int]]:
    from reasonlab.rollout.chat import encode_chat
    from reasonlab.tasks import get_task

    task = get_task("countdown")
    return [encode_chat(tok, task.messages(p)) for p in task.problems("test", k, seed=0)]


@torch.inference_mode()
def time_generate(model, tok, prompts: list[list[int]], n_new: int) -> tuple[float, list[list[int]]]:
    L = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (L - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    kw = dict(do_sample=False, min_new_tokens=n_new, max_new_tokens=n_new, pad_token_id=pad)
    t0 = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=attn, **kw)
    dt = time.perf_counter() - t0
    assert out.shape[1] - L == n_new
    return dt, out[:, L:].tolist()


def time_backend(backend, prompts: list[list[int]], n_new: int) -> tuple[float, list[list[int]]]:
    from reasonlab.rollout.base import SamplingParams

    t0 = time.perf_counter()
    out = backend.generate(prompts, SamplingParams(temperature=0, max_new_tokens=n_new))
    dt = time.perf_counter() - t0
    toks = [g[0].token_ids for g in out]
    assert all(len(t) == n_new for t in toks)
    return dt, toks


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[float, float]:
    prefix, per_pos = [], []
    for x, y in zip(a, b):
        first = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), len(x))
        prefix.append(first / len(x))
        per_pos.append(sum(u == v for u, v in zip(x, y)) / len(x))
    return sum(prefix) / len(prefix), sum(per_pos) / len(per_pos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 128 (256 with --eval)")
    ap.add_argument("--quick", action="store_true", help="batches 1,8 and 32 new tokens")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--columns", default=None, help="default: generate fp32,generate bf16,eager fp32,eager bf16,"
                    "static bf16,compiled fp32,compiled bf16 (--organism: generate bf16,static-hf bf16,static bf16,"
                    "generate fp32,static-hf fp32,static fp32)")
    ap.add_argument("--eval", type=int, default=0, metavar="P",
                    help="instead: an eval-like run, P Countdown problems x 16 samples, temperature 1, "
                         "EOS respected, through the reference loop and the fast paths (bf16)")
    ap.add_argument("--organism", nargs="?", const="", default=None, metavar="PATH",
                    help="instead: an RL-rollout-like run on a model organism (default: the first cached one), "
                         "8 prompts x n=4 at temperature 1, --new-tokens (240) per row, generate vs HFBackend")
    ap.add_argument("--repeats", type=int, default=3, help="--organism: rounds, columns alternating in each")
    args = ap.parse_args()
    if args.organism is not None:
        return organism_rollout(args)
    if args.quick:
        args.batches, args.new_tokens = "1,8", args.new_tokens or 32
    args.new_tokens = args.new_tokens or (256 if args.eval else 128)
    if args.eval:
        return eval_like(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    columns = [c.strip() for c in (args.columns or "generate fp32,generate bf16,eager fp32,eager bf16,static bf16,"
                                   "compiled fp32,compiled bf16").split(",")]
    N = args.new_tokens

    from reasonlab.rollout.hf import HFBackend

    models = {dt: load(args.model, dt) for dt in ("fp32", "bf16")}
    tok = models["fp32"][1]
    prompts_all = countdown_prompts(tok, max(batches))
    print(f"model {args.model}, {N} new tokens, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"prompt lengths {min(map(len, prompts_all))}-{max(map(len, prompts_all))} tokens")

    def make(col: str):
        kind, dt = col.split()
        model, tk = models[dt]
        if kind == "generate":
            return lambda ps: time_generate(model, tk, ps, N)
        be = HFBackend(model, tk, batch_size=max(batches), compile={"eager": False, "static": "auto", "compiled": True}[kind],
                       compile_min_tokens=10**12)
        be.eos_ids = set()  # ignore EOS: every row generates exactly N tokens
        t0 = time.perf_counter()
        be.generate([prompts_all[0], prompts_all[1]], _greedy(4))  # warm-up (compiles if compiled)
        warm = time.perf_counter() - t0
        if kind == "compiled":
            print(f"{col}: first call {warm:.1f} s (compile warm-up {be.stats['compile_s']:.1f} s)")
        return lambda ps: time_backend(be, ps, N)

    runners = {c: make(c) for c in columns}
    rows, tokens = [], {}
    for B in batches:
        ps = prompts_all[:B]
        rate = {}
        for c, run in runners.items():
            run(ps[: min(B, 2)]) if c.startswith("generate") else None  # warm-up for generate
            dt, toks = run(ps)
            rate[c] = B * N / dt
            tokens[(c, B)] = toks
            print(f"  batch {B:3d} {c:14s} {rate[c]:8.1f} tok/s  ({dt:.1f} s)  load {os.getloadavg()[0]:.2f}", flush=True)
        rows.append((B, rate))

    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    base = "generate fp32"
    head = "| batch | " + " | ".join(columns) + (" | best / generate fp32 |" if base in columns else " |")
    print(head)
    print("|" + "---|" * (len(columns) + 1 + (base in columns)))
    for B, rate in rows:
        cells = [f"{rate[c]:.0f}" for c in columns]
        if base in columns:
            best = max(rate[c] for c in columns if not c.startswith("generate"))
            cells.append(f"{best / rate[base]:.1f}x")
        print(f"| {B} | " + " | ".join(cells) + " |")

    ref = "eager fp32" if "eager fp32" in columns else None
    if ref:
        print()
        for B in batches:
            msg = [f"batch {B}:"]
            if "compiled bf16" in columns:
                p, q = agreement(tokens[(ref, B)], tokens[("compiled bf16", B)])
                msg.append(f"bf16 vs fp32 greedy agreement: prefix {p:.3f}, per position {q:.3f};")
            if "compiled fp32" in columns:
                same = sum(a == b for a, b in zip(tokens[(ref, B)], tokens[("compiled fp32", B)])) / B
                msg.append(f"compiled fp32 == reference fp32 on {same:.0%} of rows")
            print(" ".join(msg))


def eval_like(args) -> None:
    """Like ``reasonlab eval`` with recipes/eval-countdown.yaml (n=16, temperature 1, top_p 1,
    256 new tokens, EOS ends a sample), in chunks of 8 problems, timed end to end per path."""
    from reasonlab.rollout.base import SamplingParams
    from reasonlab.rollout.hf import HFBackend

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load(args.model, "bf16")
    prompts = countdown_prompts(tok, args.eval)
    N = args.new_tokens
    print(f"eval-like: {args.eval} problems x 16 samples, {N} new tokens, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.2f}")
    paths = (("reference loop (compile=False)", False, 0), ("static cache, not compiled", "auto", 10**12),
             ("static + compiled (compile=True)", True, 0))
    for name, compile_, min_tokens in paths:
        be = HFBackend(model, tok, batch_size=64, compile=compile_, compile_min_tokens=min_tokens)
        t0 = time.perf_counter()
        n_tok, reasons = 0, {}
        for c in range(0, len(prompts), 8):
            params = SamplingParams(n=16, temperature=1.0, top_p=1.0, max_new_tokens=N, seed=c)
            for g in be.generate(prompts[c : c + 8], params):
                for s in g:
                    n_tok += len(s.token_ids)
                    reasons[s.finish_reason] = reasons.get(s.finish_reason, 0) + 1
        dt = time.perf_counter() - t0
        print(f"  {name:32s} {dt:7.1f} s  {n_tok / dt:6.1f} tok/s  ({n_tok} tokens, compile {be.stats['compile_s']:.1f} s, "
              f"finish {reasons})  load {os.getloadavg()[0]:.2f}", flush=True)


def organism_rollout(args) -> None:
    """The PPO rollout of recipes/countdown-behaviors-cpu.yaml on a model organism: 8 distinct
    Countdown prompts x 4 samples, temperature 1, top_p 1, every row exactly N new tokens (EOS
    ignored: ``min_new_tokens`` for ``generate``, an empty EOS set for the backend). Columns
    alternate within each round (to cancel a shared machine's changing load); the median round is
    reported, as wall tokens/s and as tokens per CPU-second of this process.

    - ``generate``: ``model.generate(do_sample=True)`` on the 32 rows (prompts repeated);
    - ``static-hf``: HFBackend(compile='static', llama_step=False), the transformers forward over
      the static cache (the rollout path before the hand-written step);
    - ``static``: HFBackend(compile='static'), the hand-written Llama step (reasonlab.rollout.hf_llama);
    - ``compiled``: HFBackend(compile=True) (first call's compile warm-up printed separately).
    """
    from pathlib import Path

    from reasonlab.rollout.base import SamplingParams
    from reasonlab.rollout.hf import HFBackend

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.organism
    if not path:
        home = Path(os.environ.get("REASONLAB_HOME", Path.home() / ".cache" / "reasonlab"))
        found = sorted((home / "models" / "organisms").glob("*/config.json"))
        if not found:
            raise SystemExit("no cached organism: pass --organism PATH")
        path = str(found[0].parent)
    N = args.new_tokens if args.new_tokens else 240
    cols = [c.strip() for c in (args.columns or
                                "generate bf16,static-hf bf16,static bf16,generate fp32,static-hf fp32,static fp32").split(",")]
    models = {dt: load(path, dt) for dt in {c.split()[1] for c in cols}}
    tok = next(iter(models.values()))[1]
    prompts = countdown_prompts(tok, 8)
    print(f"organism {path}: 8 prompts x 4 samples, {N} new tokens, temperature 1, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")

    def make(col: str):
        kind, dt = col.split()
        model, tk = models[dt]
        if kind == "generate":
            rows = [p for p in prompts for _ in range(4)]
            L = max(map(len, rows))
            pad = tk.pad_token_id if tk.pad_token_id is not None else tk.eos_token_id
            ids = torch.tensor([[pad] * (L - len(p)) + p for p in rows])
            attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in rows])

            @torch.inference_mode()
            def run(n=N):
                model.generate(input_ids=ids, attention_mask=attn, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                               min_new_tokens=n, max_new_tokens=n, pad_token_id=pad)
            run(2)
            return run
        be = HFBackend(model, tk, batch_size=64, llama_step=kind != "static-hf",
                       compile={"static-hf": "static", "static": "static", "compiled": True, "eager": False}[kind])
        be.eos_ids = set()
        t0 = time.perf_counter()
        be.generate(prompts[:2], SamplingParams(n=2, max_new_tokens=4))
        if kind == "compiled":
            print(f"{col}: first call {time.perf_counter() - t0:.1f} s (compile warm-up {be.stats['compile_s']:.1f} s)")
        return lambda: be.generate(prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=N, seed=0))

    runners = {c: make(c) for c in cols}
    res: dict[str, list[tuple[float, float]]] = {c: [] for c in cols}
    for rnd in range(args.repeats):
        for c, run in runners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            res[c].append((time.perf_counter() - t0, time.process_time() - c0))
            print(f"  round {rnd} {c:16s} {32 * N / res[c][-1][0]:7.0f} tok/s  ({res[c][-1][0]:.1f} s wall, "
                  f"{res[c][-1][1]:.1f} s cpu)  load {os.getloadavg()[0]:.2f}", flush=True)
    base = cols[0]
    med = {c: (sorted(w for w, _ in v)[len(v) // 2], sorted(u for _, u in v)[len(v) // 2]) for c, v in res.items()}
    print(f"\n| column | tok/s (wall) | tok per CPU-s | ms CPU per step | vs {base} (wall) |\n|---|---|---|---|---|")
    for c, (w, u) in med.items():
        print(f"| {c} | {32 * N / w:.0f} | {32 * N / u:.0f} | {u / N * 1e3:.1f} | {med[base][0] / w:.2f}x |")


def _greedy(n: int):
    from reasonlab.rollout.base import SamplingParams

    return SamplingParams(temperature=0, max_new_tokens=n)


if __name__ == "__main__":
    main()
