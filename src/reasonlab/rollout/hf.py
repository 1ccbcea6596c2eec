"""Hugging Face transformers generation backend (CPU or GPU).

We write the decoding loop ourselves instead of calling ``model.generate`` because we need, in one
pass and cheaply: per-token logprobs of the sampled tokens, stop *strings* checked without decoding
the whole text every step, n samples per prompt with a reproducible seed, and speed — on CPU
``generate`` is bound by per-step Python overhead (logits processors, stopping criteria, cache
bookkeeping), not by arithmetic.

Two decoding loops share the prefill, the sampling and the stop rules (:class:`_Outputs`):

- the **reference loop** (``compile=False``): ``DynamicCache``, the model's own attention, one
  forward per token, finished rows dropped at once. Any causal LM; the yardstick for the other.
- the **fast loop** (``compile='auto'`` or ``True``, :mod:`reasonlab.rollout.hf_static`): a
  preallocated KV cache written in place, our grouped-query decode attention, finished rows kept
  until an eighth of the batch is done, and the one-token forward ``torch.compile``-d once for
  all batch sizes and lengths. fp32 greedy tokens equal the reference loop's; seeded samples
  too, as only live rows are sampled.

What each trick buys was measured (benchmarks/generation.py; figures in the README); the ones kept:

- bf16 weights where the CPU multiplies bf16 in hardware (``dtype='auto'``): ~2-4x over fp32.
- Prefill computes logits at the last position only (``logits_to_keep=1``; the full [B, L, V]
  logits were ~30% of a batch-64 prefill) and once per *distinct* prompt (the n samples of a
  prompt share its KV rows: 16x less prefill for ``n=16``).
- Sampling: the logprob is ``x[tok] - logsumexp(x)`` rather than a full log-softmax.
- Static KV cache + our attention (no ``torch.cat`` of the cache per step, no ``repeat_kv``, no
  per-step mask building, no cache copy each time a row finishes): per decode step -20% at batch
  64 on one thread; ~1.7x end to end on an eval-like run where rows finish at different times.
- The compiled step (inductor fuses RMSNorm, rotary, SiLU·mul, residual adds and the softmax):
  a further -10 to -25% per step; costs a warm-up of ~25 s with inductor's disk cache warm,
  about a minute (more on a loaded machine) cold — so ``'auto'`` compiles only once the backend
  has been asked for ``compile_min_tokens`` tokens.

Left padding with explicit ``position_ids`` keeps batched outputs equal to one-by-one outputs.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from reasonlab.rollout.base import Sample, SamplingParams

log = logging.getLogger(__name__)


TINY_PARAMS = 20_000_000  # at most this many parameters: generate on one CPU thread (HFBackend threads='auto')


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' → bf16 where the hardware runs it fast (CUDA with bf16, CPU with AMX/AVX512-BF16), else fp32."""
    if dtype in ("fp32", "float32"):
        return torch.float32
    if dtype in ("bf16", "bfloat16"):
        return torch.bfloat16
    if dtype in ("fp16", "float16"):
        return torch.float16
    if dtype != "auto":
        raise ValueError(f"unknown dtype {dtype!r}; allowed: auto, bf16, fp16, fp32")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices in hardware (Intel AMX or AVX512-BF16).

    On such CPUs a bf16 matmul runs 4-7x faster than fp32 (measured here: 0.88 vs 0.18 TFLOP/s
    on 2 cores of an AMD EPYC with avx512_bf16); elsewhere bf16 is emulated and slower.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def train_dtype(dtype: str) -> str:
    """A training config's ``dtype`` as trainers use it: ``auto`` is bf16 (autocast on fp32 master
    weights) on a GPU or on a CPU that multiplies bf16 in hardware, else fp32.

    Resolved where a trainer starts, not in the config, so a run's saved config means the same on
    every machine. Why not always bf16 on a CPU: where bf16 is emulated it is not a little slower
    but far slower (measured on an AMD EPYC with AVX2 and no AVX-512, one thread: a 4096 × 128 ×
    512 matmul at 26 GFLOP/s in fp32 and 0.8 in bf16; an organism's priming SFT in bf16 did not
    reach step 240 of 480 in 24 minutes).
    """
    if dtype != "auto":
        return dtype
    return "bf16" if torch.cuda.is_available() or cpu_has_fast_bf16() else "fp32"


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` can compute logits at the last positions only (``logits_to_keep``)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorised sampling over a [B, V] float32 logits tensor → (tokens [B], logprobs [B]).

    The logprob is ``x[tok] - logsumexp(x)`` (x = logits / temperature): two passes over the
    vocabulary instead of materialising a full log-softmax.
    """
    if params.temperature == 0:
        tok = logits.argmax(dim=-1)
        return tok, logits.gather(1, tok[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
    scaled = logits / params.temperature
    lse = torch.logsumexp(scaled, dim=-1)
    filtered = scaled
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, idx = torch.sort(filtered, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = (cum - torch.softmax(sorted_logits, dim=-1)) > params.top_p  # keep the first over p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        filtered = torch.full_like(filtered, float("-inf")).scatter(1, idx, sorted_logits)
    probs = torch.exp(scaled - lse[:, None]) if filtered is scaled else torch.softmax(filtered, dim=-1)
    tok = draw(probs, generator)
    return tok, scaled.gather(1, tok[:, None])[:, 0] - lse


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``probs`` [B, V] (nonnegative, not necessarily normalised), by
    inverse-CDF sampling: the first index whose cumulative sum (float64) exceeds u · total.

    The distribution of ``torch.multinomial(probs, 1)``, from B uniform numbers instead of B × V
    exponential ones (measured on CPU, [32, 1528]: 1.85 ms for multinomial, most of it drawing
    the exponentials; ~0.2 ms this way). A zero-probability token is never drawn: its cumulative
    sum equals its predecessor's, so no u falls in its interval.
    """
    cdf = torch.cumsum(probs, dim=-1, dtype=torch.float64)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, dtype=torch.float64, device=probs.device, generator=generator) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total: never past the end
    return torch.searchsorted(cdf, u, right=True)[:, 0]


@dataclass
class _Row:
    out: int  # index into the flat output list
    prompt: list[int]


class _Outputs:
    """Tokens, logprobs and finish state of each row of a batch; applies EOS and stop strings.

    Shared by both decoding loops, so they end samples by exactly the same rules.
    """

    def __init__(self, n_rows: int, params: SamplingParams, eos_ids: set[int], strings: list[str] | None):
        self.tokens: list[list[int]] = [[] for _ in range(n_rows)]
        self.logps: list[list[float]] = [[] for _ in range(n_rows)]
        self.finish: list[str | None] = [None] * n_rows
        self.stop_hit: list[str | None] = [None] * n_rows
        self.tails = [""] * n_rows
        self.eos = eos_ids
        self.stop = params.stop
        self.strings = strings if params.stop else None
        self.keep_chars = max((len(s) for s in params.stop), default=0) + 64

    def add(self, rows: list[int], toks: list[int], logps: list[float]) -> list[int]:
        """Append one token to each of ``rows``; return the positions (into ``rows``) still going."""
        keep = []
        for r, (row, t) in enumerate(zip(rows, toks)):
            self.tokens[row].append(t)
            self.logps[row].append(logps[r])
            if t in self.eos:
                self.finish[row] = "eos"
                continue
            if self.strings is not None:
                self.tails[row] = (self.tails[row] + self.strings[t])[-self.keep_chars :]
                hit = next((s for s in self.stop if s in self.tails[row]), None)
                if hit is not None:
                    self.finish[row], self.stop_hit[row] = "stop", hit
                    continue
            keep.append(r)
        return keep


class HFBackend:
    """Batched sampling with a transformers causal LM.

    Args:
        model: a path/name (loaded with :func:`reasonlab.models.load_model`) or a loaded model.
        tokenizer: required when ``model`` is a loaded model.
        dtype: 'auto' | 'bf16' | 'fp16' | 'fp32'.
        device: 'auto' | 'cpu' | 'cuda' | 'cuda:1' ...
        batch_size: most sequences decoded together in one forward pass.
        compile: the decoding loop. ``False``: the reference loop (``DynamicCache``, model's own
            attention). ``True``: static KV cache + ``torch.compile``-d one-token step
            (:mod:`reasonlab.rollout.hf_static`); raises if the model cannot use it. ``'auto'``:
            the static cache whenever the model supports it, compiled once this backend has been
            asked for ``compile_min_tokens`` tokens in all (so a few small calls never pay the
            compile warm-up), else the reference loop. ``'static'``: the static cache, never compiled
            (for tiny models, whose compile warm-up costs more than it saves in a short run).
        compile_min_tokens: decode budget (rows × max_new_tokens, summed over calls) after which
            ``compile='auto'`` compiles.
        llama_step: uncompiled static-cache decoding of a ``LlamaForCausalLM`` runs the
            hand-written step (:mod:`reasonlab.rollout.hf_llama`) instead of the transformers
            forward; ``False`` keeps the transformers forward (for comparisons).
        threads: torch threads while generating (restored after); 0 leaves them alone. ``'auto'``:
            1 for a model of at most :data:`TINY_PARAMS` parameters on CPU, else 0. A tiny model's
            ops take microseconds, and on a shared 2-core machine a second OpenMP thread mostly
            waits for a descheduled partner: an organism rollout ran 6-7x slower (wall) with 2
            threads than with 1 (benchmarks/generation.py --organism, load ~5 on 2 cores).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 64,
        compile: bool | str = "auto",
        compile_min_tokens: float = 100_000,
        llama_step: bool = True,
        threads: int | str = "auto",
    ):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if isinstance(model, str):
            from reasonlab.models import load_model

            model, tokenizer = load_model(model, dtype=dtype, device=device)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer along with a loaded model")
        compile = {"on": True, "off": False}.get(compile, compile)  # the config spelling
        if compile == "static":  # the static-cache loop, never compiled (tiny models: no warm-up to pay back)
            compile, compile_min_tokens = "auto", float("inf")
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False, 'auto' or 'static', not {compile!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._token_strings: list[str] | None = None
        self._keep_arg = accepts_logits_to_keep(model)
        self.compile = compile
        self.compile_min_tokens = compile_min_tokens
        self.llama_step = llama_step
        n_params = sum(p.numel() for p in model.parameters())
        if threads == "auto":  # tiny models on CPU: one thread (see the class docstring)
            threads = 1 if device == "cpu" and n_params <= TINY_PARAMS else 0
        self.threads = int(threads)
        self.static_reason: str | None = None  # why the static path is off (None: it is on)
        if compile is not False:
            from reasonlab.rollout import hf_static

            self.static_reason = hf_static.unsupported_reason(model)
            if compile is True and self.static_reason:
                raise ValueError(f"compile=True but the static path cannot run this model: {self.static_reason}")
        else:
            self.static_reason = "compile=False"
        self._step: Any = None  # hf_static.StaticStep, built on first use
        self._budget = 0
        self.stats = {"forward_s": 0.0, "generated_tokens": 0, "compile_s": 0.0, "path": ""}

    # ------------------------------------------------------------------ public

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Sample]]:
        """``params.n`` samples per prompt. ``progress(k)`` is called as k more samples finish."""
        rows = [_Row(i * params.n + j, list(p)) for i, p in enumerate(prompts) for j in range(params.n)]
        # Similar lengths together → less padding. Stable sort keeps the seed→sample mapping fixed.
        rows.sort(key=lambda r: len(r.prompt))
        step = self._static_step(len(rows) * params.max_new_tokens)
        flat: list[Sample | None] = [None] * len(rows)
        before = torch.get_num_threads()
        if self.threads and self.threads != before:
            torch.set_num_threads(self.threads)
        try:
            for b, start in enumerate(range(0, len(rows), self.batch_size)):
                batch = rows[start : start + self.batch_size]
                gen = None
                if params.seed is not None:
                    gen = torch.Generator(device=self.device).manual_seed(params.seed * 100_003 + b)
                for row, sample in zip(batch, self._generate_batch([r.prompt for r in batch], params, gen, step)):
                    flat[row.out] = sample
                if progress:
                    progress(len(batch))
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
        return [flat[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]  # type: ignore[misc]

    # ------------------------------------------------------------------ internals

    def token_strings(self) -> list[str]:
        """Decoded text of every vocabulary id, for cheap incremental stop-string checks."""
        if self._token_strings is None:
            n = len(self.tokenizer)
            self._token_strings = self.tokenizer.batch_decode([[i] for i in range(n)])
        return self._token_strings

    def _static_step(self, budget: int) -> Any:
        """The static-cache step to decode with (None: the reference loop); see ``compile``."""
        if self.static_reason:
            return None
        self._budget += budget
        want_compiled = self.compile is True or self._budget >= self.compile_min_tokens
        upgrade = self._step is not None and want_compiled and not (self._step.compiled or self._step.compile_failed)
        if self._step is None or upgrade:
            from reasonlab.rollout import hf_llama
            from reasonlab.rollout.hf_static import StaticStep

            if not want_compiled and self.llama_step and hf_llama.unsupported_reason(self.model) is None:
                self._step = hf_llama.LlamaStep(self.model)
            else:
                self._step = StaticStep(self.model, compiled=want_compiled)
        if hasattr(self._step, "prepare"):
            self._step.prepare()  # the weights as they are now (the trainer updates them in place)
        return self._step

    @torch.inference_mode()
    def _prefill(self, prompts: list[list[int]]):
        """One forward over the *distinct* prompts (left-padded; the n samples of a prompt share
        it). Returns last-position logits per row [B, V] (fp32), the DynamicCache of the distinct
        prompts, their attention mask [U, L], their position ids [U, L] and the row → prompt map."""
        from transformers import DynamicCache

        index: dict[tuple[int, ...], int] = {}
        row_map = [index.setdefault(tuple(p), len(index)) for p in prompts]
        uniq = list(index)
        U, L = len(uniq), max(len(p) for p in uniq)
        ids = torch.full((U, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((U, L), dtype=torch.long)
        for i, p in enumerate(uniq):
            ids[i, L - len(p) :] = torch.tensor(p, dtype=torch.long)
            attn[i, L - len(p) :] = 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        keep = {"logits_to_keep": 1} if self._keep_arg else {}  # not the [U, L, V] logits of every position
        out = self.model(
            input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True, **keep
        )
        logits = out.logits[:, -1, :].float()
        rmap = torch.tensor(row_map, device=self.device)
        return logits[rmap], cache, attn, pos, rmap

    @torch.inference_mode()
    def _generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, gen: torch.Generator | None, step: Any = None
    ) -> list[Sample]:
        t0 = time.perf_counter()
        out = _Outputs(len(prompts), params, self.eos_ids, self.token_strings() if params.stop else None)
        logits, cache, attn, pos, rmap = self._prefill(prompts)
        if step is None:
            self._decode_dynamic(logits, cache, attn, pos, rmap, params, gen, out)
            self.stats["path"] = "eager"
        else:
            self._decode_static(step, logits, cache, attn, pos, rmap, params, gen, out)
            self.stats["path"] = "static+compiled" if step.compiled else "static"
            self.stats["compile_s"] = step.compile_s
        self.stats["forward_s"] += time.perf_counter() - t0

        samples = []
        for toks, logps, finish, hit in zip(out.tokens, out.logps, out.finish, out.stop_hit):
            reason = finish or "length"
            body = toks[:-1] if reason == "eos" else toks
            text = self.tokenizer.decode(body, skip_special_tokens=False)
            self.stats["generated_tokens"] += len(toks)
            samples.append(Sample(toks, logps, text, reason, hit))
        return samples

    def _decode_dynamic(self, logits, cache, attn, pos, rmap, params, gen, out: _Outputs) -> None:
        """The reference loop: DynamicCache, the model's own attention, finished rows dropped at once."""
        if len(rmap) != attn.shape[0] or bool((rmap != torch.arange(len(rmap), device=rmap.device)).any()):
            cache.batch_select_indices(rmap)  # one cache row per sample
        attn, next_pos = attn[rmap], pos[rmap, -1:] + 1
        alive = list(range(len(rmap)))  # output row of each live batch row
        for t in range(params.max_new_tokens):
            tok, logp = sample_next(logits, params, gen)
            keep = out.add(alive, tok.tolist(), logp.tolist())
            if not keep or t == params.max_new_tokens - 1:
                break
            if len(keep) < len(alive):  # drop finished rows from the batch and the cache
                idx = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(idx)
                attn, next_pos, tok = attn[idx], next_pos[idx], tok[idx]
                alive = [alive[r] for r in keep]
            attn = torch.cat([attn, attn.new_ones((len(alive), 1))], dim=1)
            logits = self.model(
                input_ids=tok[:, None],
                attention_mask=attn,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1, :].float()
            next_pos = next_pos + 1

    def _decode_static(self, step, logits, dyn, attn, pos, rmap, params, gen, out: _Outputs) -> None:
        """The fast loop: K/V in a slot cache (growing in blocks), one (compiled) step per token.

        Finished rows stay in the batch (fed a pad token, their outputs ignored) until an eighth
        of it is finished; then the batch is compacted. Only the live rows are sampled, so the
        random stream — hence seeded samples — matches the reference loop. A batch of one row
        gets a finished twin: every batch then has >= 2 rows and one compiled graph serves all.
        """
        from reasonlab.rollout.hf_static import GROW, SlotCache

        B, L = len(rmap), attn.shape[1]
        total = L + params.max_new_tokens  # cache slots this batch can need
        if B == 1:
            rmap = rmap.repeat(2)
        cache = SlotCache.from_prefill(dyn, rmap, min(total, L + GROW))
        valid = torch.zeros((len(rmap), total), dtype=torch.bool, device=self.device)
        valid[:, :L] = attn[rmap].bool()
        next_pos = pos[rmap, -1:] + 1
        rows = list(range(len(rmap)))  # output row of each batch row (the twin has B: no output)
        live = [r < B for r in rows]
        for t in range(params.max_new_tokens):
            at = [i for i, ok in enumerate(live) if ok]
            idx = torch.tensor(at, device=self.device) if len(at) < len(rows) else None
            tok, logp = sample_next(logits if idx is None else logits[idx], params, gen)
            keep = out.add([rows[i] for i in at], tok.tolist(), logp.tolist())
            if not keep or t == params.max_new_tokens - 1:
                break
            feed = tok
            if len(keep) < len(at) or idx is not None:  # finished rows are fed a pad token
                feed = torch.full((len(rows),), self.pad_id, dtype=torch.long, device=self.device)
                feed[torch.tensor(at, device=self.device)] = tok
                for r in set(range(len(at))) - set(keep):
                    live[at[r]] = False
            if len(rows) - len(keep) >= max(1, len(rows) // 8) and len(rows) > 2:  # compact the batch
                sel = [i for i, ok in enumerate(live) if ok]
                sel += [i for i, ok in enumerate(live) if not ok][: max(0, 2 - len(sel))]
                sidx = torch.tensor(sel, device=self.device)
                cache = cache.resized(rows=sidx)
                valid, next_pos, feed = valid[sidx], next_pos[sidx], feed[sidx]
                rows, live = [rows[i] for i in sel], [live[i] for i in sel]
            if cache.capacity < L + t + 1:  # grow the cache by a block
                cache = cache.resized(capacity=min(total, cache.capacity + GROW))
            valid[:, L + t] = True
            mask = valid[:, None, None, : cache.capacity].contiguous()  # fixed strides: no recompiles
            logits = step(feed[:, None], next_pos, mask, cache)
            next_pos = next_pos + 1


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that should end generation: the tokenizer's EOS, the generation config's, and the
    chat end-of-turn marker when the vocabulary has one."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None) if gc is not None else None
    if isinstance(e, int):
        ids.add(e)
    elif isinstance(e, (list, tuple)):
        ids.update(e)
    for marker in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    if not ids:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token")
    return ids
