import math
from itertools import combinations

import pytest

from reasonlab.analysis.metrics import default_ks, maj_at_k, pass_at_k, summarize
from reasonlab.episode import Episode


def brute_pass_at_k(n, c, k):
    """Fraction of size-k subsets of n samples (c correct) containing at least one correct."""
    items = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    v = pass_at_k(1000, 3, 100)
    exact = 1 - math.comb(997, 100) / math.comb(1000, 100)
    assert v == pytest.approx(exact, rel=1e-9)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_maj_at_k_by_hand():
    # answers: A (right) x2, B (wrong) x1, None x1
    answers, correct = ["A", "A", "B", None], [True, True, False, False]
    assert maj_at_k(answers, correct, 1) == pytest.approx(2 / 4)
    # k=2 subsets (6): AA→1, AB→tie ½ (x2), A None→1 (x2), B None→0 → (1+½+½+1+1+0)/6
    assert maj_at_k(answers, correct, 2) == pytest.approx(4 / 6)
    assert maj_at_k(answers, correct, 4) == 1.0
    assert maj_at_k([None, None], [False, False], 2) == 0.0


def test_maj_at_k_monte_carlo_close_to_exact():
    answers = ["A"] * 9 + ["B"] * 7 + [None] * 4
    correct = [a == "A" for a in answers]
    exact = maj_at_k(answers, correct, 3)  # C(20,3)=1140: exact
    from reasonlab.analysis import metrics

    old = metrics.MAX_EXACT_SUBSETS
    metrics.MAX_EXACT_SUBSETS = 10
    try:
        mc = maj_at_k(answers, correct, 3, samples=20000)
    finally:
        metrics.MAX_EXACT_SUBSETS = old
    assert mc == pytest.approx(exact, abs=0.02)


def test_default_ks():
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(6) == [1, 2, 4, 6]
    assert default_ks(1) == [1]


def test_summarize():
    eps = []
    for p, flags in {"p1": [1, 0, 0, 0], "p2": [0, 0, 0, 0]}.items():
        for j, f in enumerate(flags):
            eps.append(Episode("t", p, j, [], correct=bool(f), format_ok=True, answer=str(f), reward=float(f),
                               stats={"generated_tokens": 10, "finish_reason": "eos"}))
    eps.append(Episode("t", "p3", 0, [], correct=True))  # incomplete problem
    s = summarize(eps)
    assert s["problems"] == 2 and s["incomplete_problems"] == 1
    assert s["accuracy"] == pytest.approx(1 / 8)
    assert s["pass@k"]["1"] == pytest.approx(1 / 8)
    assert s["pass@k"]["4"] == pytest.approx(0.5)
    assert s["mean_generated_tokens"] == 10
