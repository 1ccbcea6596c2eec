"""Turn a recorded search into the text of a ``<think>`` block, one template per event.

The narrator emits exactly one template per behaviour event of the search record, and returns
the behaviour counts it emitted so the caller can check them against
:meth:`~reasonlab.priming.search.SearchTrace.counts` (they must agree; a mismatch is a bug).
"""

from __future__ import annotations

import ast
import random
from collections import Counter

from reasonlab.priming.phrases import BEHAVIOR_OF_EVENT
from reasonlab.priming.search import Attempt, Backward, Forward, SearchTrace

_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}


class _Writer:
    def __init__(self, bank: dict[str, list[str]], rng: random.Random):
        self.bank, self.rng = bank, rng
        self.paragraphs: list[list[str]] = [[]]
        self.counts: Counter[str] = Counter()
        # one list style per trace: "[54, 21]" or "54 and 21" (a family may fix it with ``list_style``)
        self.brackets = rng.random() < 0.5 if "list_style" not in bank else bank["list_style"] == ["brackets"]

    def say(self, event: str, **slots) -> None:
        self.paragraphs[-1].append(self.rng.choice(self.bank[event]).format(**slots))
        if event in BEHAVIOR_OF_EVENT:
            self.counts[BEHAVIOR_OF_EVENT[event]] += 1

    def pick(self, event: str, **slots) -> str:
        return self.rng.choice(self.bank[event]).format(**slots)

    def numbers(self, values) -> str:
        values = [str(v) for v in values]
        if self.brackets or len(values) == 1:
            return "[" + ", ".join(values) + "]"
        return ", ".join(values[:-1]) + " and " + values[-1]

    def new_paragraph(self) -> None:
        self.paragraphs.append([])

    def text(self) -> str:
        return "\n".join(" ".join(p) for p in self.paragraphs if p)


def narrate(trace: SearchTrace, bank: dict[str, list[str]], rng: random.Random) -> tuple[str, dict[str, int]]:
    """Text of the thinking for ``trace`` and the behaviour counts it contains."""
    w = _Writer(bank, rng)
    w.say("intro", numbers=w.numbers(trace.numbers), target=trace.target)
    for i, attempt in enumerate(trace.attempts):
        _attempt(w, attempt, trace.target)
        if not attempt.leaf.hit and i + 1 < len(trace.attempts):
            nxt = trace.attempts[i + 1]
            if nxt.kept:
                node = nxt.nodes[nxt.kept]
                state = w.numbers(node.values)
                if node.goal != trace.target:
                    state += f" (where I need {node.goal})"
                w.say("backtrack_partial", state=state)
            else:
                w.say("backtrack_restart", numbers=w.numbers(trace.numbers), target=trace.target)
            w.new_paragraph()
    if trace.gave_up:
        w.say("give_up", target=trace.target, expr=trace.answer, v=trace.closest)
        if trace.verify_final:
            w.say("verify_miss", chain=chain(trace.answer), target=trace.target, v=trace.closest)
    elif trace.verify_final:
        w.say("verify_final", chain=chain(trace.answer), target=trace.target)
    w.say("conclude", expr=trace.answer)
    counts = {k: w.counts.get(k, 0) for k in ("verification", "backtracking", "subgoal_setting", "backward_chaining")}
    return w.text(), counts


def _attempt(w: _Writer, attempt: Attempt, target: int) -> None:
    for idx in range(attempt.kept, len(attempt.moves)):
        m, goal = attempt.moves[idx], attempt.nodes[idx].goal
        if isinstance(m, Forward):
            if m.subgoal:
                reason = w.pick(_reason_kind(m.value, goal), goal=goal, v=m.value)
                w.say("subgoal", v=m.value, reason=reason, goal=goal)
            w.say("step", a=m.a, op=m.op, b=m.b, v=m.value, rest=w.numbers(m.rest))
            if m.check:
                inverse = f"{m.value} {_INVERSE[m.op]} {m.b} = {m.a}"
                w.say("check_step", a=m.a, op=m.op, b=m.b, v=m.value, inverse=inverse)
        elif isinstance(m, Backward):
            w.say("backward", goal=m.goal, relation=m.relation, need=m.need, rest=w.numbers(m.rest))
            if m.check:
                w.say("check_backward", relation=m.relation, goal=m.goal)
    leaf = attempt.leaf
    # every operation tried, the hit last; a family with ``try_miss``/``try_hit`` writes each try's
    # verdict next to it ("10 - 7 = 3 not 4"), so accepting or rejecting compares two adjacent numbers
    if "try_miss" in w.bank:
        tries = ", ".join(w.pick("try_hit" if v == leaf.goal else "try_miss", t=t, v=v, goal=leaf.goal)
                          for t, v in leaf.tries)
    else:
        tries = ", ".join(f"{t} = {v}" for t, v in leaf.tries)
    if leaf.hit:
        a, op, b = leaf.tries[-1][0].split(" ")
        w.say("leaf_hit", a=a, op=op, b=b, goal=leaf.goal, tries=tries)
        if leaf.goal != target:
            w.say("assemble", expr=attempt.expr, target=target)
    else:
        values = ", ".join(str(v) for _, v in leaf.tries)
        w.say("leaf_fail", a=leaf.a, b=leaf.b, tries=tries, values=values, goal=leaf.goal)


def _reason_kind(v: int, goal: int) -> str:
    if v == goal:
        return "reason_equal"
    if abs(v - goal) <= max(5, goal // 4):
        return "reason_near"
    if 1 < v < goal and goal % v == 0:
        return "reason_factor"
    if v > goal and v % goal == 0:
        return "reason_multiple"
    return "reason_other"


def chain(expr: str) -> str:
    """Every step of an expression, innermost first: ``"98 - 44 = 54, 54 + 21 = 75"``.

    Only called on expressions this package wrote (integer literals and + - * /).
    """
    steps: list[str] = []
    symbols = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant):
            return node.value
        assert isinstance(node, ast.BinOp) and type(node.op) in symbols
        a, b = walk(node.left), walk(node.right)
        op = symbols[type(node.op)]
        v = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        steps.append(f"{a} {op} {b} = {v}")
        return v

    walk(ast.parse(expr, mode="eval").body)
    return ", ".join(steps)
