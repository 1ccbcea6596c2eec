"""Procedural tasks: a generator, an exact checker and (optionally) a solver program per task.

A :class:`Spec` is three plain functions:

- ``gen(rng) -> Instance``: a solvable instance (question text, reference answer, checker data);
- ``check(answer, data) -> bool``: exact — a constraint checker or simulator for planning and
  puzzle tasks (any valid answer passes), exact comparison for tasks with one answer;
- ``solver(data) -> str`` (optional): a short Python program that computes the answer from the
  instance's data and prints it — what the programmatic code teacher runs in the sandbox.

:class:`ProceduralTask` turns a Spec into a reasonlab Task with the usual instance-level split
(hash of the question, see :mod:`reasonlab.tasks.base`). Answers are parsed with small dedicated
parsers or :func:`ast.literal_eval` on bounded text (literals only: no names, calls or operators),
never ``eval``.

The SymBench-style specs live in :mod:`reasonlab.tasks.symbench`, the BIG-Bench-Hard-style ones in
:mod:`reasonlab.tasks.bbh`; docs/r1ci.md says which original each one stands in for.
"""

from __future__ import annotations

import ast
import random
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from reasonlab.episode import Problem, Score
from reasonlab.tasks.base import answer_or_fail, check_split, register, split_of, stable_hash, system_prompt

SYSTEM_PROMPT = (
    "You are a helpful assistant. Think step by step inside <think> </think> tags, then give only the "
    "final answer inside <answer> </answer> tags."
)
MAX_ANSWER_CHARS = 4096


@dataclass
class Instance:
    question: str
    answer: str  # the reference answer, as a model should write it
    data: dict[str, Any] = field(default_factory=dict)  # what check() and solver() need (JSON-able)


@dataclass
class Spec:
    name: str  # "sym/box_lift"
    original: str  # the original it stands in for, e.g. "SymBench: BoxLift"
    description: str
    gen: Callable[[random.Random], Instance]
    check: Callable[[str, dict], bool]
    perturb: Callable[[str, dict, random.Random], str] | None = None  # a wrong answer (tests)
    solver: Callable[[dict], str] | None = None  # Python source printing the answer


SPECS: dict[str, Spec] = {}


def spec(name: str, original: str, description: str, *, check=None, perturb=None, solver=None):
    """Decorator on a generator ``gen(rng) -> Instance``; ``check`` defaults to exact match."""

    def deco(gen):
        SPECS[name] = Spec(name, original, description, gen, check or exact, perturb, solver)
        return gen

    return deco


# ----------------------------------------------------------------------------- answer parsing


def norm(s: str) -> str:
    """Normalised exact-match form: trimmed, whitespace collapsed, lower case, no trailing period."""
    return re.sub(r"\s+", " ", s.strip()).strip(" .").lower()


def literal(s: str, max_chars: int = 2000) -> Any:
    """A Python literal (list, tuple, int, str, dict) from bounded text; ValueError otherwise."""
    s = s.strip()
    if len(s) > max_chars:
        raise ValueError("answer too long")
    try:
        with warnings.catch_warnings():  # model text: "1st" etc. warn (SyntaxWarning) before failing
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.literal_eval(s)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(f"not a literal: {e}") from None


def as_int(s: str) -> int:
    s = s.strip().replace(",", "")
    if not re.fullmatch(r"[+-]?\d{1,400}", s):
        raise ValueError(f"not an integer: {s[:40]!r}")
    return int(s)


def exact(answer: str, data: dict) -> bool:
    """The default checker: normalised exact match against ``data['answer']``."""
    return norm(answer) == norm(str(data["answer"]))


def perturb_text(ref: str, data: dict, rng: random.Random) -> str:
    """A different answer of the same shape: bump the last number, else change the last letter."""
    nums = list(re.finditer(r"\d+", ref))
    if nums:
        m = nums[-1]
        return ref[: m.start()] + str(int(m.group()) + rng.randint(1, 3)) + ref[m.end():]
    letters = [i for i, c in enumerate(ref) if c.isalpha()]
    if letters:
        i = letters[-1]
        c = ref[i].lower()
        new = "a" if c != "a" else "b"
        return ref[:i] + new + ref[i + 1:]
    return ref + "x"


# ----------------------------------------------------------------------------- the Task


class ProceduralTask:
    """A :class:`Spec` as a reasonlab Task (instance-level split by hashing the question)."""

    def __init__(self, spec: Spec, test_percent: int = 10, format_reward: float = 0.0):
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.test_percent = test_percent
        self.format_reward = format_reward

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        check_split(split)
        rng = random.Random(stable_hash(self.name, seed, split))
        out: list[Problem] = []
        seen: set[str] = set()
        for _ in range(200 * n + 200):
            inst = self.spec.gen(rng)
            q = inst.question
            if q in seen or split_of(f"{self.name}:{q}", self.test_percent) != split:
                continue
            seen.add(q)
            out.append(Problem(id=f"{self.name}-{split}-{stable_hash(q) % 10**10:010d}", task=self.name, split=split,
                               question=q, answer=inst.answer, metadata={"data": inst.data}))
            if len(out) == n:
                return out
        raise RuntimeError(f"{self.name}: only {len(out)} distinct {split} problems found (asked for {n})")

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]:
        return [{"role": "system", "content": system_prompt(SYSTEM_PROMPT, tools)},
                {"role": "user", "content": problem.question}]

    def check_answer(self, problem: Problem, answer: str) -> bool:
        try:
            return bool(self.spec.check(answer, problem.metadata["data"]))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, ZeroDivisionError, RecursionError,
                OverflowError):
            return False

    def score(self, problem: Problem, text: str) -> Score:
        answer, failed = answer_or_fail(text, MAX_ANSWER_CHARS)
        if failed is not None:
            return failed
        ok = self.check_answer(problem, answer)
        return Score(1.0 if ok else self.format_reward, ok, True, norm(answer), {})

    def solver_code(self, problem: Problem) -> str | None:
        return self.spec.solver(problem.metadata["data"]) if self.spec.solver else None


def register_specs() -> None:
    for name, s in SPECS.items():
        register(name, f"{s.description} ({s.original})")(lambda s=s, **kw: ProceduralTask(s, **kw))
