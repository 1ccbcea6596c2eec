"""Evaluation metrics over Episodes: accuracy, pass@k, maj@k, format rate, length.

pass@k uses the unbiased estimator of Chen et al. 2021 (HumanEval paper): with n samples of which c
are correct,

    pass@k = 1 - C(n - c, k) / C(n, k)

computed as a stable product. maj@k is the expected accuracy of a majority vote over k samples drawn
without replacement from the n: exact enumeration of all size-k subsets when there are few, else a
seeded Monte-Carlo estimate. Ties are split evenly (a tie between a right and a wrong answer counts
1/2); samples with no answer do not vote.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from itertools import combinations
from typing import Iterable, Sequence

from reasonlab.episode import Episode

MAX_EXACT_SUBSETS = 3000


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples, c correct (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _vote(answers: Sequence[str | None], correct: Sequence[bool], idx: Iterable[int]) -> float:
    votes = Counter(answers[i] for i in idx if answers[i] is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    winners = [a for a, v in votes.items() if v == top]
    right = {answers[i] for i in range(len(answers)) if correct[i] and answers[i] is not None}
    return sum(a in right for a in winners) / len(winners)


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int, *, seed: int = 0, samples: int = 1000) -> float:
    """Expected majority-vote accuracy with k of the n samples (see module docstring)."""
    n = len(answers)
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n={n}, got k={k}")
    if math.comb(n, k) <= MAX_EXACT_SUBSETS:
        subsets = list(combinations(range(n), k))
        return sum(_vote(answers, correct, s) for s in subsets) / len(subsets)
    rng = random.Random(seed)
    return sum(_vote(answers, correct, rng.sample(range(n), k)) for _ in range(samples)) / samples


def default_ks(n: int) -> list[int]:
    """1, 2, 4, … up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def group_by_problem(episodes: Iterable[Episode]) -> dict[str, list[Episode]]:
    groups: dict[str, list[Episode]] = defaultdict(list)
    for e in episodes:
        groups[e.problem_id].append(e)
    for g in groups.values():
        g.sort(key=lambda e: e.sample_index)
    return dict(groups)


def summarize(episodes: Sequence[Episode], ks: Sequence[int] | None = None) -> dict:
    """Aggregate metrics. Problems with fewer samples than the most common count are dropped
    from pass@k/maj@k (they would bias the estimate) and reported as ``incomplete_problems``."""
    groups = group_by_problem(episodes)
    if not groups:
        return {"problems": 0, "samples": 0}
    n = Counter(len(g) for g in groups.values()).most_common(1)[0][0]
    full = {pid: g for pid, g in groups.items() if len(g) == n}
    ks = [k for k in (ks or default_ks(n)) if k <= n]
    flat = [e for g in full.values() for e in g]
    out: dict = {
        "problems": len(full),
        "samples_per_problem": n,
        "samples": len(flat),
        "incomplete_problems": len(groups) - len(full),
        "accuracy": sum(e.correct for e in flat) / len(flat),
        "mean_reward": sum(e.reward for e in flat) / len(flat),
        "format_rate": sum(e.format_ok for e in flat) / len(flat),
        "mean_generated_tokens": sum(e.stats.get("generated_tokens", 0) for e in flat) / len(flat),
        "finish_reasons": dict(Counter(e.stats.get("finish_reason", "?") for e in flat)),
        "pass@k": {},
        "maj@k": {},
    }
    if any("code_calls" in e.stats for e in flat):
        out["tools"] = tool_metrics(flat)
    if len({e.task for e in flat}) > 1:
        out["per_task"] = per_task(flat)
    for k in ks:
        out["pass@k"][str(k)] = sum(pass_at_k(n, sum(e.correct for e in g), k) for g in full.values()) / len(full)
        out["maj@k"][str(k)] = sum(
            maj_at_k([e.answer for e in g], [e.correct for e in g], k) for g in full.values()
        ) / len(full)
    return out


def per_task(episodes: Sequence[Episode]) -> dict:
    """Accuracy, mean reward and sample count of each task (for suites and curricula)."""
    by: dict[str, list[Episode]] = {}
    for e in episodes:
        by.setdefault(e.task, []).append(e)
    return {t: {"accuracy": sum(e.correct for e in es) / len(es), "mean_reward": sum(e.reward for e in es) / len(es),
                "samples": len(es)} for t, es in sorted(by.items())}


def tool_metrics(episodes: Sequence[Episode]) -> dict:
    """Code-interpreter use: how often code ran, and accuracy with and without it."""
    with_code = [e for e in episodes if e.stats.get("code_calls", 0) > 0]
    without = [e for e in episodes if e.stats.get("code_calls", 0) == 0]
    calls = sum(e.stats.get("code_calls", 0) for e in episodes)
    acc = lambda es: (sum(e.correct for e in es) / len(es)) if es else None  # noqa: E731
    return {
        "code_use_rate": len(with_code) / len(episodes),
        "mean_code_calls": calls / len(episodes),
        "code_error_rate": (sum(e.stats.get("code_errors", 0) for e in episodes) / calls) if calls else None,
        "code_timeouts": sum(e.stats.get("code_timeouts", 0) for e in episodes),
        "accuracy_with_code": acc(with_code),
        "accuracy_without_code": acc(without),
        "episodes_with_code": len(with_code),
    }
