import random
import time

import pytest

from reasonlab.tasks import get_task
from reasonlab.tasks.countdown import ExpressionError, evaluate_expression, score_countdown, solve

NUMS, TARGET = [25, 5, 3, 7], 33  # 25 + 5 * 3 - 7 = 33


def sc(answer, numbers=NUMS, target=TARGET, **kw):
    return score_countdown(f"<think>hmm</think> <answer>{answer}</answer>", numbers, target, **kw)


def test_correct_and_rewards():
    good = sc("25 + 5 * 3 - 7")
    assert good.correct and good.reward == 1.0 and good.format_ok
    assert good.answer == "25+5*3-7"
    assert sc("25 + 5 * 3 - 7 = 33").correct  # an equation: the left side is scored
    wrong = sc("25 + 5 + 3 - 7")
    assert not wrong.correct and wrong.format_ok and wrong.reward == pytest.approx(0.1)
    assert "evaluates to 26" in wrong.details["error"]
    assert not sc("25 + 5 * 3 - 2").correct  # 2 is not a given number


def test_format_and_missing_answer():
    assert score_countdown("no tags at all", NUMS, TARGET).reward == 0.0
    assert score_countdown("<answer></answer>", NUMS, TARGET).reward == 0.0
    s = score_countdown("<answer>1+</answer>", NUMS, TARGET)
    assert not s.format_ok and s.reward == 0.0
    # the last answer counts, as in TinyZero
    s = score_countdown("<answer>1</answer> then <answer>25 + 5 * 3 - 7</answer>", NUMS, TARGET)
    assert s.correct
    # custom rewards
    s = sc("25 + 5 + 3 + 7", correct_reward=2.0, format_reward=0.5)
    assert s.reward == 0.5


def test_number_usage_rules():
    assert "more often" in sc("25 + 5 * 3 - 7 - 3").details["error"]
    assert "exactly once" in sc("25 + 5 * 3").details["error"]
    assert not sc("25 + 13").correct  # 13 not given
    s = score_countdown("<answer>25 + 13</answer>", [25, 13, 4], 38, use_all=False)
    assert s.correct  # subset allowed when configured
    s = score_countdown("<answer>25 + 13</answer>", [25, 13, 4], 38, use_all=True)
    assert not s.correct and s.format_ok
    s = score_countdown("<answer>25 + 25 - 12</answer>", [25, 12, 4], 38, use_all=False)
    assert not s.correct  # 25 used twice


def test_exact_fractions_and_division():
    assert score_countdown("<answer>(7 - 5 / 5) * 6</answer>", [7, 5, 5, 6], 36).correct
    assert score_countdown("<answer>8 / (3 - 8 / 3)</answer>", [8, 3, 8, 3], 24).correct  # classic 24 game
    s = score_countdown("<answer>5 / (3 - 3) + 1</answer>", [5, 3, 3, 1], 1)
    assert not s.correct and s.format_ok and "zero" in s.details["error"]
    assert score_countdown("<answer>6 × 4 ÷ 1</answer>", [6, 4, 1], 24).correct


ADVERSARIAL = [
    "9**9**9",
    "9 ** 9 ** 9 ** 9",
    "1/0",
    "(" * 10_000 + "1" + ")" * 10_000,
    "(" * 40 + "25" + ")" * 40,
    "١٢ + ٣",  # Arabic-Indic digits
    "２５ + ５",  # full-width digits
    "9" * 100_000,
    "1 +" * 50_000 + "1",
    "__import__('os').system('echo pwned')",
    "(lambda: 1)()",
    "[1,2,3]",
    "25 .real",
    "1e9",
    "0x10",
    "-25 + 5",
    "25 // 5",
    "25 % 5",
    "True + 1",
    "\x00\x01",
    "25 if 1 else 5",
    "a + b",
    "25 < 5",
]


@pytest.mark.parametrize("answer", ADVERSARIAL, ids=lambda a: repr(a[:20]))
def test_adversarial_answers_are_fast_and_safe(answer):
    t0 = time.perf_counter()
    s = score_countdown(f"<answer>{answer}</answer>", [25, 5, 3, 7, 9, 1], 38)
    assert time.perf_counter() - t0 < 0.05
    assert not s.correct
    assert s.reward in (0.0, 0.1)


def test_huge_text_outside_answer_is_fast():
    text = "x" * 1_000_000 + "<answer>" * 10_000 + "</answer>"
    t0 = time.perf_counter()
    s = score_countdown(text, NUMS, TARGET)
    assert time.perf_counter() - t0 < 0.05 and not s.correct


def test_evaluate_expression_rejects_non_arithmetic():
    for bad in ["2 ** 3", "abs(1)", "x", "1.5 + 1", "(1", "1)", "()"]:
        with pytest.raises(ExpressionError):
            evaluate_expression(bad)
    r = evaluate_expression("(1 + 2) * 3 - 4 / 2")
    assert r.value == 7 and r.numbers == [1, 2, 3, 4, 2]


def test_solver_solutions_pass_scorer():
    rng = random.Random(0)
    for _ in range(60):
        count = rng.randint(3, 5)
        nums = [rng.randint(1, 30) for _ in range(count)]
        target = rng.randint(1, 100)
        for use_all in (True, False):
            sol = solve(nums, target, use_all=use_all)
            if sol is not None:
                s = score_countdown(f"<answer>{sol}</answer>", nums, target, use_all=use_all)
                assert s.correct, (nums, target, sol, s.details)
    assert solve([1, 1, 1], 100) is None  # unsolvable


def test_generated_problems_are_solvable_and_reference_scores():
    task = get_task("countdown", min_numbers=3, max_numbers=6)
    probs = task.problems("train", 40, seed=3)
    assert {len(p.metadata["numbers"]) for p in probs} >= {3, 4, 5}
    for p in probs:
        ref = p.metadata["solution"]
        assert task.score(p, f"<think></think><answer>{ref}</answer>").correct
        lo, hi = task.target_range
        assert lo <= p.metadata["target"] <= hi
    for p in probs[:10]:  # the independent solver agrees they are solvable
        sol = solve(p.metadata["numbers"], p.metadata["target"])
        assert sol is not None and task.score(p, f"<answer>{sol}</answer>").correct


def test_splits_disjoint_and_deterministic():
    task = get_task("countdown")
    train = task.problems("train", 3000, seed=0)
    test = task.problems("test", 300, seed=0)
    key = lambda p: (tuple(sorted(p.metadata["numbers"])), p.metadata["target"])  # noqa: E731
    assert not {key(p) for p in train} & {key(p) for p in test}
    assert len({p.id for p in test}) == 300
    # other seeds still never cross the split
    test2 = task.problems("test", 300, seed=7)
    assert not {key(p) for p in train} & {key(p) for p in test2}
    assert [p.id for p in task.problems("test", 20, seed=0)] == [p.id for p in test[:20]]
    assert [p.id for p in test2[:20]] != [p.id for p in test[:20]]
    with pytest.raises(ValueError, match="allowed: train, test"):
        task.problems("valid", 1)


def test_bad_task_args_and_unknown_task():
    with pytest.raises(ValueError, match="countdown"):
        get_task("countdown", min_numbers=1)
    with pytest.raises(KeyError, match="Did you mean 'countdown'"):
        get_task("countdwn")


def test_parsing_model_text_prints_no_syntax_warnings():
    """Model answers such as "1or 2" make Python's parser warn ("invalid decimal literal") before it
    fails; those warnings reached the console during RL runs. The scorers fail such answers quietly."""
    import warnings

    from reasonlab.tasks.countdown import ExpressionError, evaluate_expression
    from reasonlab.tasks.procedural import literal

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError):
            literal("1or 2")
        for bad in ("1or 2", "3and 4 + 5"):
            with pytest.raises(ExpressionError):
                evaluate_expression(bad)
    assert [w for w in caught if issubclass(w.category, SyntaxWarning)] == []
