"""Synthetic Countdown reasoning traces for behaviour priming (Gandhi et al. 2025, arXiv 2503.01307).

Each trace narrates a search of :mod:`reasonlab.priming.search` and carries its *true* behaviour
counts in ``Episode.behaviors`` (the counts come from the search record, not from reading the
text), so SFT data is known to show exactly the behaviours of its condition, and behaviour
classifiers can be measured against it.

Conditions (``CONDITIONS``):

- ``all_strategies``: verification, backtracking, subgoal setting, backward chaining;
- ``only_backtracking``, ``backtracking_verification``, ``backtracking_subgoal``,
  ``backtracking_backward``: backtracking plus the named behaviour, nothing else;
- ``empty_cot``: ``<think></think>`` then the correct answer;
- ``dots``: the thinking replaced by dots, as long as the ``all_strategies`` thinking of the same
  problem and seed: in *tokens* of the model's tokenizer when one is given (``tokenizer=``, what the
  experiment does: a BPE merges runs of dots, so equal characters would be far fewer tokens), else
  in characters;
- ``no_positive``: a search that shows all four behaviours but never reaches the target: every
  attempt fails, and the trace settles on the closest miss it met (a well-formed expression using
  every number once, whose value it states and, when verifying, checks: "That's 8, not 5"). The
  text never states a correct expression and the answer is always wrong, as the study's traces with
  only incorrect answers. Problems where every path reaches the target have no such trace and are
  skipped (drawn past ``n``).

Determinism: the problem list comes from the task with the same ``seed``; each problem's search
and phrasing use RNGs keyed on (seed, problem id, condition), with ``dots``/``no_positive``/
``empty_cot`` keyed like ``all_strategies`` so that they are the same search. ``paraphrase``
changes only the phrasing (another template family), not the search or the counts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, NamedTuple

from reasonlab.episode import Episode, Problem
from reasonlab.priming import phrases
from reasonlab.priming.narrate import narrate
from reasonlab.priming.search import NoFailingPath, search, search_faithful
from reasonlab.tasks import get_task
from reasonlab.tasks.base import stable_hash
from reasonlab.tasks.countdown import ExpressionError, evaluate_expression

BEHAVIORS = ("verification", "backtracking", "subgoal_setting", "backward_chaining")

# condition -> behaviours its thinking shows (every one at least once per trace)
CONDITION_BEHAVIORS: dict[str, tuple[str, ...]] = {
    "all_strategies": BEHAVIORS,
    "only_backtracking": ("backtracking",),
    "backtracking_verification": ("backtracking", "verification"),
    "backtracking_subgoal": ("backtracking", "subgoal_setting"),
    "backtracking_backward": ("backtracking", "backward_chaining"),
    "empty_cot": (),
    "dots": (),
    "no_positive": BEHAVIORS,
}
CONDITIONS = tuple(CONDITION_BEHAVIORS)
_SAME_SEARCH_AS = {"dots": "all_strategies", "empty_cot": "all_strategies"}


def check_condition(condition: str) -> str:
    if condition not in CONDITION_BEHAVIORS:
        raise ValueError(f"unknown priming condition {condition!r}; allowed: {', '.join(CONDITIONS)}")
    return condition


def generate_traces(condition: str, n: int, *, seed: int = 0, split: str = "train",
                    task_args: dict[str, Any] | None = None, paraphrase: bool | str = False,
                    tokenizer: Any = None, max_detours: int | None = None, restart_only: bool = False,
                    search: str = "guided") -> list[Episode]:
    """``n`` scored trace Episodes of ``condition`` on Countdown problems (deterministic for a seed).

    ``paraphrase=True`` words the same traces (same searches, same counts) with the held-out
    template family ``paraphrase_b``, for measuring behaviour classifiers; a string picks a family
    of :data:`reasonlab.priming.phrases.FAMILIES` by name. ``max_detours`` / ``restart_only`` shape
    the search (see :func:`reasonlab.priming.search.search`): fewer dead ends, each a restart.
    ``search="faithful"`` narrates :func:`reasonlab.priming.search.search_faithful` instead, a random
    search without an oracle that a model can run as written (``max_detours``/``restart_only`` do not
    apply to it); use it with the ``organism_faithful`` phrasing.
    """
    return list(iter_traces(condition, n, seed=seed, split=split, task_args=task_args, paraphrase=paraphrase,
                            tokenizer=tokenizer, max_detours=max_detours, restart_only=restart_only,
                            search=search))


def iter_traces(condition: str, n: int, *, seed: int = 0, split: str = "train",
                task_args: dict[str, Any] | None = None, paraphrase: bool | str = False,
                tokenizer: Any = None, max_detours: int | None = None, restart_only: bool = False,
                search: str = "guided") -> Iterator[Episode]:
    """Like :func:`generate_traces`, one Episode at a time (for progress bars)."""
    check_condition(condition)
    check_search(search)
    phrasing(paraphrase)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_detours is not None and max_detours < 1:
        raise ValueError(f"max_detours must be >= 1 (or None), got {max_detours}")
    shape = {"max_detours": max_detours, "restart_only": restart_only, "search": search}
    task = get_task("countdown", **(task_args or {}))
    if condition != "no_positive" and search == "guided":
        for problem in task.problems(split, n, seed=seed):
            yield trace_episode(task, problem, condition, seed=seed, paraphrase=paraphrase, tokenizer=tokenizer, **shape)
        return
    # a few problems have no failing path (a faithful search: no draw that fits the condition): draw
    # past n until n traces exist
    made = 0
    for problem in _problems_with_spares(task, split, n, seed):
        if made == n:
            return
        try:
            ep = trace_episode(task, problem, condition, seed=seed, paraphrase=paraphrase, tokenizer=tokenizer,
                               **shape)
        except NoFailingPath:
            continue
        made += 1
        yield ep
    if made < n:
        raise RuntimeError(f"only {made} {condition} traces possible in this range; widen it")


def _problems_with_spares(task, split: str, n: int, seed: int):
    """The first ``n`` problems of the seed, then more of the same stream (for skipped ones)."""
    first = task.problems(split, n, seed=seed)
    yield from first
    for k in (2, 4, 8):
        try:
            more = task.problems(split, n * k + 8, seed=seed)
        except RuntimeError as e:  # the range has fewer distinct problems: take all of them
            m = re.search(r"only (\d+) distinct", str(e))
            if not m or int(m.group(1)) <= len(first):
                return
            more = task.problems(split, int(m.group(1)), seed=seed)
            yield from more[len(first):]
            return
        yield from more[len(first):]
        first = more


SEARCHES = ("guided", "faithful")


def check_search(search: str) -> str:
    if search not in SEARCHES:
        raise ValueError(f"unknown trace search {search!r}; allowed: {', '.join(SEARCHES)}")
    return search


def phrasing(paraphrase: bool | str) -> str:
    """Template family name for a ``paraphrase`` argument (False → standard, True → held out)."""
    if paraphrase is True:
        return phrases.HELD_OUT
    if paraphrase is False:
        return "standard"
    if paraphrase not in phrases.FAMILIES:
        raise ValueError(f"unknown phrasing {paraphrase!r}; allowed: True, False, {', '.join(phrases.FAMILIES)}")
    return paraphrase


def trace_episode(task, problem: Problem, condition: str, *, seed: int = 0, paraphrase: bool | str = False,
                  tokenizer: Any = None, max_detours: int | None = None, restart_only: bool = False,
                  search: str = "guided") -> Episode:
    """One trace of ``condition`` for ``problem``, as a scored Episode."""
    check_condition(condition)
    think, answer, counts, goal_checks = write_trace(problem, condition, seed=seed, paraphrase=paraphrase,
                                                     tokenizer=tokenizer, max_detours=max_detours,
                                                     restart_only=restart_only, search=search)
    text = f"<think>{think}</think>\n<answer>{answer}</answer>"
    score = task.score(problem, text)
    return Episode(
        task=problem.task,
        problem_id=problem.id,
        sample_index=0,
        messages=task.messages(problem) + [{"role": "assistant", "content": text}],
        reward=score.reward,
        correct=score.correct,
        format_ok=score.format_ok,
        answer=score.answer,
        score_details=score.details,
        stats={"think_chars": len(think), "chars": len(text), "goal_checks": goal_checks},
        behaviors={k: float(counts[k]) for k in BEHAVIORS},
        meta={"condition": condition, "seed": seed, "phrasing": phrasing(paraphrase), "source": "reasonlab.priming",
              **({"max_detours": max_detours} if max_detours is not None else {}),
              **({"restart_only": True} if restart_only else {}),
              **({"search": search} if search != "guided" else {})},
    )


class Trace(NamedTuple):
    think: str  # the text inside <think>...</think>
    answer: str  # the expression inside <answer>...</answer>
    counts: dict[str, int]  # true behaviour counts
    goal_checks: int  # times a result is compared with the current goal ("None of these is 41")


def write_trace(problem: Problem, condition: str, *, seed: int = 0, paraphrase: bool | str = False,
                tokenizer: Any = None, max_detours: int | None = None, restart_only: bool = False,
                search: str = "guided") -> Trace:
    """The trace of ``condition`` for one problem, with its true counts."""
    numbers, target = problem.metadata["numbers"], problem.metadata["target"]
    base = _SAME_SEARCH_AS.get(condition, condition)
    t = _narrated_search(problem.id, tuple(numbers), target, base, seed, phrasing(paraphrase), max_detours,
                         restart_only, check_search(search))
    zero = {k: 0 for k in BEHAVIORS}
    if condition == "empty_cot":
        return Trace("", t.answer, zero, 0)
    if condition == "dots":
        return Trace(dots_like(t.think, tokenizer), t.answer, zero, 0)
    return t._replace(counts=dict(t.counts))


def token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def dots_like(think: str, tokenizer: Any = None) -> str:
    """Dots as long as ``think``: as many tokens of ``tokenizer`` (the fewest dots that reach that
    count), or as many characters without one."""
    if tokenizer is None:
        return "." * len(think)
    want = token_count(tokenizer, think)
    lo, hi = 0, max(1, want)
    while token_count(tokenizer, "." * hi) < want:  # a BPE that merges dots needs more characters
        hi *= 2
        if hi > 64 * max(1, len(think)):
            raise ValueError("this tokenizer cannot write the dots trace at the thinking's token length")
    while lo < hi:  # the count is non-decreasing in the number of dots
        mid = (lo + hi) // 2
        if token_count(tokenizer, "." * mid) >= want:
            hi = mid
        else:
            lo = mid + 1
    return "." * lo


@lru_cache(maxsize=4096)  # dots / no_positive / empty_cot reuse the all_strategies search
def _narrated_search(problem_id: str, numbers: tuple[int, ...], target: int, base: str, seed: int,
                     family: str, max_detours: int | None = None, restart_only: bool = False,
                     kind: str = "guided") -> Trace:
    shows = CONDITION_BEHAVIORS[base]
    search_rng = random.Random(stable_hash("priming-search", seed, problem_id, base))
    phrase_rng = random.Random(stable_hash("priming-phrase", seed, problem_id, base, family))
    flags = {"backward": "backward_chaining" in shows, "subgoal": "subgoal_setting" in shows,
             "verify": "verification" in shows, "give_up": base == "no_positive"}
    if kind == "faithful":
        trace = search_faithful(list(numbers), target, search_rng, **flags)
    else:
        trace = search(list(numbers), target, search_rng, **flags, max_detours=max_detours, restart_only=restart_only)
    think, counts = narrate(trace, phrases.FAMILIES[family], phrase_rng)
    if counts != trace.counts():  # the narrator must say exactly what the search did
        raise AssertionError(f"narrated counts {counts} != searched counts {trace.counts()}")
    return Trace(think, trace.answer, counts, len(trace.attempts))  # one leaf check per attempt


def wrong_answer(expr: str, numbers: list[int], target: int, rng: random.Random) -> str:
    """``expr`` with one operator changed: well-formed, every number used once, never a division by
    zero, and a value other than ``target``: the nearest whole-number miss if there is one, else the
    nearest miss (ties broken by ``rng``)."""
    spots = [m.start() for m in re.finditer(r"(?<= )[-+*/](?= )", expr)]
    options = [(i, op) for i in spots for op in "+-*/" if op != expr[i]]
    rng.shuffle(options)
    best, best_gap = None, None
    for i, op in options:
        cand = expr[:i] + op + expr[i + 1 :]
        try:
            res = evaluate_expression(cand)
        except ExpressionError:  # pragma: no cover - swapping an operator keeps the form
            continue
        if res.value is None or res.value == target or sorted(res.numbers) != sorted(numbers):
            continue
        gap = (res.value.denominator != 1, abs(res.value - target))
        if best_gap is None or gap < best_gap:
            best, best_gap = cand, gap
    if best is None:  # pragma: no cover - some operator change always alters the value
        raise ValueError(f"cannot make a wrong answer from {expr!r}")
    return best
