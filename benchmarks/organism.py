"""Training tokens/s of organism pretraining and priming SFT, against a plain PyTorch loop, in one run.

    python benchmarks/organism.py [--steps 20] [--width 128] [--layers 4]

Columns, all on the same model shape and the same batch (batch × seq_len tokens per step):

- plain fp32: the textbook loop — ``model(input_ids, labels=input_ids).loss``, AdamW, fp32;
- plain bf16: the same loop under ``torch.autocast(bfloat16)``;
- reasonlab pretrain: :func:`reasonlab.organisms.train_lm` (what ``reasonlab models pretrain`` runs),
  with the dtype it picks on this CPU;
- TRL SFT: :func:`reasonlab.train.sft.train_sft` (TRL's SFTTrainer, assistant-only loss) on priming
  traces, tokens/s counted over the padded batch it trains on.

Prints the CPU (AMX / avx512_bf16), the chosen dtype and each column's tokens/s and ratio to plain fp32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def cpu_flags() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = [f for f in ("amx_bf16", "avx512_bf16") if f in info]
    return f"{name} ({', '.join(flags) or 'no bf16 extensions'})"


def make_model(width: int, layers: int, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                      num_attention_heads=width // 32, num_key_value_heads=width // 32, max_position_embeddings=1024,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def plain_loop(model, data, steps: int, batch: int, seq: int, bf16: bool) -> float:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()

    def one():
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=g)
        x = torch.stack([data[s : s + seq] for s in starts.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    one()  # warm-up
    t0 = time.time()
    for _ in range(steps):
        one()
    return steps * batch * seq / (time.time() - t0)


def main() -> None:
    import torch

    from reasonlab.organisms import OrganismSpec, pick_train_dtype, train_lm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=384)
    ap.add_argument("--vocab", type=int, default=2048)
    args = ap.parse_args()
    print(f"CPU: {cpu_flags()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    data = torch.randint(0, args.vocab, (200_000,))
    res = {}
    res["plain fp32"] = plain_loop(make_model(args.width, args.layers, args.vocab), data, args.steps, args.batch, args.seq, False)
    res["plain bf16"] = plain_loop(make_model(args.width, args.layers, args.vocab), data, args.steps, args.batch, args.seq, True)
    dtype = pick_train_dtype("auto")
    m = make_model(args.width, args.layers, args.vocab)
    train_lm(m, data, steps=1, batch_size=args.batch, seq_len=args.seq, lr=1e-3, warmup=0, dtype=dtype, seed=0,
             log=lambda s: None)  # warm-up
    st = train_lm(m, data, steps=args.steps, batch_size=args.batch, seq_len=args.seq, lr=1e-3, warmup=0, dtype=dtype,
                  seed=0, log=lambda s: None)
    res[f"reasonlab pretrain ({dtype})"] = st["tokens_per_second"]
    # priming SFT through TRL on traces, with a model of the same shape (its own tokenizer)
    from reasonlab.episode import append_jsonl
    from reasonlab.models import create_tiny
    from reasonlab.priming.traces import generate_traces
    from reasonlab.train.sft import SFTSettings, train_sft

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = create_tiny(tmp / "m", layers=args.layers, width=args.width, heads=args.width // 32,
                           vocab_size=args.vocab)
        eps = generate_traces("all_strategies", 256, seed=0, task_args={"min_numbers": 3, "max_numbers": 3,
                                                                       "number_range": [1, 10], "target_range": [5, 30]})
        append_jsonl(tmp / "t.jsonl", eps)
        for label, dt in (("TRL SFT fp32", "fp32"), (f"TRL SFT {dtype}", dtype)):
            if label in res:
                continue
            cfg = SFTSettings(model=str(path), data=[str(tmp / "t.jsonl")], out=str(tmp / f"sft-{dt}"),
                              max_steps=args.steps + 1, batch_size=args.batch, max_length=args.seq, lr=1e-3,
                              save_steps=10_000, dtype=dt, logging_steps=1)
            t0 = time.time()
            train_sft(cfg, show_progress=False)
            el = time.time() - t0
            hist = json.loads((tmp / f"sft-{dt}" / "log_history.json").read_text())
            runtime = next((h["train_runtime"] for h in hist if "train_runtime" in h), el)
            res[label] = (args.steps + 1) * args.batch * args.seq / runtime  # padded tokens per second
    base = res["plain fp32"]
    print(f"model {args.layers}x{args.width}, batch {args.batch} x {args.seq} tokens, {args.steps} steps")
    print(f"{'loop':32s} {'tokens/s':>10s} {'vs plain fp32':>14s}")
    for k, v in res.items():
        print(f"{k:32s} {v:10,.0f} {v / base:13.2f}x")


if __name__ == "__main__":
    main()
