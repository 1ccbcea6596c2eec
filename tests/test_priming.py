"""Synthetic priming traces (reasonlab.priming) and the local behaviour classifier."""

import random
import re

import pytest
import typer
from typer.testing import CliRunner

from reasonlab.analysis.behaviors import (
    BEHAVIORS,
    count_behaviors_local,
    evaluate_classifier,
    evaluate_local_classifier,
)
from reasonlab.episode import Episode, read_episodes
from reasonlab.priming import CONDITION_BEHAVIORS, CONDITIONS, generate_traces
from reasonlab.priming.search import search
from reasonlab.priming.traces import wrong_answer
from reasonlab.tasks import get_task

N = 40
TRACE = re.compile(r"<think>(.*)</think>\n<answer>(.+)</answer>", re.DOTALL)


@pytest.fixture(scope="module")
def traces():
    return {c: generate_traces(c, N, seed=0) for c in CONDITIONS}


def test_every_trace_parses_and_scores_as_intended(traces):
    task = get_task("countdown")
    problems = {p.id: p for p in task.problems("train", N, seed=0)}
    for condition, eps in traces.items():
        assert len(eps) == N
        for ep in eps:
            assert [m["role"] for m in ep.messages] == ["system", "user", "assistant"]
            assert ep.messages[:2] == task.messages(problems[ep.problem_id])
            m = TRACE.fullmatch(ep.completion)
            assert m, ep.completion
            think = m.group(1)
            score = task.score(problems[ep.problem_id], ep.completion)
            assert (ep.reward, ep.correct, ep.format_ok) == (score.reward, score.correct, score.format_ok)
            assert ep.answer == score.answer
            assert ep.meta["condition"] == condition
            assert ep.format_ok
            if condition == "no_positive":
                assert not ep.correct and ep.reward == pytest.approx(0.1)
                assert ep.score_details["error"].startswith("evaluates to")  # all numbers used, only the value is wrong
            else:
                assert ep.correct and ep.reward == 1.0
            if condition == "empty_cot":
                assert think == ""
            elif condition == "dots":
                assert set(think) == {"."}
            else:
                assert len(think) > 100 and "." in think


def test_dots_match_all_strategies_length_in_characters(traces):
    full = {e.problem_id: TRACE.fullmatch(e.completion).group(1) for e in traces["all_strategies"]}
    for ep in traces["dots"]:
        dots = TRACE.fullmatch(ep.completion).group(1)
        assert len(dots) == len(full[ep.problem_id])
        assert ep.stats["think_chars"] == len(dots)


def _expressions(text: str) -> list[str]:
    """Every maximal arithmetic expression in ``text`` (integers, + - * /, parentheses)."""
    return [m.group(0).strip() for m in re.finditer(r"[\d(][\d+\-*/() ]*[\d)]", text)]


def test_no_positive_shows_behaviors_but_never_a_correct_expression(traces):
    """The study's 'no positive' traces: behaviors present, every final answer wrong, and nothing
    in the text is a correct solution (no expression over all the numbers that reaches the target)."""
    task = get_task("countdown")
    problems = {p.id: p for p in task.problems("train", 3 * N, seed=0)}
    for ep in traces["no_positive"]:
        p = problems[ep.problem_id]
        assert not ep.correct and ep.format_ok
        assert all(ep.behaviors[b] >= 1 for b in BEHAVIORS), ep.behaviors
        for expr in _expressions(ep.completion):
            assert not task.score(p, f"<answer>{expr}</answer>").correct, (expr, ep.completion)
        # the trace states the value of its (wrong) answer, and that it misses the target
        assert str(p.metadata["target"]) in ep.completion


def test_dots_match_all_strategies_length_in_tokens_with_a_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    full = {e.problem_id: TRACE.fullmatch(e.completion).group(1) for e in generate_traces("all_strategies", 8, seed=3)}
    for ep in generate_traces("dots", 8, seed=3, tokenizer=tok):
        dots = TRACE.fullmatch(ep.completion).group(1)
        assert set(dots) == {"."}
        want = len(tok.encode(full[ep.problem_id], add_special_tokens=False))
        assert len(tok.encode(dots, add_special_tokens=False)) == want


def test_wrong_answer_is_always_wrong_but_well_formed():
    task = get_task("countdown", min_numbers=2, max_numbers=5)
    rng = random.Random(0)
    for p in task.problems("train", 200, seed=7):
        expr = wrong_answer(p.metadata["solution"], p.metadata["numbers"], p.metadata["target"], rng)
        s = task.score(p, f"<answer>{expr}</answer>")
        assert s.format_ok and not s.correct, (p.metadata, expr, s.details)


def test_conditions_show_only_their_behaviours(traces):
    """Rule: with 3+ numbers (the default task), every trace shows each behaviour of its condition
    at least once (backtracking included) and every other behaviour exactly zero times."""
    for condition, eps in traces.items():
        shows = CONDITION_BEHAVIORS[condition]
        for ep in eps:
            assert set(ep.behaviors) == set(BEHAVIORS)
            # one comparison with the goal per attempt: the detours plus the solving path
            thinks = condition not in ("dots", "empty_cot")
            assert ep.stats["goal_checks"] == (ep.behaviors["backtracking"] + 1 if thinks else 0)
            for b in BEHAVIORS:
                if b in shows:
                    assert ep.behaviors[b] >= 1, (condition, b, ep.completion)
                else:
                    assert ep.behaviors[b] == 0, (condition, b, ep.completion)
    assert {b for b in BEHAVIORS if CONDITION_BEHAVIORS["only_backtracking"] == (b,)} == {"backtracking"}


def test_counts_vary_and_two_number_problems_have_no_detour():
    eps = generate_traces("all_strategies", 60, seed=2)
    assert len({tuple(e.behaviors.values()) for e in eps}) > 10  # not one fixed recipe
    two = generate_traces("backtracking_verification", 10, seed=0, task_args={"min_numbers": 2, "max_numbers": 2})
    assert all(e.correct and e.behaviors["backtracking"] == 0 and e.behaviors["verification"] >= 1 for e in two)


def _sentences(text):
    return [re.sub(r"\d+", "N", s) for s in re.split(r"(?<=[.!?])\s+|\n", text) if s.strip()]


def test_phrasing_varies(traces):
    eps = generate_traces("all_strategies", 50, seed=0)
    templates = {s for e in eps for s in _sentences(TRACE.fullmatch(e.completion).group(1))}
    assert len(templates) > 60
    # several wordings per behaviour, not one template
    for b in BEHAVIORS:
        wordings = {s for s in templates if count_behaviors_local(s)[b]}
        assert len(wordings) >= 4, (b, wordings)


def test_deterministic_by_seed():
    a = [e.to_dict() for e in generate_traces("all_strategies", 15, seed=5)]
    b = [e.to_dict() for e in generate_traces("all_strategies", 15, seed=5)]
    c = [e.to_dict() for e in generate_traces("all_strategies", 15, seed=6)]
    assert a == b and a != c


def test_paraphrase_rewords_the_same_searches():
    std = generate_traces("all_strategies", 20, seed=3, split="test")
    para = generate_traces("all_strategies", 20, seed=3, split="test", paraphrase=True)
    for s, p in zip(std, para):
        assert s.problem_id == p.problem_id and s.behaviors == p.behaviors and s.answer == p.answer
        assert s.completion != p.completion and p.correct
        assert p.meta["phrasing"] == "paraphrase_b" and s.meta["phrasing"] == "standard"
    with pytest.raises(ValueError, match="unknown phrasing"):
        generate_traces("all_strategies", 1, paraphrase="klingon")


def test_unknown_condition_lists_the_allowed_names():
    with pytest.raises(ValueError) as e:
        generate_traces("only_verification", 3)
    for c in CONDITIONS:
        assert c in str(e.value)


def test_search_reaches_the_target_with_every_behaviour():
    for seed in range(20):
        t = search([25, 5, 3, 7], 33, random.Random(seed), backward=True, subgoal=True, verify=True)
        assert all(v >= 1 for v in t.counts().values())
        assert t.attempts[-1].leaf.hit and not any(a.leaf.hit for a in t.attempts[:-1])
    with pytest.raises(ValueError, match="no solution"):
        search([2, 3], 100, random.Random(0))


# ----------------------------------------------------------------------------- classifier


def test_local_classifier_fires_on_natural_phrasing():
    cases = {
        "Let me check: 3 * 25 = 75. Yes.": "verification",
        "That doesn't work, let's try 98 - 44 instead.": "backtracking",
        "Working backwards, 75 = 3 x 25, so I need 25 from the rest.": "backward_chaining",
        "First, I'll aim for 20, then multiply by the rest.": "subgoal_setting",
    }
    for text, behaviour in cases.items():
        got = count_behaviors_local(text)
        assert got == {b: int(b == behaviour) for b in BEHAVIORS}, (text, got)
    neutral = "I need to make 75 from 98, 44 and 21. Let me try 98 - 44 = 54. Then 54 + 21 = 75. So the answer is 98 - 44 + 21."
    assert count_behaviors_local(neutral) == {b: 0 for b in BEHAVIORS}
    # a run of sentences is one event; successive backward links are separate
    assert count_behaviors_local("That fails. Dead end. Let me go back.")["backtracking"] == 1
    chain = "Working backwards: 75 = 3 * 25, so I need 25. Then 25 = 5 * 5, so I need 5."
    assert count_behaviors_local(chain)["backward_chaining"] == 2


def _ep(text, **true):
    return Episode("countdown", "p", 0, [{"role": "assistant", "content": text}],
                   behaviors={b: float(true.get(b, 0)) for b in BEHAVIORS})


def test_evaluate_classifier_arithmetic():
    eps = [_ep("a", verification=2, backtracking=1), _ep("b", verification=0, subgoal_setting=1), _ep("c")]
    eps.append(Episode("countdown", "q", 0, [], behaviors=None))
    preds = {"a": {"verification": 1, "backtracking": 3}, "b": {"verification": 1}, "c": {}}
    r = evaluate_classifier(eps, lambda text: preds[text])
    assert r["n"] == 3 and r["skipped"] == 1
    v = r["per_behavior"]["verification"]  # a: TP1 FN1; b: FP1
    assert (v["tp"], v["fp"], v["fn"]) == (1, 1, 1) and v["precision"] == 0.5 and v["recall"] == 0.5
    assert v["presence_precision"] == 0.5 and v["presence_recall"] == 1.0
    bt = r["per_behavior"]["backtracking"]  # a: TP1 FP2
    assert (bt["tp"], bt["fp"], bt["fn"]) == (1, 2, 0) and bt["precision"] == pytest.approx(1 / 3) and bt["recall"] == 1.0
    sg = r["per_behavior"]["subgoal_setting"]  # never predicted
    assert sg["precision"] is None and sg["recall"] == 0.0 and sg["presence_precision"] is None
    assert r["per_behavior"]["backward_chaining"]["recall"] is None  # never present
    assert r["micro"]["precision"] == pytest.approx(2 / 5) and r["micro"]["recall"] == pytest.approx(2 / 4)


def test_evaluation_uses_the_true_counts_of_the_episodes(traces):
    eps = traces["all_strategies"] + traces["only_backtracking"]
    true_total = {b: sum(e.behaviors[b] for e in eps) for b in BEHAVIORS}
    r = evaluate_classifier(eps, lambda text: {})
    assert {b: r["per_behavior"][b]["fn"] for b in BEHAVIORS} == true_total
    r = evaluate_local_classifier(eps)
    assert {b: r["per_behavior"][b]["true_total"] for b in BEHAVIORS} == true_total
    # the cues were written against the standard templates: near perfect there by construction
    assert r["micro"]["f1"] == 1.0


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli():
    from reasonlab.priming.cli import app, behaviors_app

    root = typer.Typer()
    root.add_typer(app, name="prime")
    root.add_typer(behaviors_app, name="behaviors")
    return root


def test_cli_writes_loadable_episodes(cli, tmp_path):
    out = tmp_path / "sub" / "traces.jsonl"
    runner = CliRunner()
    res = runner.invoke(cli, ["prime", "--condition", "backtracking_subgoal", "--n", "12", "--out", str(out), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "mean subgoal_setting" in res.output
    eps = read_episodes(out)
    assert len(eps) == 12 and all(e.meta["condition"] == "backtracking_subgoal" and e.correct for e in eps)
    assert [e.to_dict() for e in eps] == [e.to_dict() for e in generate_traces("backtracking_subgoal", 12, seed=3)]
    # running again replaces the file rather than appending
    assert runner.invoke(cli, ["prime", "--condition", "dots", "--n", "5", "--out", str(out)]).exit_code == 0
    assert len(read_episodes(out)) == 5
    assert "Example: reasonlab prime" in runner.invoke(cli, ["prime", "--help"]).output


def test_cli_unknown_condition(cli, tmp_path):
    res = CliRunner().invoke(cli, ["prime", "--condition", "nope", "--n", "2", "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2
    assert "unknown priming condition" in res.output and "all_strategies" in res.output
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_eval_local(cli):
    res = CliRunner().invoke(cli, ["behaviors", "eval-local", "--n", "2"])
    assert res.exit_code == 0, res.output
    assert "paraphrase_b" in res.output and "backward_chaining" in res.output and "presence" in res.output


def test_problem_without_dead_ends_still_gets_a_true_trace():
    """[7, 7, 7] -> 7: every path succeeds, so no backtracking can be shown; the trace says so."""
    import random

    from reasonlab.priming.search import search
    from reasonlab.tasks.countdown import evaluate_expression

    t = search([7, 7, 7], 7, random.Random(0), backward=True, subgoal=True, verify=True)
    assert t.counts()["backtracking"] == 0
    res = evaluate_expression(t.answer)
    assert res.value == 7 and sorted(res.numbers) == [7, 7, 7]


def test_organism_phrasing_restates_the_state_and_reads_like_standard():
    """The organism family: same searches and counts, brackets always, every restart restates
    numbers and target, and the local classifier counts what the search record says."""
    from reasonlab.analysis.behaviors import count_behaviors_local

    std = generate_traces("all_strategies", 40, seed=5, split="test")
    org = generate_traces("all_strategies", 40, seed=5, split="test", paraphrase="organism")
    for s, o in zip(std, org):
        assert o.behaviors == s.behaviors and o.answer == s.answer and o.correct
        nums, target = re.search(r"numbers (\[[\d, ]+\]), create an equation that equals (\d+)",
                                 o.messages[1]["content"]).groups()
        intro = f"I have {nums} and want {target}."
        think = o.completion.split("</think>")[0]
        assert think.startswith("<think>" + intro)
        restarts = think.count("start over")
        assert think.count(intro) == 1 + restarts
        assert not re.search(r"\d, \d+ and \d", think)  # no "54, 21 and 7" list style
        counted = count_behaviors_local(o.completion)
        for b, v in o.behaviors.items():
            assert (counted[b] > 0) == (v > 0), (b, o.completion)


def test_short_traces_cap_detours_and_restart_from_the_prompt():
    """max_detours=1 + restart_only (the organism presets): exactly one dead end, a restart that
    restates the prompt, every behaviour of the condition still shown; no_positive still never
    states a right expression; the defaults are unchanged."""
    from reasonlab.analysis.behaviors import count_behaviors_local

    args = {"min_numbers": 3, "max_numbers": 3, "number_range": [1, 10], "target_range": [5, 30]}
    short = generate_traces("all_strategies", 60, seed=1, task_args=args, paraphrase="organism_facts",
                            max_detours=1, restart_only=True)
    full = generate_traces("all_strategies", 60, seed=1, task_args=args, paraphrase="organism_facts")
    assert sum(len(e.completion) for e in short) < 0.85 * sum(len(e.completion) for e in full)
    for e in short:
        think = e.completion.split("</think>")[0]
        assert e.correct and e.behaviors["backtracking"] <= 1 and "go back to" not in think
        if e.behaviors["backtracking"]:  # every problem but the rare one where no path fails
            assert all(e.behaviors[b] >= 1 for b in e.behaviors), e.completion
            assert think.count("start over") == 1
        assert count_behaviors_local(e.completion) == {k: int(v) for k, v in e.behaviors.items()}
        assert e.meta["max_detours"] == 1 and e.meta["restart_only"]
    assert sum(e.behaviors["backtracking"] == 1 for e in short) >= 57
    from reasonlab.tasks import get_task

    task = get_task("countdown", **args)
    problems = {p.id: p for p in task.problems("train", 180, seed=1)}
    nopos = generate_traces("no_positive", 60, seed=1, task_args=args, paraphrase="organism_facts",
                            max_detours=1, restart_only=True)
    for e in nopos:
        assert not e.correct and e.behaviors["backtracking"] == 1
        assert all(e.behaviors[b] >= 1 for b in e.behaviors), e.completion
        for expr in _expressions(e.completion):  # no right expression anywhere in the text
            assert not task.score(problems[e.problem_id], f"<answer>{expr}</answer>").correct, (expr, e.completion)
    assert [e.to_dict() for e in generate_traces("all_strategies", 10, seed=4)] == \
        [e.to_dict() for e in generate_traces("all_strategies", 10, seed=4, max_detours=None, restart_only=False)]
    with pytest.raises(ValueError, match="max_detours"):
        generate_traces("all_strategies", 2, max_detours=0)


def test_organism_facts_writes_every_leaf_try_as_a_true_fact():
    """organism_facts: a failed leaf check states each operation as ``a op b = c`` (the organisms'
    pretraining layout), all correct, and nothing else changes (same searches, same counts)."""
    from reasonlab.analysis.behaviors import count_behaviors_local

    org = generate_traces("all_strategies", 40, seed=5, split="test", paraphrase="organism")
    facts = generate_traces("all_strategies", 40, seed=5, split="test", paraphrase="organism_facts")
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    leaves = 0
    for o, f in zip(org, facts):
        assert f.behaviors == o.behaviors and f.answer == o.answer and f.correct
        assert "I can get" not in f.completion
        for a, b, tries, goal in re.findall(r"From (\d+) and (\d+): (.*?), but not (\d+)\.", f.completion):
            leaves += 1
            for x, op, y, v in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", tries):
                assert {x, y} == {a, b} and ops[op](int(x), int(y)) == int(v) != int(goal)
        assert count_behaviors_local(f.completion) == {k: int(v) for k, v in f.behaviors.items()}
    assert leaves >= 40


def test_faithful_search_decides_only_from_what_the_text_shows():
    """search="faithful": every leaf check tries + - * / in that order and stops exactly at the first
    value equal to its goal (the target, or the number after "so I need"); every stated fact is true;
    correct conditions always end on a right answer, and some traces hit on their first attempt (no
    rule of position: a first leaf check can accept); no_positive never states a right expression;
    the same seed gives the same traces, and the guided default is unchanged."""
    from reasonlab.analysis.behaviors import count_behaviors_local
    from reasonlab.tasks import get_task

    args = {"min_numbers": 3, "max_numbers": 3, "number_range": [1, 10], "target_range": [5, 30]}
    task = get_task("countdown", **args)
    problems = {p.id: p for p in task.problems("train", 400, seed=2)}
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}
    order = "+-*/"
    first_hits = 0
    for cond in ("all_strategies", "only_backtracking", "no_positive"):
        eps = generate_traces(cond, 60, seed=2, task_args=args, paraphrase="organism_faithful", search="faithful")
        assert len(eps) == 60 and all(e.meta["search"] == "faithful" for e in eps)
        for e in eps:
            assert e.correct == (cond != "no_positive") and e.format_ok, e.completion
            think = e.completion.split("</think>")[0]
            attempts = think.split("start over")
            first_hits += cond != "no_positive" and len(attempts) == 1
            for att in attempts:
                need = re.findall(r"so I need (\d+) from", att)
                goal = int(need[-1]) if need else problems[e.problem_id].metadata["target"]
                leaf = re.search(r"From (\d+) and (\d+): (.*?), (but not \d+|exactly what I need)\.", att)
                assert leaf, att
                a, b, tries, verdict = int(leaf[1]), int(leaf[2]), leaf[3], leaf[4]
                stated = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", tries)
                assert [s[1] for s in stated] == sorted((s[1] for s in stated), key=order.index)
                for x, op, y, v in stated:
                    assert (int(x), int(y)) == (max(a, b), min(a, b)) and ops[op](int(x), int(y)) == int(v)
                values = [int(v) for *_, v in stated]
                if verdict.startswith("but not"):
                    assert goal not in values and int(verdict.split()[-1]) == goal
                else:
                    assert values[-1] == goal and goal not in values[:-1]
            for x, op, y, v in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", think):
                assert ops[op](int(x), int(y)) == int(v), (x, op, y, v)
            if cond == "no_positive":
                for expr in _expressions(e.completion):
                    assert not task.score(problems[e.problem_id], f"<answer>{expr}</answer>").correct, expr
                assert 2 <= len(attempts) <= 4
            else:
                assert len(attempts) <= 4
            assert count_behaviors_local(e.completion) == {k: int(v) for k, v in e.behaviors.items()}
    assert 10 <= first_hits <= 80  # of 120 correct traces: a first leaf check accepts as often as values say
    again = generate_traces("all_strategies", 8, seed=2, task_args=args, paraphrase="organism_faithful", search="faithful")
    assert [e.completion for e in again] == [e.completion for e in
                                             generate_traces("all_strategies", 8, seed=2, task_args=args,
                                                             paraphrase="organism_faithful", search="faithful")]
    assert [e.to_dict() for e in generate_traces("all_strategies", 6, seed=4)] == \
        [e.to_dict() for e in generate_traces("all_strategies", 6, seed=4, search="guided")]
    with pytest.raises(ValueError, match="trace search"):
        generate_traces("all_strategies", 2, search="oracle")


def test_faithful_dots_and_empty_cot_follow_the_faithful_search():
    """dots are length-matched to the faithful all_strategies thinking; empty_cot has its answer."""
    args = {"min_numbers": 3, "max_numbers": 3, "number_range": [1, 10], "target_range": [5, 30]}
    kw = dict(seed=3, task_args=args, paraphrase="organism_faithful", search="faithful")
    full = generate_traces("all_strategies", 20, **kw)
    dots = generate_traces("dots", 20, **kw)
    empty = generate_traces("empty_cot", 20, **kw)
    for f, d, e in zip(full, dots, empty):
        assert f.problem_id == d.problem_id == e.problem_id
        assert d.stats["think_chars"] == f.stats["think_chars"] and d.answer == f.answer == e.answer
        assert e.completion.startswith("<think></think>") and e.correct and d.correct


def test_verdicts_phrasing_puts_each_tries_verdict_beside_its_value():
    """organism_verdicts: every try of a leaf check says ``not <goal>`` or ``is <goal>`` right after its
    value, truthfully, the goal restated each time; same searches and counts as organism_faithful."""
    from reasonlab.analysis.behaviors import count_behaviors_local

    args = {"min_numbers": 3, "max_numbers": 3, "number_range": [1, 10], "target_range": [5, 30]}
    kw = dict(seed=6, task_args=args, search="faithful")
    plain = generate_traces("all_strategies", 40, paraphrase="organism_faithful", **kw)
    verd = generate_traces("all_strategies", 40, paraphrase="organism_verdicts", **kw)
    nopos = generate_traces("no_positive", 40, paraphrase="organism_verdicts", **kw)
    n_is = n_not = 0
    for p, v in zip(plain, verd):
        assert p.behaviors == v.behaviors and p.answer == v.answer and v.correct
        assert count_behaviors_local(v.completion) == {k: int(x) for k, x in v.behaviors.items()}
    for e in verd + nopos:
        for value, word, goal in re.findall(r"= (\d+) (not|is) (\d+)\b", e.completion):
            assert (word == "is") == (value == goal), e.completion
            n_is += word == "is"
            n_not += word == "not"
    assert n_is >= 40 and n_not > 3 * n_is  # one hit per correct trace, many misses
    assert not any(re.search(r"= (\d+) is \1\b", e.completion) for e in nopos)  # no_positive never hits
