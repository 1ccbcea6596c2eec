"""Suites: named task lists with a fixed task-level train/test split.

``r1ci`` has the shape of R1-Code-Interpreter's 144-task suite (arXiv 2505.21668): every reasoning-gym
dataset (106, as ``gym/<name>``), 25 SymBench-style tasks (``sym/<name>``) and 13 BIG-Bench-Hard-style
tasks (``bbh/<name>``). 37 tasks are *test tasks*: drawn once at random (``random.Random(250521668)``,
27 from reasoning-gym and 10 from the procedural tasks, i.e. the suite's proportions) and frozen below,
so the split cannot drift when a package adds datasets. No training stage ever sees a test task:
``suite:r1ci/train`` holds only the 107 train tasks, and the trainers refuse test tasks of a suite.
Inside every task the usual per-instance split applies as well.

A suite part is itself a Task (:class:`SuiteTask`), registered as ``suite:<name>`` (all tasks),
``suite:<name>/train`` and ``suite:<name>/test``; its problems are spread evenly over its member tasks
and each problem is messaged and scored by its own task. So ``eval``, ``train rl``, ``collect`` and the
curriculum work on a suite exactly as on one task.
"""

from __future__ import annotations

import random
from functools import cached_property
from typing import Any

from reasonlab.episode import Problem, Score
from reasonlab.tasks.base import check_split, get_task, register, stable_hash

R1CI_TEST = (
    "gym/advanced_geometry", "gym/arc_1d", "gym/binary_alternation", "gym/circuit_logic", "gym/count_primes",
    "gym/course_schedule", "gym/decimal_arithmetic", "gym/emoji_mystery", "gym/figlet_font", "gym/gcd",
    "gym/graph_color", "gym/intermediate_integration", "gym/jugs", "gym/knights_knaves", "gym/largest_island",
    "gym/letter_counting", "gym/manipulate_matrix", "gym/number_format", "gym/number_sequence", "gym/path_star",
    "gym/power_function", "gym/rotten_oranges", "gym/sentence_reordering", "gym/simple_equations",
    "gym/simple_geometry", "gym/syllogism", "gym/tsumego",
    "bbh/dyck_languages", "bbh/web_of_lies", "sym/cryptanalysis", "sym/eight_queens", "sym/game_2048",
    "sym/knapsack", "sym/new_operator", "sym/number_multiplication", "sym/pattern_recognition", "sym/scheduling",
)


def _r1ci_tasks() -> list[str]:
    from reasoning_gym.factory import DATASETS

    from reasonlab.tasks.procedural import SPECS

    # gym/composite only mixes other datasets and cannot run without a config naming them
    return sorted(f"gym/{n}" for n in DATASETS if n != "composite") + sorted(SPECS)


SUITES: dict[str, dict[str, Any]] = {
    "r1ci": {
        "description": "R1-Code-Interpreter-shaped suite: reasoning-gym + SymBench-style + BBH-style, 107 train / 37 test tasks",
        "tasks": _r1ci_tasks,
        "test": R1CI_TEST,
    },
}
PARTS = ("all", "train", "test")


def suite_tasks(suite: str, part: str = "all") -> list[str]:
    """The task names of a suite part: ``all``, ``train`` (never a test task) or ``test``."""
    if suite not in SUITES:
        raise KeyError(f"unknown suite {suite!r}; allowed: {', '.join(SUITES)}. Run `reasonlab tasks list --suite NAME`.")
    if part not in PARTS:
        raise ValueError(f"unknown suite part {part!r}; allowed: {', '.join(PARTS)}")
    s = SUITES[suite]
    names = s["tasks"]()
    test = set(s["test"])
    missing = test - set(names)
    if missing:
        raise RuntimeError(f"suite {suite}: test tasks {sorted(missing)} are not registered (is reasoning-gym installed?)")
    if part == "train":
        return [t for t in names if t not in test]
    if part == "test":
        return [t for t in names if t in test]
    return names


def held_out_tasks() -> dict[str, str]:
    """Test task name → the suite holding it out (for the trainers' guard)."""
    return {t: name for name, s in SUITES.items() for t in s["test"]}


def check_trainable(task_names: list[str] | set[str], where: str) -> None:
    """Refuse a training stage that would see a suite's test task."""
    held = held_out_tasks()
    bad = sorted(t for t in task_names if t in held)
    if bad:
        raise ValueError(f"{where}: {len(bad)} task(s) are held-out test tasks of a suite ({', '.join(bad[:5])}"
                         f"{'…' if len(bad) > 5 else ''}); train on suite:<name>/train, or drop them")


def parse_suite(spec: str, default_part: str) -> tuple[str, str]:
    """``r1ci`` → (r1ci, default_part); ``r1ci/test`` → (r1ci, test)."""
    name, _, part = spec.partition("/")
    return name, part or default_part


def suite_task_name(spec: str, default_part: str) -> str:
    name, part = parse_suite(spec, default_part)
    suite_tasks(name, part)  # validates
    return f"suite:{name}" if part == "all" else f"suite:{name}/{part}"


class SuiteTask:
    """Several tasks as one: problems spread evenly over the members; each scored by its own task."""

    def __init__(self, suite: str, part: str = "all", tasks: list[str] | None = None, **task_args: Any):
        self.suite, self.part = suite, part
        self.name = f"suite:{suite}" if part == "all" else f"suite:{suite}/{part}"
        self.members = list(tasks) if tasks is not None else suite_tasks(suite, part)
        self.description = f"{len(self.members)} tasks of suite {suite} ({part})"
        self.task_args = task_args  # passed to every member (e.g. test_percent)
        self._tasks: dict[str, Any] = {}

    def task(self, name: str) -> Any:
        if name not in self._tasks:
            if name not in self.members:
                raise KeyError(f"task {name!r} is not part of {self.name}")
            self._tasks[name] = get_task(name, **self.task_args)
        return self._tasks[name]

    @cached_property
    def member_set(self) -> set[str]:
        return set(self.members)

    def allocation(self, n: int, seed: int) -> dict[str, int]:
        """How many of ``n`` problems each member gives: even, the remainder to a seeded choice."""
        order = self.members[:]
        random.Random(stable_hash(self.name, "alloc", seed)).shuffle(order)
        base, extra = divmod(n, len(order))
        return {t: base + (i < extra) for i, t in enumerate(order) if base + (i < extra) > 0}

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        check_split(split)
        out: list[Problem] = []
        for name, k in sorted(self.allocation(n, seed).items()):
            out += self.task(name).problems(split, k, seed=seed)
        random.Random(stable_hash(self.name, "order", seed, split)).shuffle(out)
        return out

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]:
        return self.task(problem.task).messages(problem, tools)

    def score(self, problem: Problem, text: str) -> Score:
        return self.task(problem.task).score(problem, text)


def mix_task(name: str, **task_args: Any) -> SuiteTask:
    """``mix:A,B,C``: the tasks A, B and C as one task, like a suite part (problems spread evenly,
    each scored by its own task, per-task metrics); a suite's held-out test tasks stay untrainable."""
    members = [t.strip() for t in name.removeprefix("mix:").split(",") if t.strip()]
    if not members:
        raise ValueError(f"{name!r} names no task; write mix:TASK,TASK,... (e.g. mix:sym/letters,bbh/navigate)")
    for t in members:
        get_task(t)  # unknown names fail here, with suggestions
    mix = SuiteTask("mix", "all", tasks=members, **task_args)
    mix.name = "mix:" + ",".join(members)
    mix.description = f"{len(members)} tasks mixed: {', '.join(members)}"
    return mix


def member_task(task: Any, problem: Problem) -> Any:
    """The task that owns ``problem`` (a suite's member, or ``task`` itself)."""
    return task.task(problem.task) if isinstance(task, SuiteTask) else task


def register_suites() -> None:
    for name, s in SUITES.items():
        for part in PARTS:
            full = f"suite:{name}" if part == "all" else f"suite:{name}/{part}"
            desc = f"suite {name} ({part}): {s['description']}"
            register(full, desc)(lambda name=name, part=part, **kw: SuiteTask(name, part, **kw))
