"""Diversity metrics: answer normalisation, distances, per-problem summary, model token entropy."""

import math
import random

import pytest

from reasonlab.analysis.diversity import (
    PairwiseDistance,
    diversity_summary,
    edit_distance,
    jaccard_distance,
    levenshtein,
    ngrams,
    normalize_answer,
    normalize_code,
    solution_key,
    token_entropy,
)
from reasonlab.episode import Episode


def ep(pid, i, text, answer=None, correct=False, stats=None, task="toy"):
    msgs = [{"role": "user", "content": f"problem {pid}"}, {"role": "assistant", "content": text}]
    return Episode(task, pid, i, msgs, answer=answer, correct=correct, stats=stats or {})


def table_levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_normalisation_of_answers_and_code():
    assert normalize_answer(" (1 + 2) * 3 ") == normalize_answer("(1+2)*3")
    a = 'def f(x):\n    """Add one."""\n    # a comment\n    return   x+1   # trailing\n'
    b = "def f(x):\n\n    return x + 1\n"
    assert normalize_code(a) == normalize_code(b)
    assert normalize_code(b) != normalize_code("def f(x):\n    return x + 2\n")
    # code that does not parse still loses comments and spacing differences
    assert normalize_code("def f(:  # oops\n    return  1\n") == normalize_code("def f(:\n    return 1")


def test_solution_key_prefers_answer_then_code():
    assert solution_key(ep("p", 0, "<answer> 1 + 2 </answer>", answer="1 + 2")) == "1+2"
    code = "Here:\n```python\ndef f(x):\n    # c\n    return x\n```\n"
    assert solution_key(ep("p", 0, code)) == "def f(x):\n    return x"
    assert solution_key(ep("p", 0, "no answer at all")) is None


def test_levenshtein_matches_the_table():
    rng = random.Random(0)
    for _ in range(400):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 40)))
        b = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 90)))
        assert levenshtein(a, b) == table_levenshtein(a, b)
    assert levenshtein("kitten", "sitting") == 3
    assert edit_distance("", "") == 0.0 and edit_distance("abc", "xyz") == 1.0
    assert edit_distance("abcd" * 10, "abcd" * 10 + "zz", max_chars=40) == 0.0  # cap applies


def test_ngram_jaccard():
    a, b = ngrams("a b c d", n=2), ngrams("a b c e", n=2)  # {ab, bc, cd} vs {ab, bc, ce}
    assert jaccard_distance(a, b) == pytest.approx(1 - 2 / 4)
    assert jaccard_distance(ngrams("x"), ngrams("x")) == 0.0  # shorter than n: one gram
    assert jaccard_distance(frozenset(), frozenset()) == 0.0
    d = PairwiseDistance(["same text here", "same text here", "other words entirely"], "ngram")
    assert d(0, 1) == 0.0 and d(0, 2) == 1.0 and d.mean() == pytest.approx(2 / 3)
    assert d.mean([0]) is None
    with pytest.raises(ValueError):
        PairwiseDistance(["a"], "cosine")


def test_diversity_summary_by_hand():
    eps = [
        # p1: answers 3, 3, 4, none; two correct samples with the same answer (whitespace differs)
        ep("p1", 0, "think <answer>1+2</answer>", "1+2", True, {"mean_token_entropy": 0.5}),
        ep("p1", 1, "think hard <answer>1 + 2</answer>", "1 + 2", True, {"mean_token_entropy": 1.5}),
        ep("p1", 2, "<answer>2+2</answer>", "2+2"),
        ep("p1", 3, "I give up"),
        # p2: two different correct solutions, identical reasoning text
        ep("p2", 0, "same", "2*3", True),
        ep("p2", 1, "same", "3*2", True),
    ]
    out = diversity_summary(eps, per_problem=True)
    p1, p2 = out["per_problem"]["p1"], out["per_problem"]["p2"]
    assert (p1["distinct_answers"], p1["answered"], p1["distinct_correct"]) == (2, 3, 1)
    assert p1["distinct_answer_frac"] == pytest.approx(2 / 4)
    assert (p2["distinct_answers"], p2["distinct_correct"], p2["mean_pairwise_distance"]) == (2, 2, 0.0)
    assert p1["mean_token_entropy"] == pytest.approx(1.0) and p2["mean_token_entropy"] is None
    assert out["problems"] == 2 and out["samples"] == 6 and out["mode"] == "ngram"
    assert out["distinct_correct"] == pytest.approx(1.5)
    assert out["distinct_correct_frac"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert out["mean_token_entropy"] == pytest.approx(1.0) and out["episodes_with_entropy"] == 2
    edit = diversity_summary(eps, "edit")
    assert 0 < edit["mean_pairwise_distance"] <= 1


# ----------------------------------------------------------------------------- token entropy


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine, two spinning OpenMP threads run these tiny models
    several times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_and_tok(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)


def reference_entropy(model, tokens, mask, temperature=1.0):
    """Plain full forward, one episode at a time."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].float() / temperature
    logp = torch.log_softmax(logits, -1)
    h = -(logp.exp() * logp).sum(-1)  # h[t] = entropy of the prediction of token t + 1
    vals = [h[t - 1].item() for t in range(1, len(tokens)) if mask[t]]
    return vals


def test_token_entropy_matches_a_plain_forward(model_and_tok, one_thread):
    model, tok = model_and_tok
    rng = random.Random(0)
    eps = []
    for i in range(5):
        n = rng.randint(6, 30)
        tokens = [rng.randrange(len(tok)) for _ in range(n)]
        mask = [0] * (n // 2) + [1] * (n - n // 2)
        if i == 3:
            mask[n // 2 + 1] = 0  # a tool-output hole inside the policy text
        eps.append(Episode("toy", f"p{i}", 0, [], tokens=tokens, mask=mask))
    got = token_entropy(model, eps, batch_size=2, chunk=7)
    refs = [reference_entropy(model, e.tokens, e.mask) for e in eps]
    assert got["tokens"] == sum(len(r) for r in refs)
    for g, r in zip(got["per_episode"], refs):
        assert g == pytest.approx(sum(r) / len(r), rel=1e-4)
    assert got["mean"] == pytest.approx(sum(map(sum, refs)) / got["tokens"], rel=1e-4)
    hot = token_entropy(model, eps, temperature=50.0)["mean"]
    assert got["mean"] < hot <= math.log(len(tok)) + 1e-4  # flatter distribution, bounded by log V


def test_token_entropy_tokenizes_messages_when_needed(model_and_tok, one_thread):
    model, tok = model_and_tok
    e = ep("p", 0, "<think> 3 + 4 = 7 </think> <answer> 3 + 4 </answer>")
    out = token_entropy(model, [e], tokenizer=tok)
    assert out["tokens"] > 5 and out["per_episode"][0] > 0
    with pytest.raises(ValueError, match="tokenizer"):
        token_entropy(model, [e])
