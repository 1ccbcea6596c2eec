"""A Countdown search that records its own path, so a trace can narrate it exactly.

The search walks the tree of Countdown moves with exact integer arithmetic, as a person does:

- a *forward* move combines two available numbers (``98 - 44 = 54``);
- a *backward* move explains the current goal by one available number (``75 = 3 * 25``), which
  leaves a smaller goal (``25``) to make from the other numbers;
- at two numbers left it tries the operations directly (a *leaf check*).

Intermediate values stay positive integers (larger − smaller, exact division), the rules the task's
own instance generator follows, so every generated problem is solvable in this space.

Why not a plain DFS: on 3–4 numbers a greedy DFS either hits the target on its first path (no
backtracking to show) or wanders through dozens of dead ends (a trace too long to train on). The
priming study needs traces with a few detours each, so the search first draws how many dead ends
it will show (1–3), samples those detours as random heuristic-weighted paths that fail, and steers
the last path with an exact solvability oracle (the set of values each multiset of numbers can
reach, memoised). A detour may restart from the original numbers or go back to a state part-way
down the previous path. Every explored branch is recorded; :meth:`SearchTrace.counts` turns the
record into the true behaviour counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

from reasonlab.tasks.countdown import _strip_outer, evaluate_expression

HOLE = "@"  # where the sub-goal's expression goes inside the expression built by backward moves
DETOURS = (1, 2, 3)
DETOUR_WEIGHTS = (4, 3, 2)
P_KEEP_PREFIX = 0.35  # chance that a detour goes back part-way instead of starting over
P_SUBGOAL = 0.5  # chance a forward move is announced as an intermediate target (when allowed)
P_CHECK = 0.25  # chance a move is followed by an explicit check (when allowed)
P_FINAL_BACKWARD = 0.6  # chance the solving path starts with a backward move (when allowed)


@dataclass
class Forward:
    """``a op b = value``; ``rest`` is what is left afterwards (the new value last)."""

    a: int
    op: str
    b: int
    value: int
    rest: tuple[int, ...]
    subgoal: bool = False  # narrated as an intermediate target set before the step
    check: bool = False  # narrated with an explicit check after the step


@dataclass
class Backward:
    """``goal = relation`` with one available number, so ``need`` must come from ``rest``."""

    goal: int
    relation: str  # e.g. "3 * 25"
    need: int
    rest: tuple[int, ...]
    check: bool = False


Move = Forward | Backward


@dataclass
class Leaf:
    """Two numbers left: the operations tried (in order) against the current goal."""

    a: int
    b: int
    goal: int
    tries: list[tuple[str, int]]  # ("54 + 21", 75), ...
    hit: bool


@dataclass
class Node:
    """A search state: numbers (value, expression) and the goal; ``hole`` wraps sub-goal answers."""

    items: tuple[tuple[int, str], ...]
    goal: int
    hole: str = HOLE
    values: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.values = tuple(v for v, _ in self.items)


@dataclass
class Attempt:
    """One root-to-leaf path. The first ``kept`` moves are shared with the previous attempt."""

    kept: int
    moves: list[Move]
    nodes: list[Node]  # nodes[i] is the state before moves[i]; nodes[-1] is the leaf state
    leaf: Leaf
    expr: str | None = None  # the full answer when the leaf hits the target

    @property
    def narrated(self) -> list[Move]:
        return self.moves[self.kept :]


@dataclass
class SearchTrace:
    numbers: list[int]
    target: int
    attempts: list[Attempt]
    answer: str
    verify_final: bool = False
    gave_up: bool = False  # every attempt failed; ``answer`` is the closest miss (value ``closest``)
    closest: int | None = None

    def counts(self) -> dict[str, int]:
        """True behaviour counts: one per narrated event (see docs/priming.md)."""
        moves = [m for a in self.attempts for m in a.narrated]
        return {
            "verification": int(self.verify_final) + sum(m.check for m in moves),
            "backtracking": len(self.attempts) - 1,
            "subgoal_setting": sum(isinstance(m, Forward) and m.subgoal for m in moves),
            "backward_chaining": sum(isinstance(m, Backward) for m in moves),
        }


# ----------------------------------------------------------------------------- oracle


@lru_cache(maxsize=200_000)
def reachable(values: tuple[int, ...]) -> frozenset[int]:
    """Every value an expression using all of ``values`` (sorted) can take, positive integers only."""
    if len(values) == 1:
        return frozenset(values)
    out: set[int] = set()
    n = len(values)
    for i in range(n):
        for j in range(i + 1, n):
            rest = values[:i] + values[i + 1 : j] + values[j + 1 :]
            for v in _combine(values[i], values[j]).values():
                out |= reachable(tuple(sorted(rest + (v,))))
    return frozenset(out)


def solvable(node: Node) -> bool:
    return node.goal in reachable(tuple(sorted(node.values)))


def _combine(x: int, y: int) -> dict[str, int]:
    """Allowed results of two positive integers, larger first: op → value."""
    a, b = max(x, y), min(x, y)
    out = {"+": a + b, "*": a * b}
    if a > b:
        out["-"] = a - b
    if b > 1 and a % b == 0:
        out["/"] = a // b
    return out


# ----------------------------------------------------------------------------- moves


@dataclass
class _Child:
    move: Move
    node: Node
    weight: float


def _children(node: Node, allow_backward: bool) -> list[_Child]:
    items, goal = node.items, node.goal
    out: list[_Child] = []
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            (va, ea), (vb, eb) = items[i], items[j]
            if va < vb:
                (va, ea), (vb, eb) = (vb, eb), (va, ea)
            rest = tuple(x for k, x in enumerate(items) if k not in (i, j))
            for op, v in _combine(va, vb).items():
                new = Node(rest + ((v, f"({ea} {op} {eb})"),), goal, node.hole)
                closeness = 1.0 / (1.0 + abs(v - goal) / max(goal, 1))
                w = closeness * (0.2 if v > 4 * goal else 1.0)
                out.append(_Child(Forward(va, op, vb, v, new.values), new, w))
    if allow_backward and len(items) >= 3:
        for k, (vn, en) in enumerate(items):
            rest = tuple(x for i, x in enumerate(items) if i != k)
            for relation, need, wrap in _explanations(goal, vn, en):
                new = Node(rest, need, node.hole.replace(HOLE, wrap))
                w = 1.0 / (1.0 + need / max(goal, 1))
                out.append(_Child(Backward(goal, relation, need, new.values), new, w))
    return out


def _explanations(goal: int, n: int, en: str) -> list[tuple[str, int, str]]:
    """Ways to write ``goal`` with ``n`` and an unknown positive integer: (relation, need, wrap)."""
    out = []
    if goal > n:
        out.append((f"{n} + {goal - n}", goal - n, f"({en} + {HOLE})"))
    out.append((f"{goal + n} - {n}", goal + n, f"({HOLE} - {en})"))
    if n > goal:
        out.append((f"{n} - {n - goal}", n - goal, f"({en} - {HOLE})"))
    if n > 1 and goal % n == 0:
        out.append((f"{n} * {goal // n}", goal // n, f"({en} * {HOLE})"))
    if n > 1 and goal * n <= 10_000:
        out.append((f"{goal * n} / {n}", goal * n, f"({HOLE} / {en})"))
    if goal > 1 and n % goal == 0 and n > goal:
        out.append((f"{n} / {n // goal}", n // goal, f"({en} / {HOLE})"))
    return out


LEAF_ORDER = ("+", "-", "*", "/")  # the faithful search's fixed order of a leaf check


def _leaf(node: Node, rng: random.Random, *, ordered: bool = False) -> tuple[Leaf, str | None]:
    """Try the operations on the last two numbers (random order, or ``LEAF_ORDER``; stop at a hit)."""
    (va, ea), (vb, eb) = node.items
    if va < vb:
        (va, ea), (vb, eb) = (vb, eb), (va, ea)
    ops = list(_combine(va, vb).items())
    if ordered:
        ops.sort(key=lambda kv: LEAF_ORDER.index(kv[0]))
    else:
        rng.shuffle(ops)
    tries, found = [], None
    for op, v in ops:
        tries.append((f"{va} {op} {vb}", v))
        if v == node.goal:
            found = node.hole.replace(HOLE, f"({ea} {op} {eb})")
            break
    return Leaf(va, vb, node.goal, tries, found is not None), found


def _signature(moves: list[Move]) -> tuple:
    """What makes two paths the same path (flags aside)."""
    return tuple((m.a, m.op, m.b) if isinstance(m, Forward) else (m.goal, m.relation) for m in moves)


def _walk(start: Node, prefix: list[Move], prefix_nodes: list[Node], rng: random.Random, *,
          solve: bool, first_kind: str | None, allow_backward: bool) -> Attempt | None:
    """Sample one path from ``start``: steered by the oracle when ``solve``, else free."""
    moves, nodes, node = list(prefix), list(prefix_nodes), start
    first = True
    while len(node.items) > 2:
        kids = _children(node, allow_backward)
        if first and first_kind:
            kids = [c for c in kids if type(c.move).__name__.lower() == first_kind]
        if solve:
            kids = [c for c in kids if solvable(c.node)]
        if not kids:
            return None
        child = rng.choices(kids, weights=[c.weight for c in kids])[0]
        moves.append(child.move)
        nodes.append(node)
        node, first = child.node, False
    leaf, expr = _leaf(node, rng)
    if leaf.hit != solve:
        return None
    nodes.append(node)
    return Attempt(len(prefix), moves, nodes, leaf, _strip_outer(expr) if expr else None)


# ----------------------------------------------------------------------------- search


class NoFailingPath(ValueError):
    """No trace of this problem fits the condition: ``give_up`` was asked for but every path reaches the
    target, or (:func:`search_faithful`) no draw found the target within its attempts. The problem is skipped."""


def search(numbers: list[int], target: int, rng: random.Random, *, backward: bool = False,
           subgoal: bool = False, verify: bool = False, tries: int = 100, give_up: bool = False,
           max_detours: int | None = None, restart_only: bool = False) -> SearchTrace:
    """Search for ``target`` with detours; the flags choose which behaviours may appear.

    ``give_up=True`` (the ``no_positive`` priming condition): every attempt fails, and the trace
    settles on the closest miss it met — a well-formed expression using every number once whose
    whole-number value is not ``target``; the text never states a correct expression.

    Every behaviour that is allowed appears at least once (a plan that misses one is redrawn), and
    there is at least one dead end whenever the problem has three or more numbers — where the
    problem allows it: on a problem where every path succeeds (``[7, 7, 7] -> 7``) no dead end
    exists, and after ``tries`` draws the plan showing the most of the wanted behaviours is
    returned. Its counts are still the true counts of what the trace shows.

    ``max_detours`` caps the dead ends drawn (1–3 by default; 1 = one failed attempt, then the
    solution), and ``restart_only`` makes every detour start over from the original numbers instead
    of going back part-way: shorter traces whose state is always the prompt's numbers after a
    restart (for the small model organisms, see docs/priming.md).
    """
    if max_detours is not None and max_detours < 1:
        raise ValueError(f"max_detours must be >= 1, got {max_detours}")
    best, best_score = None, -1
    for _ in range(tries):
        trace = _plan(numbers, target, rng, backward=backward, subgoal=subgoal, verify=verify, give_up=give_up,
                      max_detours=max_detours, restart_only=restart_only)
        if trace is None:
            continue
        c = trace.counts()
        wanted = [("backtracking", len(numbers) >= 3), ("backward_chaining", backward and len(numbers) >= 3),
                  ("subgoal_setting", subgoal and len(numbers) >= 3), ("verification", verify)]
        score = sum(c[name] >= 1 for name, on in wanted if on)
        if score == sum(on for _, on in wanted):
            return trace
        if score > best_score:
            best, best_score = trace, score
    if best is not None:
        return best
    if give_up:
        raise NoFailingPath(f"{numbers} -> {target}: no failing path to narrate")
    for _ in range(tries):  # no failing path exists at all: a straight solution, without detours
        trace = _plan(numbers, target, rng, backward=backward, subgoal=subgoal, verify=verify, detours=0)
        if trace is not None:
            return trace
    raise RuntimeError(f"no solution path found for {numbers} -> {target}")


def _plan(numbers: list[int], target: int, rng: random.Random, *, backward: bool, subgoal: bool,
          verify: bool, detours: int | None = None, give_up: bool = False, max_detours: int | None = None,
          restart_only: bool = False) -> SearchTrace | None:
    root = Node(tuple((n, str(n)) for n in numbers), target)
    if not solvable(root):
        raise ValueError(f"{numbers} -> {target} has no solution with positive integer steps")
    if detours is None:
        allowed = [(d, w) for d, w in zip(DETOURS, DETOUR_WEIGHTS) if max_detours is None or d <= max_detours]
        detours = rng.choices([d for d, _ in allowed], weights=[w for _, w in allowed])[0] if len(numbers) >= 3 else 0
        if give_up:
            detours = max(detours, 1)  # at least one backtrack before settling on a miss
    kinds = _root_kinds(root, detours, rng, backward=backward, subgoal=subgoal)
    attempts: list[Attempt] = []
    seen: set[tuple] = set()
    for i in range(detours + 1):
        solve = i == detours and not give_up
        attempt = None
        for _ in range(40):
            prev = attempts[-1] if attempts else None
            keep = 0
            if prev and len(prev.moves) >= 2 and rng.random() < (0.0 if restart_only else P_KEEP_PREFIX):
                keep = rng.randint(1, len(prev.moves) - 1)
            start = prev.nodes[keep] if keep else root
            prefix, prefix_nodes = (prev.moves[:keep], prev.nodes[:keep]) if keep else ([], [])
            cand = _walk(start, prefix, prefix_nodes, rng, solve=solve, first_kind=None if keep else kinds[i],
                         allow_backward=backward)
            if cand is None or _signature(cand.moves) in seen:
                continue
            if keep and _signature(cand.moves[: keep + 1]) == _signature(prev.moves[: keep + 1]):
                continue  # going back to a state must lead to a different next step
            attempt = cand
            break
        if attempt is None:
            return None
        seen.add(_signature(attempt.moves))
        attempts.append(attempt)
    _mark(attempts, rng, subgoal=subgoal, verify=verify)
    if give_up:
        miss = _closest_miss(attempts, target, rng)
        if miss is None:
            return None
        return SearchTrace(list(numbers), target, attempts, miss[0], verify_final=verify, gave_up=True, closest=miss[1])
    answer = attempts[-1].expr
    assert answer is not None
    res = evaluate_expression(answer)  # our own output: a cheap guard against a bug in the walk
    assert res.value == target and sorted(res.numbers) == sorted(numbers), (answer, numbers, target)
    return SearchTrace(list(numbers), target, attempts, answer, verify_final=verify)


def _closest_miss(attempts: list[Attempt], target: int, rng: random.Random) -> tuple[str, int] | None:
    """The full expression, among the failed leaves' tries, whose whole-number value is nearest ``target``."""
    cands = []
    for att in attempts:
        (va, ea), (vb, eb) = att.nodes[-1].items
        if va < vb:
            (va, ea), (vb, eb) = (vb, eb), (va, ea)
        for op, _ in _combine(va, vb).items():
            expr = _strip_outer(att.nodes[-1].hole.replace(HOLE, f"({ea} {op} {eb})"))
            value = evaluate_expression(expr).value
            if value is not None and value.denominator == 1 and value != target:
                cands.append((abs(value - target), rng.random(), expr, int(value)))
    if not cands:
        return None
    _, _, expr, value = min(cands)
    return expr, value


def _root_kinds(root: Node, detours: int, rng: random.Random, *, backward: bool, subgoal: bool) -> list[str | None]:
    """Kind of first move of each attempt, arranged so every allowed behaviour can show up."""
    if not backward or len(root.items) < 3:
        return ["forward"] * (detours + 1)
    kinds: list[str | None] = [rng.choice(["forward", "backward"]) for _ in range(detours)]
    can_end_backward = any(isinstance(c.move, Backward) and solvable(c.node) for c in _children(root, True))
    final = "backward" if can_end_backward and rng.random() < P_FINAL_BACKWARD else "forward"
    if detours and final == "forward":
        kinds[0] = "backward"
    if detours and final == "backward" and subgoal and len(root.items) == 3:
        kinds[0] = "forward"  # with 3 numbers a backward path has no forward move to announce
    return kinds + [final]


def _mark(attempts: list[Attempt], rng: random.Random, *, subgoal: bool, verify: bool) -> None:
    """Choose which narrated moves are announced as subgoals and which are checked."""
    moves = [m for a in attempts for m in a.narrated]
    forward = [m for m in moves if isinstance(m, Forward)]
    if subgoal and forward:
        for m in forward:
            m.subgoal = rng.random() < P_SUBGOAL
        if not any(m.subgoal for m in forward):
            rng.choice(forward).subgoal = True
    if verify:
        for m in moves:
            m.check = rng.random() < P_CHECK


# ----------------------------------------------------------------------------- faithful search


FAITHFUL_ATTEMPTS = 4  # a faithful trace finds the target within this many attempts (about 70% of cpu-range draws do)
GIVE_UP_ATTEMPTS = (2, 3, 4)  # failed attempts of a faithful no_positive trace (uniform)


def search_faithful(numbers: list[int], target: int, rng: random.Random, *, backward: bool = False,
                    subgoal: bool = False, verify: bool = False, give_up: bool = False,
                    max_attempts: int = FAITHFUL_ATTEMPTS, tries: int = 200) -> SearchTrace:
    """A search a model can run as written: no oracle, every decision made from what the text shows.

    :func:`search` steers its last path with a solvability oracle and shuffles each leaf check, so a
    model that imitates its traces learns *where* a trace stops (after one to three dead ends), not to
    stop when a value is the goal (docs/priming.md, "Are the searches functional?"). Here each attempt
    starts over from the prompt's numbers and picks its moves uniformly at random among the allowed
    ones (a kind first — forward or backward — then a move of that kind), never repeating an earlier
    attempt; each leaf check tries the operations in the fixed order ``+ - * /`` and stops at the
    first value equal to the goal. The search ends at the first hit. A model that imitates these
    traces runs a real random search: on the cpu range (3 numbers from 1–10, targets 5–30) such a
    search finds the target within 4 attempts for about 70% of problems (within 6 for 82–88%), where
    the organisms' direct answers solve 12–30%.

    Which draws are kept (``tries`` draws at most; a problem with no kept draw raises
    :class:`NoFailingPath`):

    - the target is found within ``max_attempts`` attempts; the behaviours are left to the draw, so
      each shows in most traces but not in every one (on the cpu range about a third of the kept
      traces hit on their first attempt and show no backtracking; with 3 numbers one attempt is
      either a forward or a backward move, so it cannot show both a subgoal and backward chaining).
      Keeping only traces with a dead end would teach that a first leaf check never hits, a rule of
      position rather than of value — the failure this search exists to remove;
    - ``give_up=True`` (``no_positive``): 2–4 attempts (uniform), all failing, then the closest miss,
      as in :func:`search`.

    Keeping only draws that succeed conditions the trace on its outcome, but not its decisions on
    anything the text does not show: each move is still one the model could have drawn.
    """
    root = Node(tuple((n, str(n)) for n in numbers), target)
    if not solvable(root):
        raise ValueError(f"{numbers} -> {target} has no solution with positive integer steps")
    for _ in range(tries):
        budget = rng.choice(GIVE_UP_ATTEMPTS) if give_up else max_attempts
        attempts: list[Attempt] = []
        seen: set[tuple] = set()
        while len(attempts) < budget:
            attempt = _free_walk(root, rng, seen, backward=backward)
            if attempt is None:
                break
            seen.add(_signature(attempt.moves))
            attempts.append(attempt)
            if attempt.leaf.hit:
                break
        if not attempts:
            continue
        hit = attempts[-1].leaf.hit
        if give_up:
            if hit or len(attempts) < budget:
                continue
        elif not hit:
            continue
        _mark(attempts, rng, subgoal=subgoal, verify=verify)
        if give_up:
            miss = _closest_miss(attempts, target, rng)
            if miss is None:
                continue
            trace = SearchTrace(list(numbers), target, attempts, miss[0], verify_final=verify, gave_up=True,
                                closest=miss[1])
        else:
            answer = attempts[-1].expr
            res = evaluate_expression(answer)  # our own output: a cheap guard against a bug in the walk
            assert res.value == target and sorted(res.numbers) == sorted(numbers), (answer, numbers, target)
            trace = SearchTrace(list(numbers), target, attempts, answer, verify_final=verify)
        return trace
    raise NoFailingPath(f"{numbers} -> {target}: no faithful search of this problem fits the condition "
                        f"in {tries} draws")


def _free_walk(root: Node, rng: random.Random, seen: set[tuple], *, backward: bool) -> Attempt | None:
    """One attempt from the prompt's numbers, uniform over move kinds then moves; never a repeat."""
    for _ in range(40):
        moves: list[Move] = []
        nodes: list[Node] = []
        node = root
        while len(node.items) > 2:
            kids = _children(node, backward)
            by_kind: dict[str, list[_Child]] = {}
            for c in kids:
                by_kind.setdefault(type(c.move).__name__, []).append(c)
            if not by_kind:
                return None
            child = rng.choice(by_kind[rng.choice(sorted(by_kind))])
            moves.append(child.move)
            nodes.append(node)
            node = child.node
        if _signature(moves) in seen:
            continue
        leaf, expr = _leaf(node, rng, ordered=True)
        nodes.append(node)
        return Attempt(0, moves, nodes, leaf, _strip_outer(expr) if expr else None)
    return None
