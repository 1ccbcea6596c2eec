"""How different are the samples a policy draws for one problem? (EntroPO's question, arXiv 2509.12434.)

Test-time scaling only pays when the N samples differ; preference tuning tends to collapse them.
Per problem, over its samples:

- **distinct answers**: number of different :func:`solution_key` values (the normalised final
  answer, or for code tasks the normalised program), and that number over the sample count;
- **distinct correct solutions**: the same, among correct samples only: diversity that helps;
- **mean pairwise distance** between completions, in one of two modes:

  ``ngram`` (default): Jaccard distance between the sets of word-level n-grams,
  ``1 − |A ∩ B| / |A ∪ B|``. Linear time per pair, needs no length cap, and measures *what* is
  said rather than where: two traces that try the same steps in another order stay close. This is
  the usual choice for LLM output diversity, and what :func:`tts_curves` can afford for every
  subset.

  ``edit``: character Levenshtein distance over ``max(len(a), len(b))``, on the first
  ``max_chars`` characters. Sensitive to order and to small edits, so better for short outputs
  (answers, single functions). Computed with the bit-parallel algorithm of Myers (1999) in
  Hyyrö's form, with Python integers as bit vectors: ``O(len(a) · len(b) / 64)`` machine work
  instead of the ``O(len(a) · len(b))`` Python steps of the textbook table; written here because
  no library in the dependency set has it (``rapidfuzz`` would be the one to add).

- **mean token entropy** of the policy, ``H_t = −Σ_v π(v | s_t) log π(v | s_t)`` averaged over the
  tokens it produced. Sampling logprobs are not enough (they are ``log π(chosen)``, one point of the
  distribution, an unbiased *estimate* of H only in expectation), so the entropy comes either from
  ``stats["mean_token_entropy"]`` written by whoever had the full distribution, or from
  :func:`token_entropy`, which runs a model over the episodes' policy tokens.

:func:`diversity_summary` averages the per-problem numbers over problems (each problem counts once).
"""

from __future__ import annotations

import ast
import functools
import itertools
import random
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from reasonlab.episode import Episode

Mode = Literal["ngram", "edit"]
DEFAULT_MODE: Mode = "ngram"
NGRAM = 3
EDIT_MAX_CHARS = 4000
MAX_PAIRS = 2000

_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_WORDS = re.compile(r"\w+|[^\w\s]")


# ----------------------------------------------------------------------------- what counts as "the same"


def normalize_answer(answer: Any) -> str:
    """A final answer with all whitespace removed: ``"(1 + 2) * 3"`` and ``"(1+2)*3"`` are one answer."""
    return re.sub(r"\s+", "", str(answer))


@functools.lru_cache(maxsize=65536)
def normalize_code(code: str) -> str:
    """Python source without comments, docstrings or formatting differences.

    Parsed and printed back by :mod:`ast`, which drops comments and re-spaces everything; docstrings
    are removed from the tree first. Code that does not parse falls back to dropping ``#`` comments
    and blank lines and collapsing runs of spaces (good enough to compare broken programs).
    Memoised: selectors ask for the same candidates' keys many times in :func:`tts_curves`.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        lines = (re.sub(r"[ \t]+", " ", re.sub(r"#.*", "", line)).rstrip() for line in code.splitlines())
        return "\n".join(line for line in lines if line.strip())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            if docstring and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    try:
        return ast.unparse(tree)
    except (ValueError, RecursionError):  # pragma: no cover - pathological nesting
        return code.strip()


def last_code_block(text: str) -> str | None:
    """The last fenced code block (```python, ```py or bare ```), or None."""
    blocks = _BLOCK.findall(text[-200_000:])
    return blocks[-1] if blocks else None


def solution_key(e: Episode) -> str | None:
    """What two samples must share to be "the same solution".

    The normalised final answer when the task extracted one (``Episode.answer``); otherwise, as for
    HumanEval whose scorer runs code and extracts no answer, the normalised last code block. None
    when the sample has neither (it then has no answer, votes for nothing, and counts as no answer).
    """
    if e.answer is not None:
        return normalize_answer(e.answer)
    code = last_code_block(e.completion)
    return normalize_code(code) if code is not None else None


# ----------------------------------------------------------------------------- distances


def ngrams(text: str, n: int = NGRAM) -> frozenset:
    """Word-level n-grams (words and punctuation marks are tokens); a text shorter than n is one gram."""
    toks = _WORDS.findall(text)
    if len(toks) < n:
        return frozenset([tuple(toks)]) if toks else frozenset()
    return frozenset(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


def jaccard_distance(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 0.0
    return 1.0 - len(a & b) / len(a | b)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), bit-parallel (Myers 1999 / Hyyrö 2001).

    Column j of the DP table is held as two bit vectors of vertical deltas (+1 in ``pv``, −1 in
    ``mv``) over the m = len(b) rows; one text character updates all rows with a few integer ops.
    ``score`` tracks the last row, D[m][j].
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    full, top = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = full, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = (ph << 1) | 1  # row 0 of the table grows by one per column (global distance)
        mh <<= 1
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv & full
    return score


def edit_distance(a: str, b: str, max_chars: int = EDIT_MAX_CHARS) -> float:
    """Levenshtein distance over the longer length, in [0, 1], on the first ``max_chars`` characters."""
    a, b = a[:max_chars], b[:max_chars]
    if not a and not b:
        return 0.0
    return levenshtein(a, b) / max(len(a), len(b))


class PairwiseDistance:
    """Distances between the texts of one sample set, each pair computed once (on demand).

    ``PairwiseDistance(texts, mode)(i, j)``; ``mean(indices)`` averages over the pairs of a subset.
    """

    def __init__(self, texts: Sequence[str], mode: Mode = DEFAULT_MODE, *, n: int = NGRAM,
                 max_chars: int = EDIT_MAX_CHARS):
        if mode not in ("ngram", "edit"):
            raise ValueError(f"unknown distance mode {mode!r}; use 'ngram' or 'edit'")
        self.mode, self.texts, self.max_chars = mode, list(texts), max_chars
        self._grams = [ngrams(t, n) for t in self.texts] if mode == "ngram" else None
        self._cache: dict[tuple[int, int], float] = {}

    def __call__(self, i: int, j: int) -> float:
        if i == j:
            return 0.0
        key = (i, j) if i < j else (j, i)
        if key not in self._cache:
            if self._grams is not None:
                self._cache[key] = jaccard_distance(self._grams[i], self._grams[j])
            else:
                self._cache[key] = edit_distance(self.texts[i], self.texts[j], self.max_chars)
        return self._cache[key]

    def mean(self, indices: Iterable[int] | None = None, *, max_pairs: int = MAX_PAIRS,
             seed: int = 0) -> float | None:
        """Mean over all pairs of ``indices`` (default: all texts); a seeded sample of ``max_pairs``
        pairs when there are more. None with fewer than two texts."""
        idx = list(range(len(self.texts)) if indices is None else indices)
        if len(idx) < 2:
            return None
        n_pairs = len(idx) * (len(idx) - 1) // 2
        if n_pairs <= max_pairs:
            pairs: Iterable[tuple[int, int]] = itertools.combinations(idx, 2)
        else:
            rng = random.Random(seed)
            pairs = (tuple(rng.sample(idx, 2)) for _ in range(max_pairs))
        vals = [self(i, j) for i, j in pairs]
        return sum(vals) / len(vals)


def mean_pairwise_distance(texts: Sequence[str], mode: Mode = DEFAULT_MODE, **kwargs: Any) -> float | None:
    """Mean distance over the pairs of ``texts`` (see :class:`PairwiseDistance` for the options)."""
    mean_kw = {k: kwargs.pop(k) for k in ("max_pairs", "seed") if k in kwargs}
    return PairwiseDistance(texts, mode, **kwargs).mean(**mean_kw)


# ----------------------------------------------------------------------------- per problem and overall


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def answer_counts(episodes: Sequence[Episode], keys: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Distinct answers and distinct correct solutions among one problem's samples."""
    keys = [solution_key(e) for e in episodes] if keys is None else keys
    answered = [k for k in keys if k is not None]
    # a correct sample without a key (rare) still counts, as its whitespace-normalised text
    correct = {k if k is not None else normalize_answer(e.completion)
               for e, k in zip(episodes, keys) if e.correct}
    n = len(episodes)
    return {
        "samples": n,
        "answered": len(answered),
        "distinct_answers": len(set(answered)),
        "distinct_answer_frac": len(set(answered)) / n if n else 0.0,
        "correct": sum(e.correct for e in episodes),
        "distinct_correct": len(correct),
    }


def problem_diversity(episodes: Sequence[Episode], mode: Mode = DEFAULT_MODE,
                      **kwargs: Any) -> dict[str, Any]:
    """All diversity numbers for the samples of one problem.

    kwargs go to :class:`PairwiseDistance` (``n``, ``max_chars``) and its ``mean`` (``max_pairs``, ``seed``).
    """
    out = answer_counts(episodes)
    out["mean_pairwise_distance"] = mean_pairwise_distance([e.completion for e in episodes], mode, **kwargs)
    out["mean_token_entropy"] = _mean(e.stats.get("mean_token_entropy") for e in episodes)
    return out


def diversity_summary(episodes: Sequence[Episode], mode: Mode = DEFAULT_MODE, *, per_problem: bool = False,
                      **kwargs: Any) -> dict[str, Any]:
    """Diversity of the samples of each problem, averaged over problems.

    Returns ``problems``, ``samples``, ``mode`` and the means over problems of ``distinct_answers``,
    ``distinct_answer_frac``, ``distinct_correct`` (over problems with at least one correct sample),
    ``distinct_correct_frac`` (distinct correct over correct samples), ``mean_pairwise_distance``
    and ``mean_token_entropy`` (None when no episode has ``stats["mean_token_entropy"]``);
    ``per_problem`` adds the numbers of every problem.
    """
    from reasonlab.analysis.metrics import group_by_problem

    groups = group_by_problem(episodes)
    rows = {pid: problem_diversity(g, mode, **kwargs) for pid, g in groups.items()}
    solved = [r for r in rows.values() if r["correct"]]
    out: dict[str, Any] = {
        "problems": len(rows),
        "samples": sum(r["samples"] for r in rows.values()),
        "mode": mode,
        "distinct_answers": _mean(r["distinct_answers"] for r in rows.values()),
        "distinct_answer_frac": _mean(r["distinct_answer_frac"] for r in rows.values()),
        "distinct_correct": _mean(r["distinct_correct"] for r in solved),
        "distinct_correct_frac": _mean(r["distinct_correct"] / r["correct"] for r in solved),
        "mean_pairwise_distance": _mean(r["mean_pairwise_distance"] for r in rows.values()),
        "mean_token_entropy": _mean(r["mean_token_entropy"] for r in rows.values()),
        "episodes_with_entropy": sum("mean_token_entropy" in e.stats for e in episodes),
    }
    if per_problem:
        out["per_problem"] = rows
    return out


# ----------------------------------------------------------------------------- policy entropy from a model

# Models whose logits are not just ``lm_head(last hidden state)``: use the full forward for them.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def _policy_ids(e: Episode, tokenizer: Any) -> tuple[list[int], list[int]]:
    if e.tokens:
        if len(e.mask) != len(e.tokens):
            raise ValueError(f"episode {e.problem_id}#{e.sample_index}: tokens and mask differ in length")
        return list(e.tokens), list(e.mask)
    if tokenizer is None:
        raise ValueError(f"episode {e.problem_id}#{e.sample_index} has no tokens; "
                         "pass a tokenizer to tokenize its messages")
    from reasonlab.train.sft import tokenize_episode

    return tokenize_episode(tokenizer, e.messages)


def token_entropy(model: Any, episodes: Sequence[Episode], *, tokenizer: Any = None, batch_size: int = 8,
                  temperature: float = 1.0, max_length: int | None = None,
                  chunk: int = 1024) -> dict[str, Any]:
    """Mean entropy of ``model``'s next-token distribution at every policy token (mask 1) of ``episodes``.

    ``H_t = logsumexp(z) − Σ_v softmax(z)_v z_v`` with ``z = logits / temperature`` (pass the sampling
    temperature to measure the distribution that was actually sampled). The entropy at token t uses
    the logits at position t − 1, so a policy token at position 0 is skipped. Episodes without
    ``tokens`` are tokenized from their messages with ``tokenizer`` (the SFT layout).

    Efficient on CPU and GPU: no grad; episodes batched by similar length; the vocabulary projection
    is applied only to the positions that predict policy tokens, ``chunk`` positions at a time, so
    the ``batch × length × vocab`` logits tensor is never built (except for models with a logit
    transform, which get the plain forward).

    Returns ``{"mean": token-weighted mean over all policy tokens, "per_episode": [mean or None],
    "tokens": number of policy tokens}``. Write ``per_episode`` into ``stats["mean_token_entropy"]``
    to have :func:`diversity_summary` report it.
    """
    import torch

    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    seqs = []
    for e in episodes:
        ids, mask = _policy_ids(e, tokenizer)
        if max_length is not None:
            ids, mask = ids[:max_length], mask[:max_length]
        seqs.append((ids, mask))
    device = next(model.parameters()).device
    config = getattr(model, "config", None)
    direct = not any(getattr(config, k, None) for k in _LOGIT_TRANSFORMS)
    head = model.get_output_embeddings() if direct else None
    decoder = model.get_decoder() if head is not None else None
    pad = getattr(config, "pad_token_id", None) or 0

    sums, counts = [0.0] * len(seqs), [0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                width = max(len(seqs[i][0]) for i in batch)
                if width < 2:
                    continue
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attn = torch.zeros((len(batch), width), dtype=torch.long)
                # target[r, t]: position t predicts a policy token (token t + 1 has mask 1)
                target = torch.zeros((len(batch), width), dtype=torch.bool)
                for r, i in enumerate(batch):
                    toks, mask = seqs[i]
                    ids[r, : len(toks)] = torch.tensor(toks)
                    attn[r, : len(toks)] = 1
                    target[r, : len(toks) - 1] = torch.tensor(mask[1:], dtype=torch.bool)
                ids, attn = ids.to(device), attn.to(device)
                rows, cols = target.nonzero(as_tuple=True)
                if len(rows) == 0:
                    continue
                if decoder is not None:
                    hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state
                    picked = hidden[rows.to(device), cols.to(device)]
                    project = head
                else:
                    logits = model(input_ids=ids, attention_mask=attn).logits
                    picked = logits[rows.to(device), cols.to(device)]
                    project = None
                ents = []
                for c in range(0, picked.shape[0], chunk):
                    z = picked[c : c + chunk]
                    z = (project(z) if project is not None else z).float() / temperature
                    logp = torch.log_softmax(z, dim=-1)
                    ents.append(-(logp.exp() * logp).sum(-1))
                ent = torch.cat(ents).cpu()
                for r, h in zip(rows.tolist(), ent.tolist()):
                    sums[batch[r]] += h
                    counts[batch[r]] += 1
    finally:
        model.train(was_training)
    total = sum(counts)
    return {
        "mean": sum(sums) / total if total else None,
        "per_episode": [s / c if c else None for s, c in zip(sums, counts)],
        "tokens": total,
    }
