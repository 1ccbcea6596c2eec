"""Countdown: combine the given numbers with + − × ÷ to reach a target.

Compatible with TinyZero and the cognitive-behaviors study (arXiv 2503.01307): the prompt asks for
``<think>…</think>`` then ``<answer>expression</answer>``; reward 1.0 when correct, 0.1 when the
answer is well-formed but wrong, 0.0 otherwise; by default every number is used exactly once.

Instances are generated from a seed by building a random expression over random numbers, so every
instance is solvable and carries a reference solution. :func:`solve` is an independent exact search
(used by tests and by the priming-trace generator).

The scorer never calls ``eval``: :func:`evaluate_expression` checks the characters, the length and
the nesting depth first, then walks Python's AST allowing only integer literals, the four binary
operators and parentheses, computing over :class:`fractions.Fraction`. ``9**9**9``, ``1/0``, ten
thousand parentheses, unicode digits and 100 kB answers are rejected in microseconds.
"""

from __future__ import annotations

import ast
import operator
import random
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations
from typing import Any

from reasonlab.episode import Problem, Score
from reasonlab.tasks.base import check_split, extract_tag, register, system_prompt, split_of, stable_hash

SYSTEM_PROMPT = (
    "You are a helpful assistant. You first think about the reasoning process in the mind "
    "and then provide the user with the answer."
)
USER_PROMPT = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
    "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>."
)

MAX_ANSWER_CHARS = 512
MAX_DEPTH = 32
_ALLOWED = re.compile(r"[0-9+\-*/() ]*")  # ASCII only: unicode digits never reach int()
_TRANSLATE = str.maketrans({"×": "*", "x": "*", "÷": "/", "−": "-", "\t": " ", "\n": " "})
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class ExpressionError(ValueError):
    """The text is not an arithmetic expression of the allowed form (malformed)."""


@dataclass
class ExprResult:
    value: Fraction | None  # None when the expression divides by zero
    numbers: list[int]  # literals used, in order


def evaluate_expression(expr: str) -> ExprResult:
    """Evaluate ``expr`` exactly; raise :class:`ExpressionError` if it is not allowed.

    Only non-negative integer literals, ``+ - * /`` and parentheses. Division by zero gives
    ``value=None`` (well-formed but wrong) rather than an error.
    """
    if len(expr) > MAX_ANSWER_CHARS:
        raise ExpressionError(f"expression longer than {MAX_ANSWER_CHARS} characters")
    expr = expr.translate(_TRANSLATE).strip()
    if not expr:
        raise ExpressionError("empty expression")
    if "=" in expr:  # "1 + 2 = 3": score the left-hand side, as models often write the equation
        expr = expr.split("=", 1)[0].strip()
    if not _ALLOWED.fullmatch(expr):
        bad = next(c for c in expr if not _ALLOWED.fullmatch(c))
        raise ExpressionError(f"character {bad!r} not allowed")
    if "**" in expr or "//" in expr:
        raise ExpressionError("only + - * / are allowed")
    depth = 0
    for c in expr:
        depth += c == "("
        depth -= c == ")"
        if depth > MAX_DEPTH:
            raise ExpressionError(f"parentheses nested deeper than {MAX_DEPTH}")
        if depth < 0:
            raise ExpressionError("unbalanced parentheses")
    try:
        with warnings.catch_warnings():  # model text ("2x3") warns before it fails: not the user's concern
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise ExpressionError(f"not an expression: {e.__class__.__name__}") from None
    numbers: list[int] = []
    value = _walk(tree.body, numbers)
    return ExprResult(value, numbers)


def _walk(node: ast.AST, numbers: list[int]) -> Fraction | None:
    """Exact value of an allowed node; None once a division by zero happened below it."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        numbers.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left = _walk(node.left, numbers)
        right = _walk(node.right, numbers)  # walk both sides: every literal is counted
        if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
            return None
        return _OPS[type(node.op)](left, right)
    raise ExpressionError(f"{type(node).__name__} not allowed")


# ----------------------------------------------------------------------------- solver


def solve(numbers: list[int], target: int, *, use_all: bool = True) -> str | None:
    """Return one expression over ``numbers`` equal to ``target`` (exact arithmetic), or None.

    Depth-first search over pairwise combinations, memoising multisets already explored.
    With ``use_all=False`` any subset of the numbers may be used.
    """
    target_f = Fraction(target)
    seen: set[tuple] = set()

    def rec(items: list[tuple[Fraction, str]]) -> str | None:
        if not use_all:
            for v, e in items:
                if v == target_f:
                    return e
        if len(items) == 1:
            return items[0][1] if items[0][0] == target_f else None
        key = tuple(sorted(v for v, _ in items))
        if key in seen:
            return None
        seen.add(key)
        for i, j in combinations(range(len(items)), 2):
            (a, ea), (b, eb) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k != i and k != j]
            cands = [(a + b, f"({ea} + {eb})"), (a * b, f"({ea} * {eb})")]
            cands += [(a - b, f"({ea} - {eb})"), (b - a, f"({eb} - {ea})")]
            if b != 0:
                cands.append((a / b, f"({ea} / {eb})"))
            if a != 0:
                cands.append((b / a, f"({eb} / {ea})"))
            for v, e in cands:
                found = rec(rest + [(v, e)])
                if found is not None:
                    return found
        return None

    found = rec([(Fraction(n), str(n)) for n in numbers])
    return _strip_outer(found) if found is not None else None


def _strip_outer(e: str) -> str:
    if e.startswith("(") and e.endswith(")"):
        depth = 0
        for i, c in enumerate(e):
            depth += (c == "(") - (c == ")")
            if depth == 0 and i < len(e) - 1:
                return e
        return e[1:-1]
    return e


class TooFewProblems(ValueError, RuntimeError):
    """The task's ranges hold fewer problems than asked for (a ValueError: the arguments are the cause;
    a RuntimeError for callers that take all there are)."""


def _random_instance(rng: random.Random, count: int, lo: int, hi: int, tlo: int, thi: int):
    """Random numbers and a target reached by a random expression that uses all of them.

    Intermediate values stay positive integers, as in the usual Countdown game.
    """
    for _ in range(1000):
        nums = [rng.randint(lo, hi) for _ in range(count)]
        items = [(n, str(n)) for n in nums]
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            (a, ea), (b, eb) = items[i], items[j]
            if a < b:
                (a, ea), (b, eb) = (b, eb), (a, ea)
            ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
            op = rng.choice(ops)
            v = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
            items = [x for k, x in enumerate(items) if k not in (i, j)] + [(v, f"({ea} {op} {eb})")]
        target, expr = items[0]
        if tlo <= target <= thi:
            return nums, target, _strip_outer(expr)
    raise TooFewProblems(f"countdown: no instance with {count} numbers in [{lo}, {hi}] reaches target_range "
                         f"[{tlo}, {thi}]; widen target_range or number_range")


# ----------------------------------------------------------------------------- task


@register("countdown", "Reach a target number with + - * / over 3-6 given numbers (TinyZero-compatible)")
class Countdown:
    """Countdown arithmetic puzzles (TinyZero / cognitive-behaviors compatible)."""

    name = "countdown"
    description = "Reach a target with + - * / over given numbers, each used once"

    def __init__(
        self,
        min_numbers: int = 3,
        max_numbers: int = 4,
        number_range: tuple[int, int] = (1, 100),
        target_range: tuple[int, int] = (10, 100),
        use_all_numbers: bool = True,
        correct_reward: float = 1.0,
        format_reward: float = 0.1,
        test_percent: int = 10,
    ):
        if not 2 <= min_numbers <= max_numbers <= 6:
            raise ValueError("need 2 <= min_numbers <= max_numbers <= 6")
        self.min_numbers, self.max_numbers = min_numbers, max_numbers
        self.number_range = tuple(number_range)
        self.target_range = tuple(target_range)
        self.use_all_numbers = use_all_numbers
        self.correct_reward, self.format_reward = correct_reward, format_reward
        self.test_percent = test_percent

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        check_split(split)
        rng = random.Random(stable_hash("countdown", seed, split))
        out: list[Problem] = []
        seen: set[str] = set()
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 200 * n + 1000:
                raise TooFewProblems(
                    f"countdown: only {len(out)} distinct {split} problems with number_range {list(self.number_range)}, "
                    f"target_range {list(self.target_range)}, {self.min_numbers}-{self.max_numbers} numbers, but {n} "
                    f"were asked for; ask for at most {len(out)} or widen number_range or target_range")
            count = rng.randint(self.min_numbers, self.max_numbers)
            nums, target, solution = _random_instance(rng, count, *self.number_range, *self.target_range)
            key = f"{sorted(nums)}->{target}"
            if key in seen or split_of(key, self.test_percent) != split:
                continue
            seen.add(key)
            pid = f"countdown-{split}-{stable_hash(key) % 10**10:010d}"
            out.append(
                Problem(
                    id=pid,
                    task=self.name,
                    split=split,
                    question=USER_PROMPT.format(numbers=nums, target=target),
                    answer=target,
                    metadata={"numbers": nums, "target": target, "solution": solution},
                )
            )
        return out

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]:
        return [{"role": "system", "content": system_prompt(SYSTEM_PROMPT, tools)}, {"role": "user", "content": problem.question}]

    def score(self, problem: Problem, text: str) -> Score:
        return score_countdown(
            text,
            problem.metadata["numbers"],
            problem.metadata["target"],
            use_all=self.use_all_numbers,
            correct_reward=self.correct_reward,
            format_reward=self.format_reward,
        )


def score_countdown(
    text: str,
    numbers: list[int],
    target: int,
    *,
    use_all: bool = True,
    correct_reward: float = 1.0,
    format_reward: float = 0.1,
) -> Score:
    """Score a response: the last ``<answer>`` must hold an allowed expression equal to target."""
    details: dict[str, Any] = {}
    answer = extract_tag(text, "answer")
    correct = format_ok = False
    norm: str | None = None
    if answer is None:
        details["error"] = "no <answer>...</answer>"
    else:
        try:
            res = evaluate_expression(answer)
        except ExpressionError as e:
            details["error"] = f"malformed: {e}"
        else:
            format_ok = True
            norm = re.sub(r"\s+", "", answer)
            used, given = Counter(res.numbers), Counter(numbers)
            if any(used[k] > given[k] for k in used):
                details["error"] = "uses a number not given, or more often than given"
            elif use_all and used != given:
                details["error"] = "does not use every number exactly once"
            elif res.value is None:
                details["error"] = "division by zero"
            elif res.value != target:
                details["error"] = f"evaluates to {res.value}, not {target}"
                details["value"] = str(res.value)
            else:
                correct = True
    reward = correct_reward if correct else (format_reward if format_ok else 0.0)
    return Score(reward=reward, correct=correct, format_ok=format_ok, answer=norm, details=details)
