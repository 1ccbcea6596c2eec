"""Pretrained model organisms: small from-scratch Llamas with a base model's competencies for Countdown.

The cognitive-behaviors study (arXiv 2503.01307) compares two *pretrained* base models that both read
a Countdown prompt and do arithmetic; one of them (Qwen-2.5-3B) already writes verification and
backtracking now and then, the other (Llama-3.2-3B) rarely does. A random-init model has neither the
knowledge nor the behaviors, so it stands in for neither. An organism is pretrained here, in minutes
on a CPU, on a synthetic corpus that gives it what a base LM brings to Countdown:

- **arithmetic facts** over the task's range, ``a op b = c`` (and ``c = a op b``, the form backward
  chaining writes) for ``a, b ≤ fact_max``; a fixed 10 % of the fact table is *held out* of the
  corpus, so the competence report can say whether the model knows arithmetic or memorised lines;
- **Countdown-like problems with direct answers**, in the chat layout the rollouts use (reading the
  prompt's numbers, the ``<think>``/``<answer>`` format, an answer without exploration);
- for the **behavior-rich** base only: at ``behavior_rate``, the Countdown document is instead a
  search trace of :mod:`reasonlab.priming` showing verification, backtracking, subgoal setting and
  backward chaining (``all_strategies`` traces, correct answers).

The **behavior-poor** base (``behavior_rate = 0``) is Llama's stand-in, the **behavior-rich** base
Qwen's. Everything else — tokenizer, size, corpus size, steps, seed — is shared, so the two differ
only in the behavior documents. Continued pretraining (``init_from`` + a ``corpus`` JSONL) is the
curated-pretraining arm of the study. Since session 15 the presets' rich base is the poor one
*continued* on the rich corpus (``init_from`` naming the poor base, 1 200 steps): pretrained from
scratch with the traces its searches did not work (8% at step 0, below the poor base's 14%);
continued, it solves 28% (18% for the same 1 200 steps without traces; docs/priming.md).

Design choices, by measurement (session 3, Intel Xeon with AMX, 2 cores; figures in the README):

- **Tokenizer: numbers as whole tokens.** A byte-level BPE trained on the corpus, with every integer
  up to ``fact_max**2`` written often enough in its training text that it becomes one token (checked
  after training, :func:`split_numbers`). Copying a prompt's number is then a one-token copy and a
  fact a one-token lookup. Digit tokens were not tried: whole numbers already gave 88–90% on
  held-out facts (the model learns arithmetic, not lines), which is what the study needs.
- **Size and batch.** 4 layers × 128 wide (1.25 M parameters, 2 048-token vocabulary), 1 500 steps
  of 8 × 384 tokens (about 9 minutes at 9–11k tokens/s). A 4×192 pilot with 24 × 384-token
  batches for 300 steps learned the grammar but not the content (19% held-out facts, answers with
  numbers the prompt did not give); small batches and more steps for the same tokens fixed that.
  Direct answers that restate the problem and keep the prompt's order of numbers gave the first
  non-zero step-0 accuracy (8.6%, pass@4 23%).
- **dtype.** bf16 autocast where the CPU has fast bf16 (AMX or avx512_bf16), fp32 otherwise
  (:func:`reasonlab.rollout.hf.cpu_has_fast_bf16`): 1.1× at this size, 1.6× at 4×256
  (``benchmarks/organism.py``).
- **Priming is the weak point at this size.** The behavior-poor base primed on 1 024 ``standard``
  traces (240 SFT steps) wrote the traces' form but lost the numbers and the target and solved
  nothing. Terse traces that restate the state (the ``organism`` phrasing family of
  :mod:`reasonlab.priming.phrases`) and 480 steps gave 2.0% step-0 accuracy (pass@4 7.8%), at the
  cost of arithmetic (seen facts 98% → 52%); docs/priming.md has the pilots. The rich base, which
  saw traces through its whole pretraining, runs them better (6.6%) and keeps its arithmetic.

Pretraining is cached by a content hash of the spec (and of the initial model and corpus file), under
``$REASONLAB_HOME/models/organisms/``; experiments and tests that ask for the same organism reuse it.
The presets' organisms ship with the package (``reasonlab/data/organisms``, made by :func:`pretrain`
from the presets' specs; 5 MB each), as the study downloads its base models: a cpu preset then
starts at priming instead of 21 minutes of pretraining. ``REASONLAB_SHIPPED_ORGANISMS=0`` pretrains
them here instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from reasonlab.config import Strict

CORPUS_VERSION = 2  # bump when the corpus or the training loop changes what a spec produces

CPU_TASK_ARGS = {"min_numbers": 3, "max_numbers": 3, "number_range": [1, 10], "target_range": [5, 30]}
_OPS = ("+", "-", "*", "/")
# a direct answer's thinking: empty, or restating the problem (reading the prompt: numbers and
# target copied, no exploration, no check)
_DIRECT_THINK = [
    "",
    "The numbers are {numbers} and the target is {target}.",
    "I have {numbers} and want {target}.",
    "Numbers {numbers}, target {target}.",
]


class CopyWarmup(Strict):
    """A copying-first stage before an organism's pretraining: pure repetition documents.

    Each document is a random sequence of ``min_len``–``max_len`` tokens drawn uniformly from the
    ``top_tokens`` most frequent tokens of the corpus (its tokenizer's training text), written
    ``repeats`` times, one copy per line, then ``<|endoftext|>`` (:func:`copy_warmup_documents`).
    The first copy is unpredictable; every later one is predictable only by looking back for the
    previous occurrence of the current token and copying what followed it — the induction circuit.
    The organism then goes on to its corpus with those heads in place.

    Why (docs/r1ci.md, pilots): the code organism pretrained on its task corpus alone wrote the right
    program skeletons with the wrong data — it could not copy a problem's data into a program nor a
    program's output into its answer — and neither copy documents (a question written twice) nor
    random-sequence copy documents *mixed into* the corpus, nor a 4×256 organism, changed that within
    the corpus's token budget. Measured there (pilots on a fresh 4×128 organism): on pure repetition
    of token ids at lr 1e-3, 32 × 64-token windows, copying forms abruptly after ~1 100 steps (0.1% →
    98% of the second copy's tokens); at lr 3e-3–4e-3 it had not formed by 400–830 steps. In the code
    organism (2 000 copy steps, then the corpus at lr 4e-3 with ``mix`` 0.2) the random-sequence
    copying did not survive the corpus stage, but the organism copied more of its tasks' data than
    without the stage (subset-count programs right 11/16 against 2/16); not yet enough for the
    code-interpreter preset, which does not use it.
    """

    steps: int = Field(0, ge=0, description="optimizer steps of the copy stage (0 = no stage)")
    batch_size: int = Field(32, ge=1)
    seq_len: int = Field(96, ge=16, description="window length of the copy stage (short: several documents a window)")
    lr: float | None = Field(None, gt=0, description="peak learning rate of the copy stage (None = the spec's lr)")
    warmup: int = Field(30, ge=0)
    min_len: int = Field(4, ge=1, description="shortest random sequence, in tokens")
    max_len: int = Field(20, ge=1, description="longest random sequence, in tokens")
    repeats: int = Field(3, ge=2, description="copies of the sequence in a document")
    top_tokens: int = Field(512, ge=2, description="tokens drawn from: the corpus's most frequent ones")
    documents: int = Field(60000, ge=1, description="distinct copy documents (the stage samples windows of them)")
    mix: float = Field(0.0, ge=0, description="copy documents kept in the corpus stage, as a share of the corpus's "
                       "document count (shuffled in), so the circuit keeps being used after the stage")

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_len > self.max_len:
            raise ValueError(f"copy_warmup: min_len ({self.min_len}) is above max_len ({self.max_len})")
        return self


class OrganismSpec(Strict):
    """What an organism is pretrained on and how; its content hash names the cached model."""

    name: str = Field("organism", description="label used in the cache folder name")
    behavior_rate: float = Field(0.0, ge=0, le=1, description="share of Countdown documents that are behavior traces "
                                 "(0 = the behavior-poor base, e.g. 0.3 = the behavior-rich base)")
    task_args: dict[str, Any] = Field(default_factory=lambda: dict(CPU_TASK_ARGS), description="Countdown range")
    fact_max: int = Field(30, ge=2, description="arithmetic facts a op b for a, b in 0..fact_max")
    heldout_facts: float = Field(0.1, ge=0, lt=1, description="share of the fact table kept out of the corpus")
    countdown_docs: int = Field(10000, ge=0)
    trace_phrasing: str = Field("standard", description="template family of the behavior traces (reasonlab.priming.phrases)")
    trace_search: Literal["guided", "faithful"] = Field("guided", description="the search the behavior traces "
                                                        "narrate (reasonlab.priming.search: guided by an oracle, "
                                                        "or faithful: one a model can run as written)")
    chat_share: float = Field(0.3, ge=0, le=1, description="share of Countdown documents in the rollouts' chat layout; "
                              "the rest state the problem in one line (fewer tokens for the same skill)")
    fact_docs: int = Field(4000, ge=0)
    facts_per_doc: int = Field(24, ge=1)
    layers: int = 4
    width: int = 256
    heads: int = 8
    vocab_size: int = 2048
    seq_len: int = Field(512, ge=16)
    batch_size: int = Field(32, ge=1)
    steps: int = Field(1200, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(60, ge=0)
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    init_from: str | None = Field(None, description="continued pretraining: start from this model folder")
    corpus: str | None = Field(None, description="JSONL of {'text': ...} documents instead of the synthetic corpus")
    copy_warmup: CopyWarmup | None = Field(None, description="a copying-first stage (pure repetition documents) "
                                           "before the corpus; None = none (CopyWarmup explains why)")

    @field_validator("trace_phrasing")
    @classmethod
    def _phrasing(cls, v: str) -> str:
        from reasonlab.priming.phrases import check_family

        return check_family(v)


# ----------------------------------------------------------------------------- corpus


def fact_table(fact_max: int) -> list[tuple[int, str, int, int]]:
    """Every fact ``a op b = c`` with ``0 ≤ a, b ≤ fact_max``: + and *, − when a ≥ b, exact ÷ by b ≥ 1."""
    out = []
    for a in range(fact_max + 1):
        for b in range(fact_max + 1):
            out.append((a, "+", b, a + b))
            out.append((a, "*", b, a * b))
            if a >= b:
                out.append((a, "-", b, a - b))
            if b >= 1 and a % b == 0:
                out.append((a, "/", b, a // b))
    return out


def is_heldout(fact: tuple[int, str, int, int], share: float) -> bool:
    """A fixed share of facts, by a content hash (the same for every seed and organism)."""
    a, op, b, _ = fact
    h = int(hashlib.sha256(f"fact|{a}{op}{b}".encode()).hexdigest()[:8], 16)
    return h % 1000 < share * 1000


def chat_text(messages: list[dict[str, str]]) -> str:
    """The ChatML layout of :data:`reasonlab.models.CHATML_TEMPLATE` (what rollouts feed the model)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def _fact_doc(rng: random.Random, facts: list, k: int) -> str:
    lines = []
    for a, op, b, c in rng.sample(facts, min(k, len(facts))):
        lines.append(f"{c} = {a} {op} {b}" if rng.random() < 0.25 else f"{a} {op} {b} = {c}")
    return rng.choice([", ", "\n", ". "]).join(lines) + "."


def corpus_documents(spec: OrganismSpec, *, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The synthetic pretraining corpus of ``spec`` (deterministic for its seed)."""
    from reasonlab.priming.traces import trace_episode
    from reasonlab.tasks import get_task

    rng = random.Random(f"organism-corpus|{spec.seed}")
    facts = [f for f in fact_table(spec.fact_max) if not is_heldout(f, spec.heldout_facts)]
    docs = [_fact_doc(rng, facts, spec.facts_per_doc) for _ in range(spec.fact_docs)]
    task = get_task("countdown", **spec.task_args)
    pool = _train_pool(task, spec.seed)
    total = spec.countdown_docs
    for i in range(total):
        problem = rng.choice(pool)
        numbers, target = problem.metadata["numbers"], problem.metadata["target"]
        if rng.random() < spec.behavior_rate:
            response = trace_episode(task, problem, "all_strategies", seed=rng.randrange(1 << 30),
                                     paraphrase=spec.trace_phrasing, search=spec.trace_search).completion
        else:
            think = rng.choice(_DIRECT_THINK).format(target=target, numbers=numbers)
            answer = direct_answer(tuple(numbers), target) or problem.metadata.get("solution")
            response = f"<think>{think}</think>\n<answer>{answer}</answer>"
        if rng.random() < spec.chat_share:
            docs.append(chat_text(task.messages(problem) + [{"role": "assistant", "content": response}]))
        else:
            docs.append(f"Using the numbers {numbers}, create an equation that equals {target}.\n{response}")
        if progress and (i + 1) % 500 == 0:
            progress(i + 1, total)
    rng.shuffle(docs)
    return docs


def replay_documents(model_path: str | os.PathLike, n: int, *, seed: int = 0, chat: bool = False) -> list[str]:
    """``n`` documents of the pretraining corpus of the organism at ``model_path`` (its spec is in its
    ``reasonlab.json``), drawn with ``seed``: arithmetic fact lists and one-line Countdown problems with
    direct answers. The chat-layout Countdown documents are left out unless ``chat``, so that priming
    SFT that replays them still answers every chat prompt with its condition's trace.

    Replay keeps what priming SFT would otherwise overwrite (docs/priming.md: seen facts 98% → 52%).
    """
    meta_path = Path(model_path) / "reasonlab.json"
    spec = json.loads(meta_path.read_text()).get("organism") if meta_path.exists() else None
    if not spec:
        raise ValueError(f"{model_path} is not a pretrained organism (no organism spec in reasonlab.json): "
                         "replay needs the base's own corpus")
    spec = OrganismSpec(**spec)
    if spec.corpus:
        docs = load_corpus_file(spec.corpus)
    else:
        docs = corpus_documents(spec)
    if not chat:
        docs = [d for d in docs if not d.startswith("<|im_start|>")]
    if n > len(docs):
        raise ValueError(f"asked for {n} replay documents, the corpus has {len(docs)}")
    return random.Random(seed).sample(docs, n)


def replay_episodes(model_path: str | os.PathLike, n: int, *, seed: int = 0, chat: bool = False) -> list:
    """:func:`replay_documents` as SFT Episodes: one assistant message each (no prompt, so SFT trains on
    the whole document), ``task="replay"``."""
    from reasonlab.episode import Episode

    return [Episode(task="replay", problem_id=f"replay-{seed}-{i}", sample_index=0,
                    messages=[{"role": "assistant", "content": d}], meta={"source": "replay", "seed": seed})
            for i, d in enumerate(replay_documents(model_path, n, seed=seed, chat=chat))]


@lru_cache(maxsize=100_000)
def direct_answer(numbers: tuple[int, ...], target: int) -> str | None:
    """A solution that keeps the prompt's order of the numbers where one does (else the first
    permutation that has one), with the fewest parentheses: what a direct answer writes.

    Exhaustive over orders, operators and the two bracketings of three numbers (and the five of
    four); ``None`` for more numbers (the caller falls back to the task's reference solution).
    """
    from fractions import Fraction
    from itertools import permutations, product

    if len(numbers) not in (3, 4):
        return None
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
           "/": lambda a, b: a / b if b else None}

    def shapes(xs):  # (expression text, value) for each bracketing, left-to-right first
        if len(xs) == 3:
            a, b, c = xs
            for o1, o2 in product(ops, repeat=2):
                ab = ops[o1](Fraction(a), Fraction(b))
                if ab is not None and (v := ops[o2](ab, Fraction(c))) is not None:
                    yield f"({a} {o1} {b}) {o2} {c}", v
                bc = ops[o2](Fraction(b), Fraction(c))
                if bc is not None and (v := ops[o1](Fraction(a), bc)) is not None:
                    yield f"{a} {o1} ({b} {o2} {c})", v
        else:
            a, b, c, d = xs
            for o1, o2, o3 in product(ops, repeat=3):
                ab, cd = ops[o1](Fraction(a), Fraction(b)), ops[o3](Fraction(c), Fraction(d))
                if ab is not None and cd is not None and (v := ops[o2](ab, cd)) is not None:
                    yield f"({a} {o1} {b}) {o2} ({c} {o3} {d})", v
                if ab is not None and (abc := ops[o2](ab, Fraction(c))) is not None and \
                        (v := ops[o3](abc, Fraction(d))) is not None:
                    yield f"(({a} {o1} {b}) {o2} {c}) {o3} {d}", v

    for order in dict.fromkeys(permutations(numbers)):
        for text, value in shapes(order):
            if value == target:
                return text
    return None


def _train_pool(task, seed: int, cap: int = 2000) -> list:
    """Distinct train problems of the range, up to ``cap`` (the cpu range has only ~1 400)."""
    try:
        return task.problems("train", cap, seed=seed)
    except RuntimeError as e:  # fewer distinct problems than cap: take them all
        m = re.search(r"only (\d+) distinct", str(e))
        if not m:
            raise
        return task.problems("train", int(m.group(1)), seed=seed)


def load_corpus_file(path: str | os.PathLike) -> list[str]:
    """Documents from a JSONL file of ``{"text": ...}`` objects; a bad line is an error naming it."""
    docs = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                docs.append(obj["text"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{i}: each line must be a JSON object with a 'text' field ({e})") from None
    if not docs:
        raise ValueError(f"{path}: no documents")
    return docs


# ----------------------------------------------------------------------------- tokenizer


def number_words(max_value: int) -> list[str]:
    """Text that makes BPE learn every integer up to ``max_value`` as one token, with and without a space."""
    nums = [str(i) for i in range(max_value + 1)]
    return [" ".join(nums)] * 4 + ["[" + ", ".join(nums) + "]"] * 2 + ["\n".join(nums)] * 2


def build_tokenizer(texts: list[str], vocab_size: int, out: Path | None = None):
    """Byte-level BPE trained on ``texts`` with the ChatML specials (the organisms' and ``create_tiny``'s)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from reasonlab.models import CHATML_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=None, eos_token="<|im_end|>", pad_token="<pad>",
                                  unk_token=None, additional_special_tokens=["<|endoftext|>", "<|im_start|>"])
    tok.chat_template = CHATML_TEMPLATE
    if out is not None:
        tok.save_pretrained(out)
    return tok


def split_numbers(tok, max_value: int) -> list[int]:
    """Integers ≤ ``max_value`` that the tokenizer does *not* keep whole after a space."""
    return [i for i in range(max_value + 1) if len(tok.encode(f" {i}", add_special_tokens=False)) != 1]


# ----------------------------------------------------------------------------- pretraining


_HASH_IF_CHANGED = {"trace_phrasing": "standard", "copy_warmup": None, "trace_search": "guided"}


def spec_hash(spec: OrganismSpec) -> str:
    h = hashlib.sha256()
    fields = spec.model_dump(exclude={"name"})
    for k, default in _HASH_IF_CHANGED.items():  # fields added later: at their default, old caches stay valid
        if fields[k] == default:
            del fields[k]
    if fields.get("copy_warmup") is not None and not fields["copy_warmup"]["steps"]:
        del fields["copy_warmup"]  # a stage of 0 steps is no stage
    for k in ("init_from", "corpus"):  # a file's content names the organism (hashed below), not its path
        if fields[k]:
            fields[k] = "(content)"
    h.update(json.dumps({"v": CORPUS_VERSION, **fields}, sort_keys=True).encode())
    for p in (spec.init_from, spec.corpus):
        if p:
            path = Path(p)
            files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
            for f in files:
                h.update(f.name.encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:12]


def organism_path(spec: OrganismSpec) -> Path:
    from reasonlab.models import models_dir

    return models_dir() / "organisms" / f"{spec.name}-{spec_hash(spec)}"


def shipped_dir() -> Path:
    """The organisms that ship with reasonlab (``reasonlab/data/organisms/<name>-<hash>``): the
    presets' bases, pretrained by this module from their specs, as the study downloads its base models."""
    return Path(__file__).parent / "data" / "organisms"


def use_shipped() -> bool:
    """``REASONLAB_SHIPPED_ORGANISMS=0`` pretrains every organism here instead of using a shipped one."""
    return os.environ.get("REASONLAB_SHIPPED_ORGANISMS", "1").strip().lower() not in ("0", "false", "no", "off")


def organism_source(spec: OrganismSpec) -> Literal["cached", "shipped", "pretrain"]:
    """Where :func:`ensure_organism` will take the organism from: the cache, the shipped weights, or pretraining."""
    path = organism_path(spec)
    if (path / "config.json").exists():
        return "cached"
    if use_shipped() and (shipped_dir() / path.name / "config.json").exists():
        return "shipped"
    return "pretrain"


def organism_status(spec: OrganismSpec) -> str:
    """One line for the console: where the organism comes from."""
    path = organism_path(spec)
    return {"cached": f"organism cached at {path}",
            "shipped": f"organism {path.name} from the shipped weights (REASONLAB_SHIPPED_ORGANISMS=0 pretrains it here)",
            "pretrain": f"pretraining the organism into {path}"}[organism_source(spec)]


def ensure_organism(spec: OrganismSpec, *, log: Callable[[str], None] | None = print, retrain: bool = False) -> Path:
    """The pretrained organism for ``spec``: from the cache, from the shipped weights (copied into
    the cache), or pretrained now (then cached). ``retrain`` pretrains it even when it exists."""
    path = organism_path(spec)
    source = "pretrain" if retrain else organism_source(spec)
    if source == "cached":
        return path
    if source == "shipped":
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(shipped_dir() / path.name, tmp)
        os.replace(tmp, path)
        return path
    return pretrain(spec, path, log=log)


def pick_train_dtype(dtype: str) -> str:
    from reasonlab.rollout.hf import train_dtype

    return train_dtype(dtype)


def pack(tok, docs: list[str], *, extra_ids: list[list[int]] | None = None, seed: int = 0):
    """Token ids of every document, each followed by ``<|endoftext|>``, as one int64 tensor.

    ``extra_ids``: documents already in token ids (ending in their own ``<|endoftext|>``), shuffled in
    among ``docs`` with ``seed``; without them the order of ``docs`` is kept."""
    import torch

    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    encs = [enc + [eot] for enc in tok(docs, add_special_tokens=False)["input_ids"]]
    if extra_ids:
        encs += extra_ids
        random.Random(f"pack|{seed}").shuffle(encs)
    return torch.tensor([i for enc in encs for i in enc], dtype=torch.long)


def copy_warmup_documents(tok, texts: list[str], cw: CopyWarmup, *, seed: int = 0, n: int | None = None) -> list[list[int]]:
    """The copy stage's documents as token ids (``n`` of them, default ``cw.documents``): a random
    sequence of ``cw.min_len``–``cw.max_len`` tokens, uniform over the ``cw.top_tokens`` most frequent
    tokens of ``texts`` (special tokens and tokens holding a line break left out), followed by a newline,
    ``cw.repeats`` times, then ``<|endoftext|>``.

    Built in token ids, not text: decoded random tokens would re-encode differently, and the later
    copies would no longer be token-for-token copies of the first.
    """
    from collections import Counter

    # no special tokens and no token holding a line break: each line is exactly one copy
    skip = set(tok.all_special_ids) | {i for i in range(len(tok)) if "\n" in tok.decode([i])}
    counts = Counter(i for enc in tok(texts, add_special_tokens=False)["input_ids"] for i in enc if i not in skip)
    vocab = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: cw.top_tokens]]
    if len(vocab) < 2:
        raise ValueError("copy_warmup: the corpus has fewer than 2 distinct tokens to draw copy sequences from")
    nl = tok.encode("\n", add_special_tokens=False)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    rng = random.Random(f"copy-warmup|{seed}")
    out = []
    for _ in range(cw.documents if n is None else n):
        seq = [rng.choice(vocab) for _ in range(rng.randint(cw.min_len, cw.max_len))]
        out.append((seq + nl) * cw.repeats + [eot])
    return out


def copy_accuracy(model, docs: list[list[int]], *, newline: list[int], prefix: list[int] = ()) -> dict[str, float]:
    """How well ``model`` copies: teacher-forced greedy predictions on the second copy of each copy
    document (its first token left out: nothing announces it). ``token``: share of tokens predicted
    right; ``exact``: share of sequences copied whole — what greedy decoding would reproduce.
    ``prefix``: tokens fed before each document (pretraining passes ``<|endoftext|>``, which precedes
    every document of the packed stream the model was trained on)."""
    import torch

    ok = n = exact = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for doc in docs:
            k = doc.index(newline[0])  # the first copy's length (copy sequences hold no line break)
            seq = doc[:k]
            ids = torch.tensor([list(prefix) + doc[: 2 * (k + len(newline))]], device=model.device)
            pred = model(input_ids=ids).logits[0].argmax(-1).tolist()
            start = len(prefix) + k + len(newline)
            hits = [pred[start + j - 1] == seq[j] for j in range(1, len(seq))]
            ok += sum(hits)
            n += len(hits)
            exact += all(hits)
    model.train(was_training)
    return {"token": ok / max(1, n), "exact": exact / max(1, len(docs))}


def pretrain(spec: OrganismSpec, out: Path, *, log: Callable[[str], None] | None = print) -> Path:
    """Pretrain (or continue pretraining) an organism on its corpus and save it as an HF folder at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    say = log or (lambda s: None)
    t0 = time.time()
    torch.manual_seed(spec.seed)
    if spec.corpus:
        docs = load_corpus_file(spec.corpus)
    else:
        docs = corpus_documents(spec)
    t_corpus = time.time() - t0
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if spec.init_from:
        tok = AutoTokenizer.from_pretrained(spec.init_from)
        model = AutoModelForCausalLM.from_pretrained(spec.init_from, dtype=torch.float32)
    else:
        from reasonlab.priming.traces import generate_traces

        # the tokenizer also learns the priming traces' words (any condition's), so that priming
        # a behavior-poor base never meets text its tokenizer splits into bytes
        extra = [e.completion for e in generate_traces("all_strategies", 300, seed=spec.seed + 1, task_args=spec.task_args)]
        tok = build_tokenizer(docs[:4000] + extra + number_words(spec.fact_max ** 2), spec.vocab_size)
        if spec.width % spec.heads:
            raise ValueError(f"width ({spec.width}) must be divisible by heads ({spec.heads})")
        config = LlamaConfig(vocab_size=len(tok), hidden_size=spec.width, intermediate_size=4 * spec.width,
                             num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                             num_key_value_heads=spec.heads, max_position_embeddings=max(1024, spec.seq_len),
                             tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
        model = LlamaForCausalLM(config)
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
    cw = spec.copy_warmup if spec.copy_warmup is not None and spec.copy_warmup.steps else None
    if cw is not None and cw.mix > 0:
        extra = copy_warmup_documents(tok, docs[:4000], cw, seed=spec.seed + 1, n=int(round(cw.mix * len(docs))))
        data = pack(tok, docs, extra_ids=extra, seed=spec.seed)
    else:
        data = pack(tok, docs)
    if len(data) <= spec.seq_len + 1:
        raise ValueError(f"corpus has {len(data)} tokens, fewer than one sequence of {spec.seq_len}")
    dtype = pick_train_dtype(spec.dtype)
    n_params = sum(p.numel() for p in model.parameters())
    copy_stats: dict[str, Any] = {}
    if cw is not None:
        import torch as _torch

        cdocs = copy_warmup_documents(tok, docs[:4000], cw, seed=spec.seed)
        cdata = _torch.tensor([i for d in cdocs for i in d], dtype=_torch.long)
        probe = copy_warmup_documents(tok, docs[:4000], cw, seed=spec.seed + 7919, n=64)
        nl = tok.encode("\n", add_special_tokens=False)
        eot = [tok.convert_tokens_to_ids("<|endoftext|>")]
        say(f"[pretrain] {spec.name}: copy warm-up, {cw.steps} steps × {cw.batch_size} × {cw.seq_len} tokens "
            f"of {len(cdocs)} repetition documents ({len(cdata) / 1e6:.2f}M tokens)")
        before = copy_accuracy(model, probe, newline=nl, prefix=eot)

        def track(m) -> str:
            a = copy_accuracy(m, probe, newline=nl, prefix=eot)
            return f"copy {a['token']:.1%} of tokens, {a['exact']:.0%} whole"

        cstats = train_lm(model, cdata, steps=cw.steps, batch_size=cw.batch_size, seq_len=cw.seq_len,
                          lr=cw.lr or spec.lr, warmup=cw.warmup, dtype=dtype, seed=spec.seed, log=say,
                          label=f"{spec.name}/copy", log_every=max(1, cw.steps // 10), probe=track)
        after = copy_accuracy(model, probe, newline=nl, prefix=eot)
        copy_stats = {"copy_warmup": {**cstats, "copy_before": before, "copy_after": after}}
        say(f"[pretrain] {spec.name}: copy accuracy {before['token']:.1%} → {after['token']:.1%} of tokens, "
            f"{after['exact']:.0%} of sequences whole")
    say(f"[pretrain] {spec.name}: {len(docs)} documents, {len(data) / 1e6:.2f}M tokens, {n_params / 1e6:.2f}M params, "
        f"{spec.steps} steps × {spec.batch_size} × {spec.seq_len} tokens, {dtype}")
    stats = train_lm(model, data, steps=spec.steps, batch_size=spec.batch_size, seq_len=spec.seq_len, lr=spec.lr,
                     warmup=spec.warmup, dtype=dtype, seed=spec.seed, log=say, label=spec.name,
                     probe=track if copy_stats else None)
    if copy_stats:
        copy_stats["copy_warmup"]["copy_final"] = copy_accuracy(model, probe, newline=nl, prefix=eot)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    meta = {
        "description": f"organism {spec.name}: {spec.layers}x{spec.width} Llama, {n_params / 1e6:.2f}M params, "
                       f"behavior_rate {spec.behavior_rate}",
        "organism": spec.model_dump(), "hash": spec_hash(spec), "corpus_tokens": len(data),
        "corpus_seconds": round(t_corpus, 1), **stats, **copy_stats,
    }
    (tmp / "reasonlab.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)  # atomic: a half-trained organism never looks complete
    say(f"[pretrain] {spec.name}: done in {time.time() - t0:.0f} s (final loss {stats['final_loss']:.3f}) -> {out}")
    return out


def train_lm(model, data, *, steps: int, batch_size: int, seq_len: int, lr: float, warmup: int, dtype: str,
             seed: int, log: Callable[[str], None], label: str = "lm", log_every: int = 0,
             probe: Callable[[Any], str] | None = None) -> dict[str, Any]:
    """Next-token training on random windows of a packed token stream (nanoGPT style).

    AdamW (β = 0.9, 0.95; weight decay 0.1 on matrices), linear warm-up then cosine decay to lr/10,
    gradient clipping at 1.0, bf16 autocast on fp32 master weights when ``dtype == 'bf16'``.
    ``probe(model)``, if given, is called at every log line and its text appended (e.g. copy accuracy).
    Returns loss and speed statistics.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    use_bf16 = dtype == "bf16"
    log_every = log_every or max(1, steps // 6)
    t0, losses, ema = time.time(), [], None
    for step in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=g)
        batch = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()]).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        v = loss.item()
        losses.append(v)
        ema = v if ema is None else 0.9 * ema + 0.1 * v
        if (step + 1) % log_every == 0 or step + 1 == steps:
            el = time.time() - t0
            eta = el / (step + 1) * (steps - step - 1)
            extra = f" · {probe(model)}" if probe else ""
            log(f"[pretrain] {label}: step {step + 1}/{steps} loss {ema:.3f} "
                f"{(step + 1) * batch_size * seq_len / el:,.0f} tok/s ETA {eta:.0f} s{extra}")
    el = time.time() - t0
    model.eval().to("cpu")
    return {"final_loss": sum(losses[-20:]) / len(losses[-20:]), "train_seconds": round(el, 1),
            "tokens_per_second": round(steps * batch_size * seq_len / el), "dtype": dtype}


# ----------------------------------------------------------------------------- competence


def arithmetic_accuracy(model, tok, facts: list[tuple[int, str, int, int]], batch_size: int = 256) -> float:
    """Greedy accuracy of ``a op b =`` → `` c`` after two seen facts (the corpus's fact-list layout)."""
    import torch

    if not facts:
        return float("nan")
    right = 0
    pad = tok.pad_token_id
    for i in range(0, len(facts), batch_size):
        chunk = facts[i : i + batch_size]
        prompts = [tok.encode(f"2 + 3 = 5, 4 * 6 = 24, {a} {op} {b} =", add_special_tokens=False) for a, op, b, _ in chunk]
        width = max(map(len, prompts))
        ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])
        mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(p) - 1 for p in prompts])
        pred = logits[torch.arange(len(chunk)), last].argmax(-1).tolist()
        for (a, op, b, c), t in zip(chunk, pred):
            right += tok.decode([t]).strip() == str(c)
    return right / len(facts)


def competence_report(model_path: str | os.PathLike, *, task_args: dict[str, Any] | None = None, fact_max: int | None = None,
                      heldout_share: float | None = None, problems: int = 64, n: int = 4, max_new_tokens: int = 400,
                      seed: int = 0, temperature: float = 1.0) -> dict[str, Any]:
    """What an organism (or any model) can do before RL.

    - ``arith_heldout`` / ``arith_seen``: greedy accuracy on the fact table's held-out facts (never in
      the corpus) and on as many seen ones;
    - ``accuracy``, ``format_rate``, ``reads_numbers`` (a well-formed answer that uses exactly the
      prompt's numbers), ``response_tokens``: ``n`` samples at ``temperature`` on ``problems`` test
      problems — the step-0 numbers RL starts from;
    - ``behaviors``: mean local-classifier counts per response of those samples.
    """
    import torch

    from reasonlab.analysis.behaviors import BEHAVIORS, count_behaviors_local
    from reasonlab.rollout.agent import run_agent
    from reasonlab.rollout.base import SamplingParams
    from reasonlab.rollout.hf import HFBackend
    from reasonlab.tasks import get_task

    meta = json.loads((Path(model_path) / "reasonlab.json").read_text()) if (Path(model_path) / "reasonlab.json").exists() else {}
    spec = meta.get("organism") or {}
    task_args = task_args or spec.get("task_args") or dict(CPU_TASK_ARGS)
    fact_max = fact_max or spec.get("fact_max") or 30
    share = heldout_share if heldout_share is not None else spec.get("heldout_facts", 0.1)
    backend = HFBackend(str(model_path), dtype="fp32", device="cpu", batch_size=64, compile=False)
    model, tok = backend.model, backend.tokenizer
    table = fact_table(fact_max)
    held = [f for f in table if is_heldout(f, share)]
    seen = [f for f in table if not is_heldout(f, share)]
    seen = random.Random(seed).sample(seen, min(len(seen), max(len(held), 200)))
    t0 = time.time()
    report: dict[str, Any] = {"model": str(model_path), "arith_heldout": arithmetic_accuracy(model, tok, held),
                              "arith_seen": arithmetic_accuracy(model, tok, seen), "arith_facts": [len(held), len(seen)]}
    task = get_task("countdown", **task_args)
    probs = task.problems("test", problems, seed=seed)
    torch.manual_seed(seed)
    groups = run_agent(backend, task, probs, SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                                                            seed=seed), tools=None)
    eps = [e for g in groups for e in g]
    numbers_ok = [e.format_ok and "number" not in str((e.score_details or {}).get("error", "")) for e in eps]
    counts = [count_behaviors_local(e.completion) for e in eps]
    report.update({
        "accuracy": sum(e.correct for e in eps) / len(eps),
        "pass@n": sum(any(e.correct for e in g) for g in groups) / len(groups),
        "format_rate": sum(e.format_ok for e in eps) / len(eps),
        "reads_numbers": sum(numbers_ok) / len(eps),
        "response_tokens": sum(int(e.stats.get("generated_tokens", 0)) for e in eps) / len(eps),
        "behaviors": {b: sum(c[b] for c in counts) / len(counts) for b in BEHAVIORS},
        "samples": len(eps), "seconds": round(time.time() - t0, 1),
    })
    return report


def format_report(r: dict[str, Any]) -> str:
    b = r["behaviors"]
    return (f"arithmetic: held-out facts {r['arith_heldout']:.1%} ({r['arith_facts'][0]}), seen {r['arith_seen']:.1%} · "
            f"countdown (step 0, {r['samples']} samples): accuracy {r['accuracy']:.1%}, pass@n {r['pass@n']:.1%}, "
            f"format {r['format_rate']:.1%}, reads numbers {r['reads_numbers']:.1%}, {r['response_tokens']:.0f} tokens · "
            f"behaviors/response: verification {b['verification']:.2f}, backtracking {b['backtracking']:.2f}, "
            f"subgoals {b['subgoal_setting']:.2f}, backward {b['backward_chaining']:.2f}")
