"""SymBench-style procedural tasks (``sym/<name>``): generators with exact checkers or simulators.

SymBench (CodeSteer, arXiv 2502.04350) is not shipped by any package here. Each task below is a
procedural equivalent written from the task's description, not from its data: same kind of problem
(planning, constraint satisfaction, symbolic computation), new instances from a seed, and a checker
that decides correctness exactly — a simulator for plans (blocksworld, box lifting, grid routes), a
constraint checker where several answers are right (queens, Latin squares, knapsack), exact
comparison where one answer is. docs/r1ci.md maps each task to its original.

Tasks that reasoning-gym already covers (Game24, sudoku, string insertion/splitting/synthesis,
pooling, BoxNet, matrix rotation, mahjong, ...) are taken from reasoning-gym in the r1ci suite.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import deque
from typing import Any

from reasonlab.tasks.procedural import SPECS, Instance, as_int, literal, spec

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _ints(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


# ----------------------------------------------------------------------------- shared checkers

def _digits_check(ans: str, d: dict) -> bool:
    return re.sub(r"[\s,\[\]]", "", ans) == d["answer"]

def _int_check(ans: str, d: dict) -> bool:
    return as_int(ans) == int(d["answer"])

def _grid_check(ans: str, d: dict) -> bool:
    return [list(r) for r in literal(ans)] == d["answer_grid"]

def _list_check(ans: str, d: dict) -> bool:
    return list(literal(ans)) == literal(d["answer"])


# ============================================================================ box lifting


def _box_lift_plan(weights: list[int], caps: list[int]) -> list[list[list]]:
    left = sorted(range(len(weights)), key=lambda i: -weights[i])
    steps = []
    while left:
        free = sorted(range(len(caps)), key=lambda j: -caps[j])
        step, rest = [], []
        for b in left:
            team, total = [], 0
            for j in list(free):
                if total >= weights[b]:
                    break
                team.append(j)
                total += caps[j]
            if total >= weights[b]:
                step.append([b, sorted(team)])
                free = [j for j in free if j not in team]
            else:
                rest.append(b)
        steps.append(step)
        left = rest
    return steps


def _box_lift_check(ans: str, d: dict) -> bool:
    steps = literal(ans)
    w, caps = d["weights"], d["capacities"]
    if not isinstance(steps, (list, tuple)) or len(steps) > d["max_steps"]:
        return False
    lifted: set[int] = set()
    for step in steps:
        used: set[int] = set()
        for box, team in step:
            if not (0 <= box < len(w)) or box in lifted:
                return False
            team = list(team)
            if len(set(team)) != len(team) or any(not (0 <= j < len(caps)) or j in used for j in team):
                return False
            if sum(caps[j] for j in team) < w[box]:
                return False
            used.update(team)
            lifted.add(box)
    return lifted == set(range(len(w)))


def _box_lift_perturb(ref: str, d: dict, rng: random.Random) -> str:
    steps = literal(ref)
    steps[-1] = steps[-1][:-1]  # one box never lifted
    return repr(steps)


def _box_lift_solver(d: dict) -> str:
    return f"""weights = {d['weights']}
caps = {d['capacities']}
left = sorted(range(len(weights)), key=lambda i: -weights[i])
steps = []
while left:
    free = sorted(range(len(caps)), key=lambda j: -caps[j])
    step, rest = [], []
    for b in left:
        team, total = [], 0
        for j in list(free):
            if total >= weights[b]:
                break
            team.append(j); total += caps[j]
        if total >= weights[b]:
            step.append([b, sorted(team)]); free = [j for j in free if j not in team]
        else:
            rest.append(b)
    steps.append(step); left = rest
print(steps)
"""


@spec("sym/box_lift", "SymBench: BoxLift", "lift every box with teams of lifters within a step limit",
      check=_box_lift_check, perturb=_box_lift_perturb, solver=_box_lift_solver)
def box_lift(rng: random.Random) -> Instance:
    caps = sorted(_ints(rng, rng.randint(3, 5), 20, 80), reverse=True)
    weights = _ints(rng, rng.randint(4, 8), 10, min(sum(caps), 200))
    plan = _box_lift_plan(weights, caps)
    q = (f"Boxes have weights {weights} (box i is the i-th, counting from 0). Lifters have capacities {caps} "
         f"(lifter j is the j-th, counting from 0). In one step each lifter helps lift at most one box; several "
         f"lifters may lift one box together if their capacities add up to at least its weight. Lift every box "
         f"in at most {len(plan)} steps. Answer with a Python list of steps; each step is a list of "
         f"[box, [lifters]] pairs, e.g. [[[0, [1, 2]], [3, [0]]], [[1, [0]]]].")
    return Instance(q, repr(plan), {"weights": weights, "capacities": caps, "max_steps": len(plan)})


# ============================================================================ blocksworld


def _bw_moves(state: tuple) -> list[tuple[str, int, int, tuple]]:
    out = []
    for s, stack in enumerate(state):
        if not stack:
            continue
        for t in range(len(state)):
            if t != s:
                new = [list(x) for x in state]
                blk = new[s].pop()
                new[t].append(blk)
                out.append((blk, s, t, tuple(tuple(x) for x in new)))
    return out


def _bw_solve(start: tuple, goal: tuple) -> list[tuple[str, int, int]]:
    prev: dict[tuple, Any] = {start: None}
    q = deque([start])
    while q:
        s = q.popleft()
        if s == goal:
            break
        for blk, a, b, t in _bw_moves(s):
            if t not in prev:
                prev[t] = (s, (blk, a, b))
                q.append(t)
    path = []
    s = goal
    while prev[s] is not None:
        s, mv = prev[s]
        path.append(mv)
    return path[::-1]


def _bw_random(rng: random.Random, blocks: list[str], stacks: int) -> tuple:
    st: list[list[str]] = [[] for _ in range(stacks)]
    for b in rng.sample(blocks, len(blocks)):
        st[rng.randrange(stacks)].append(b)
    return tuple(tuple(x) for x in st)


_MOVE = re.compile(r"move\s+([A-Z])\s+from\s+(?:stack\s*)?(\d+)\s+to\s+(?:stack\s*)?(\d+)", re.I)


def _bw_check(ans: str, d: dict) -> bool:
    state = [list(x) for x in d["initial"]]
    moves = _MOVE.findall(ans)
    if not moves or len(moves) > d["max_moves"]:
        return False
    for blk, a, b in moves:
        a, b = int(a) - 1, int(b) - 1
        if not (0 <= a < len(state) and 0 <= b < len(state)) or not state[a] or state[a][-1] != blk.upper():
            return False
        state[b].append(state[a].pop())
    return state == [list(x) for x in d["goal"]]


def _bw_fmt(state) -> str:
    return "\n".join(f"Stack {i + 1}: {' '.join(s) if s else '(empty)'}" for i, s in enumerate(state))


@spec("sym/blocksworld", "SymBench: Blocksworld", "move blocks between stacks to reach a goal arrangement",
      check=_bw_check, perturb=lambda ref, d, rng: "\n".join(ref.splitlines()[:-1]))
def blocksworld(rng: random.Random) -> Instance:
    blocks = list(LETTERS[: rng.randint(3, 4)])
    start = _bw_random(rng, blocks, 3)
    goal = start
    while goal == start:
        goal = _bw_random(rng, blocks, 3)
    plan = _bw_solve(start, goal)
    limit = 2 * len(plan) + 2
    q = (f"Blocks sit in 3 stacks (listed bottom to top).\nInitial state:\n{_bw_fmt(start)}\nGoal state:\n"
         f"{_bw_fmt(goal)}\nOnly the top block of a stack can move. Give a plan of at most {limit} moves, one "
         f"per line, each written as 'Move X from S to T' (S and T are stack numbers).")
    ref = "\n".join(f"Move {b} from {a + 1} to {t + 1}" for b, a, t in plan)
    return Instance(q, ref, {"initial": [list(x) for x in start], "goal": [list(x) for x in goal], "max_moves": limit})


# ============================================================================ eight queens

_QUEENS: list[list[int]] = []


def _all_queens() -> list[list[int]]:
    if not _QUEENS:
        def rec(cols: list[int]):
            r = len(cols)
            if r == 8:
                _QUEENS.append(cols[:])
                return
            for c in range(8):
                if all(c != cc and abs(c - cc) != r - rr for rr, cc in enumerate(cols)):
                    rec(cols + [c])
        rec([])
    return _QUEENS


def _queens_check(ans: str, d: dict) -> bool:
    pos = [tuple(p) for p in literal(ans)]
    if len(pos) != 8 or len(set(pos)) != 8 or any(not (0 <= r < 8 and 0 <= c < 8) for r, c in pos):
        return False
    for (r1, c1), (r2, c2) in itertools.combinations(pos, 2):
        if r1 == r2 or c1 == c2 or abs(r1 - r2) == abs(c1 - c2):
            return False
    return all(tuple(g) in pos for g in d["given"])


def _queens_perturb(ref: str, d: dict, rng: random.Random) -> str:
    pos = [list(p) for p in literal(ref)]
    free = [p for p in pos if p not in d["given"]]
    a = free[0]
    other = next(p for p in pos if p is not a)
    a[1] = other[1]  # same column as another queen
    return repr(pos)


@spec("sym/eight_queens", "SymBench: Eight Queens", "complete an 8x8 board with 8 non-attacking queens",
      check=_queens_check, perturb=_queens_perturb)
def eight_queens(rng: random.Random) -> Instance:
    sol = rng.choice(_all_queens())
    rows = sorted(rng.sample(range(8), rng.randint(1, 3)))
    given = [[r, sol[r]] for r in rows]
    board = [["Q" if [r, c] in given else "." for c in range(8)] for r in range(8)]
    q = ("Place 8 queens on this 8x8 board so that no two attack each other (same row, column or diagonal). "
         "Queens already placed (Q) must stay.\n" + "\n".join("".join(r) for r in board) +
         "\nAnswer with a Python list of the 8 queens' [row, column] positions, rows and columns counted from 0.")
    return Instance(q, repr([[r, sol[r]] for r in range(8)]), {"given": given})


# ============================================================================ cryptanalysis


def _feedback(secret: tuple, guess: tuple) -> tuple[int, int]:
    exact = sum(a == b for a, b in zip(secret, guess))
    return exact, len(set(secret) & set(guess)) - exact


@spec("sym/cryptanalysis", "SymBench: Cryptanalysis (simplified: a 3-digit code)", "deduce a 3-digit code from guesses and feedback", check=_digits_check)
def cryptanalysis(rng: random.Random) -> Instance:
    while True:
        secret = tuple(rng.sample(range(10), 3))
        cands = list(itertools.permutations(range(10), 3))
        guesses = []
        while len(cands) > 1 and len(guesses) < 12:
            g = tuple(rng.sample(range(10), 3))
            if g == secret:
                continue
            fb = _feedback(secret, g)
            guesses.append((g, fb))
            cands = [c for c in cands if _feedback(c, g) == fb]
        if len(cands) == 1:
            break
    lines = [f"Guess {''.join(map(str, g))}: {a} digit(s) correct and in the right place, {b} digit(s) correct "
             f"but in the wrong place." for g, (a, b) in guesses]
    q = ("A 3-digit code uses three different digits. Feedback on some guesses:\n" + "\n".join(lines) +
         "\nWhat is the code? Answer with its three digits, e.g. 123.")
    ans = "".join(map(str, secret))
    return Instance(q, ans, {"answer": ans, "guesses": [[list(g), list(fb)] for g, fb in guesses]})


# ============================================================================ permutations


_NAMES = ["Ann", "Ben", "Cal", "Dee", "Eve", "Fay", "Gus"]


def _perm_ok(order: tuple, cons: list) -> bool:
    pos = {p: i for i, p in enumerate(order)}
    n = len(order)
    for kind, a, b in cons:
        if kind == "left" and not pos[a] < pos[b]:
            return False
        if kind == "adjacent" and abs(pos[a] - pos[b]) != 1:
            return False
        if kind == "not_end" and pos[a] in (0, n - 1):
            return False
        if kind == "apart" and abs(pos[a] - pos[b]) == 1:
            return False
    return True


def _perm_solver(d: dict) -> str:
    return f"""import itertools
people = {d['people']}
cons = {d['constraints']}
def ok(order):
    pos = {{p: i for i, p in enumerate(order)}}
    n = len(order)
    for kind, a, b in cons:
        if kind == 'left' and not pos[a] < pos[b]: return False
        if kind == 'adjacent' and abs(pos[a] - pos[b]) != 1: return False
        if kind == 'not_end' and pos[a] in (0, n - 1): return False
        if kind == 'apart' and abs(pos[a] - pos[b]) == 1: return False
    return True
print(sum(ok(o) for o in itertools.permutations(people)))
"""


@spec("sym/permutations_combinations", "SymBench: Permutations and Combinations",
      "count the line-ups that satisfy constraints", solver=_perm_solver, check=_int_check)
def permutations_combinations(rng: random.Random) -> Instance:
    people = _NAMES[: rng.randint(4, 6)]
    cons, text = [], []
    for _ in range(rng.randint(2, 3)):
        kind = rng.choice(["left", "adjacent", "not_end", "apart"])
        a, b = rng.sample(people, 2)
        cons.append([kind, a, b])
        text.append({"left": f"{a} stands somewhere to the left of {b}.", "adjacent": f"{a} and {b} stand next to each other.",
                     "not_end": f"{a} does not stand at either end.", "apart": f"{a} and {b} do not stand next to each other."}[kind])
    count = sum(_perm_ok(o, cons) for o in itertools.permutations(people))
    q = (f"{', '.join(people)} stand in a row. " + " ".join(text) +
         " How many different orders are possible? Answer with a number.")
    return Instance(q, str(count), {"answer": str(count), "people": people, "constraints": cons})


# ============================================================================ 2048


def _slide_row_left(row: list[int]) -> list[int]:
    tiles = [x for x in row if x]
    out, i = [], 0
    while i < len(tiles):
        if i + 1 < len(tiles) and tiles[i] == tiles[i + 1]:
            out.append(2 * tiles[i])
            i += 2
        else:
            out.append(tiles[i])
            i += 1
    return out + [0] * (len(row) - len(out))


def _move_2048(g: list[list[int]], mv: str) -> list[list[int]]:
    if mv == "left":
        return [_slide_row_left(r) for r in g]
    if mv == "right":
        return [_slide_row_left(r[::-1])[::-1] for r in g]
    t = [list(c) for c in zip(*g)]
    t = _move_2048(t, "left" if mv == "up" else "right")
    return [list(r) for r in zip(*t)]


_2048_SOLVER = """grid = {grid}
moves = {moves}
def left(row):
    t = [x for x in row if x]; out = []; i = 0
    while i < len(t):
        if i + 1 < len(t) and t[i] == t[i + 1]:
            out.append(2 * t[i]); i += 2
        else:
            out.append(t[i]); i += 1
    return out + [0] * (len(row) - len(out))
def move(g, m):
    if m == 'left': return [left(r) for r in g]
    if m == 'right': return [left(r[::-1])[::-1] for r in g]
    t = [list(c) for c in zip(*g)]
    t = move(t, 'left' if m == 'up' else 'right')
    return [list(r) for r in zip(*t)]
for m in moves:
    grid = move(grid, m)
print(grid)
"""


@spec("sym/game_2048", "SymBench: 2048 (whole-grid moves, no new tiles)", "apply 2048 moves (no new tiles) and give the final grid",
      check=_grid_check, solver=lambda d: _2048_SOLVER.format(grid=d["grid"], moves=d["moves"]))
def game_2048(rng: random.Random) -> Instance:
    n = 4
    g = [[rng.choice([0, 0, 2, 2, 4, 8]) for _ in range(n)] for _ in range(n)]
    moves = [rng.choice(["left", "right", "up", "down"]) for _ in range(rng.randint(1, 3))]
    cur = g
    for mv in moves:
        cur = _move_2048(cur, mv)
    q = ("In the game 2048, a move slides every tile as far as possible in that direction; two equal tiles that "
         "meet merge into one with their sum (a tile merges at most once per move). No new tiles appear here.\n"
         f"Grid (0 = empty): {g}\nMoves: {', '.join(moves)}\nAnswer with the final grid as a Python list of rows.")
    return Instance(q, repr(cur), {"grid": g, "moves": moves, "answer_grid": cur})


# ============================================================================ light puzzle

_LIGHT_SOLVER = """n = {n}
buttons = {buttons}
presses = {presses}
grid = [[0] * n for _ in range(n)]
for b in presses:
    for r, c in buttons[b]:
        grid[r][c] ^= 1
print(grid)
"""


@spec("sym/light_puzzle", "SymBench: Light Puzzles", "press buttons that toggle lights; give the final grid",
      check=_grid_check, solver=lambda d: _LIGHT_SOLVER.format(**{k: d[k] for k in ("n", "buttons", "presses")}))
def light_puzzle(rng: random.Random) -> Instance:
    n = rng.randint(3, 4)
    names = list("ABC")[: rng.randint(2, 3)]
    buttons = {b: sorted({(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(2, 5))}) for b in names}
    presses = [rng.choice(names) for _ in range(rng.randint(2, 5))]
    grid = [[0] * n for _ in range(n)]
    for b in presses:
        for r, c in buttons[b]:
            grid[r][c] ^= 1
    desc = "\n".join(f"Button {b} toggles the lights at (row, column): {[list(p) for p in cells]}" for b, cells in buttons.items())
    q = (f"A {n}x{n} grid of lights starts all off (0). Pressing a button toggles (0 <-> 1) each light it controls; "
         f"rows and columns are counted from 0.\n{desc}\nThe buttons are pressed in this order: {', '.join(presses)}.\n"
         "Answer with the final grid as a Python list of rows of 0s and 1s.")
    return Instance(q, repr(grid), {"n": n, "buttons": {b: [list(p) for p in c] for b, c in buttons.items()},
                                    "presses": presses, "answer_grid": grid})


# ============================================================================ string deletion

_DEL_RULES = [
    ("If the string contains 'ca', delete the first 'ca'.", "ca", ""),
    ("If the string contains 'abc', replace the first 'abc' with 'b'.", "abc", "b"),
    ("If the string contains 'cc', replace the first 'cc' with 'c'.", "cc", "c"),
    ("If the string contains 'bab', replace the first 'bab' with 'a'.", "bab", "a"),
    ("If the string contains 'aa', replace the first 'aa' with 'b'.", "aa", "b"),
    ("If the string contains 'bcb', delete the first 'bcb'.", "bcb", ""),
]


def _apply_rules(s: str, rules: list[int]) -> str:
    while True:
        for i in rules:
            _, pat, rep = _DEL_RULES[i]
            if pat in s:
                s = s.replace(pat, rep, 1)
                break
        else:
            return s


@spec("sym/string_deletion", "SymBench: String Deletion and Modification",
      "apply shrinking rewrite rules until none applies",
      solver=lambda d: (f"s = {d['start']!r}\nrules = {[[_DEL_RULES[i][1], _DEL_RULES[i][2]] for i in d['rules']]!r}\n"
                        "while True:\n    for pat, rep in rules:\n        if pat in s:\n            s = s.replace(pat, rep, 1)\n"
                        "            break\n    else:\n        break\nprint(s)\n"))
def string_deletion(rng: random.Random) -> Instance:
    while True:
        rules = rng.sample(range(len(_DEL_RULES)), 4)
        start = "".join(rng.choice("abc") for _ in range(rng.randint(8, 16)))
        end = _apply_rules(start, rules)
        if end and end != start:
            break
    text = "\n".join(f"{k + 1}. {_DEL_RULES[i][0]}" for k, i in enumerate(rules))
    q = (f"Start from the string '{start}'. Repeatedly apply the first rule (in this order) that applies, then start "
         f"again from rule 1; stop when no rule applies.\n{text}\nWhat is the final string? Answer with the string only.")
    return Instance(q, end, {"answer": end, "start": start, "rules": rules})


# ============================================================================ number multiplication


@spec("sym/number_multiplication", "SymBench: Number Multiply", "multiply large integers exactly",
      solver=lambda d: f"print({' * '.join(map(str, d['factors']))})\n", check=_int_check)
def number_multiplication(rng: random.Random) -> Instance:
    k = rng.randint(2, 3)
    fs = [rng.randint(10 ** (rng.randint(2, 4)), 10 ** 5 - 1) * rng.choice([1, 1, 1, -1]) for _ in range(k)]
    prod = 1
    for f in fs:
        prod *= f
    q = f"Compute {' * '.join(f'({f})' if f < 0 else str(f) for f in fs)} exactly. Answer with the integer."
    return Instance(q, str(prod), {"answer": str(prod), "factors": fs})


# ============================================================================ letters


def _letters_check(ans: str, d: dict) -> bool:
    v = literal(ans)
    return isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == d["count"] and list(v[1]) == d["positions"]


def _letters_solver(d: dict) -> str:
    return (f"word = {d['word']!r}\nch = {d['letter']!r}\npos = [i + 1 for i, c in enumerate(word) if c == ch]\n"
            "print([len(pos), pos])\n")


@spec("sym/letters", "SymBench: Letters", "count a letter in a word and list its positions",
      check=_letters_check, solver=_letters_solver)
def letters(rng: random.Random) -> Instance:
    syl = ["ra", "be", "ter", "ston", "mil", "ar", "rel", "pe", "rry", "sa", "lo", "ne", "ssi", "ppi", "ta"]
    word = "".join(rng.choice(syl) for _ in range(rng.randint(3, 6)))
    letter = rng.choice(sorted(set(word)))
    pos = [i + 1 for i, c in enumerate(word) if c == letter]
    q = (f"How many times does the letter '{letter}' occur in the word '{word}', and at which positions (counting "
         f"from 1)? Answer as a Python list [count, [positions]], e.g. [2, [3, 7]].")
    return Instance(q, repr([len(pos), pos]), {"word": word, "letter": letter, "count": len(pos), "positions": pos})


# ============================================================================ new operator


@spec("sym/new_operator", "SymBench: New Operator", "evaluate an expression with newly defined operators",
      solver=lambda d: (f"def op1(a, b):\n    return {d['c1'][0]} * a + {d['c1'][1]} * b\n"
                        f"def op2(a, b):\n    return a * b - {d['c2']} * (a + b)\n"
                        f"print({d['expr_code']})\n"), check=_int_check)
def new_operator(rng: random.Random) -> Instance:
    p, qq = rng.randint(1, 5), rng.randint(1, 5)
    k = rng.randint(1, 4)
    x, y, z = _ints(rng, 3, 1, 12)

    def op1(a, b):
        return p * a + qq * b

    def op2(a, b):
        return a * b - k * (a + b)

    if rng.random() < 0.5:
        expr, code, val = f"({x} # {y}) @ {z}", f"op2(op1({x}, {y}), {z})", op2(op1(x, y), z)
    else:
        expr, code, val = f"{x} # ({y} @ {z})", f"op1({x}, op2({y}, {z}))", op1(x, op2(y, z))
    q = (f"Define a # b = {p}*a + {qq}*b and a @ b = a*b - {k}*(a + b). Compute {expr}. Answer with the integer.")
    return Instance(q, str(val), {"answer": str(val), "c1": [p, qq], "c2": k, "expr_code": code})


# ============================================================================ matrix transformation

_MT_OPS = {
    "rotate 90 degrees clockwise": lambda m: [list(r) for r in zip(*m[::-1])],
    "flip left-right": lambda m: [r[::-1] for r in m],
    "flip upside-down": lambda m: m[::-1],
    "transpose": lambda m: [list(r) for r in zip(*m)],
}
_MT_CODE = {
    "rotate 90 degrees clockwise": "m = [list(r) for r in zip(*m[::-1])]",
    "flip left-right": "m = [r[::-1] for r in m]",
    "flip upside-down": "m = m[::-1]",
    "transpose": "m = [list(r) for r in zip(*m)]",
}


@spec("sym/matrix_transformation", "SymBench: Matrix Transformation", "apply a chain of rotations and flips",
      check=_grid_check, solver=lambda d: f"m = {d['matrix']!r}\n" + "\n".join(_MT_CODE[o] for o in d["ops"]) + "\nprint(m)\n")
def matrix_transformation(rng: random.Random) -> Instance:
    r, c = rng.randint(2, 4), rng.randint(2, 4)
    m = [[rng.choice(LETTERS[:8]) for _ in range(c)] for _ in range(r)]
    ops = [rng.choice(list(_MT_OPS)) for _ in range(rng.randint(1, 3))]
    cur = m
    for o in ops:
        cur = _MT_OPS[o](cur)
    q = (f"Matrix (list of rows): {m}\nApply, in order: {'; then '.join(ops)}.\n"
         "Answer with the resulting matrix as a Python list of rows.")
    return Instance(q, repr(cur), {"matrix": m, "ops": ops, "answer_grid": cur})


# ============================================================================ logical equation


def _leq_holds(v: list[int], c: list) -> bool:
    kind, i, j, k = c
    return {"sum": v[i] + v[j] == k, "diff": v[i] - v[j] == k, "mul": v[i] == k * v[j], "gt": v[i] > v[j]}[kind]


def _leq_check(ans: str, d: dict) -> bool:
    v = [int(x) for x in literal(ans)]
    return (len(v) == d["n"] and len(set(v)) == len(v) and all(x in d["values"] for x in v)
            and all(_leq_holds(v, c) for c in d["constraints"]))


def _leq_text(c: list) -> str:
    kind, i, j, k = c
    a, b = LETTERS[i], LETTERS[j]
    return {"sum": f"{a} + {b} = {k}", "diff": f"{a} - {b} = {k}", "mul": f"{a} = {k} * {b}", "gt": f"{a} > {b}"}[kind]


def _leq_solver(d: dict) -> str:
    return f"""import itertools
values = {d['values']}
cons = {d['constraints']}
def holds(v, c):
    kind, i, j, k = c
    return {{'sum': v[i] + v[j] == k, 'diff': v[i] - v[j] == k, 'mul': v[i] == k * v[j], 'gt': v[i] > v[j]}}[kind]
for v in itertools.permutations(values, {d['n']}):
    if all(holds(v, c) for c in cons):
        print(list(v))
"""


def _leq_perturb(ref: str, d: dict, rng: random.Random) -> str:
    v = literal(ref)
    v[0], v[1] = v[1], v[0]
    return repr(v)


@spec("sym/logical_equation", "SymBench: Logical Equation", "assign distinct numbers to letters satisfying equations",
      check=_leq_check, perturb=_leq_perturb, solver=_leq_solver)
def logical_equation(rng: random.Random) -> Instance:
    n = rng.randint(4, 5)
    values = sorted(rng.sample(range(1, 40), n + 2))
    sol = rng.sample(values, n)
    cons: list[list] = []
    cands = list(itertools.permutations(values, n))
    while len(cands) > 1:
        i, j = rng.sample(range(n), 2)
        kind = rng.choice(["sum", "diff", "mul", "gt", "sum"])
        if kind == "mul":
            if sol[j] == 0 or sol[i] % sol[j]:
                continue
            c = [kind, i, j, sol[i] // sol[j]]
        elif kind == "sum":
            c = [kind, i, j, sol[i] + sol[j]]
        elif kind == "diff":
            c = [kind, i, j, sol[i] - sol[j]]
        else:
            c = [kind, i, j, 0] if sol[i] > sol[j] else [kind, j, i, 0]
        new = [v for v in cands if _leq_holds(list(v), c)]
        if len(new) < len(cands):
            cons.append(c)
            cands = new
    names = ", ".join(LETTERS[:n])
    q = (f"The letters {names} stand for {n} different numbers taken from {values}. They satisfy:\n" +
         "\n".join(_leq_text(c) for c in cons) +
         f"\nAnswer with the values of {names}, in that order, as a Python list.")
    return Instance(q, repr(sol), {"n": n, "values": values, "constraints": cons})


# ============================================================================ statistical counting


def _stat_score(s: str) -> int:
    score = 0
    for m in re.finditer(r"(.)\1{2,}", s):
        score += 3
    score -= s.count("AB")
    score += s.count("C")
    return score


@spec("sym/statistical_counting", "SymBench: Statistical Counting", "score a letter string by counting rules",
      solver=lambda d: (f"import re\ns = {d['s']!r}\nscore = 3 * len(re.findall(r'(.)\\1{{2,}}', s))\n"
                        "score -= s.count('AB')\nscore += s.count('C')\nprint(score)\n"), check=_int_check)
def statistical_counting(rng: random.Random) -> Instance:
    s = "".join(rng.choice("AABBC") for _ in range(rng.randint(12, 24)))
    v = _stat_score(s)
    q = (f"Score the string '{s}': +3 for every maximal run of three or more identical letters, -1 for every "
         "occurrence of 'AB', +1 for every 'C'. What is the total score? Answer with the integer.")
    return Instance(q, str(v), {"answer": str(v), "s": s})


# ============================================================================ linear arrangement

_FRUITS = ["apple", "banana", "cherry", "grape", "kiwi", "lemon"]


def _arr_holds(order: list[str], c: list) -> bool:
    kind, a, b = c
    pos = {x: i for i, x in enumerate(order)}
    if kind == "imm_left":
        return pos[a] + 1 == pos[b]
    if kind == "left":
        return pos[a] < pos[b]
    if kind == "at":
        return pos[a] == b
    return pos[a] != b  # not_at


def _arr_text(c: list) -> str:
    kind, a, b = c
    if kind == "imm_left":
        return f"The {a} is immediately to the left of the {b}."
    if kind == "left":
        return f"The {a} is somewhere to the left of the {b}."
    return f"The {a} is {'' if kind == 'at' else 'not '}in position {b + 1}."


def _arr_check(ans: str, d: dict) -> bool:
    order = [str(x).strip().lower() for x in literal(ans)]
    return sorted(order) == sorted(d["items"]) and all(_arr_holds(order, c) for c in d["constraints"])


def _arr_perturb(ref: str, d: dict, rng: random.Random) -> str:
    v = literal(ref)
    v[0], v[-1] = v[-1], v[0]
    return repr(v)


@spec("sym/linear_arrangement", "SymBench: Constrained Linear Arrangement", "order items from positional clues",
      check=_arr_check, perturb=_arr_perturb)
def linear_arrangement(rng: random.Random) -> Instance:
    items = rng.sample(_FRUITS, rng.randint(4, 5))
    sol = items[:]
    rng.shuffle(sol)
    cands = [list(p) for p in itertools.permutations(items)]
    cons: list[list] = []
    while len(cands) > 1:
        kind = rng.choice(["imm_left", "left", "at", "not_at", "left"])
        a, b = rng.sample(sol, 2)
        if kind in ("imm_left", "left"):
            if sol.index(a) > sol.index(b):
                a, b = b, a
            if kind == "imm_left" and sol.index(a) + 1 != sol.index(b):
                kind = "left"
            c = [kind, a, b]
        elif kind == "at":
            c = [kind, a, sol.index(a)]
        else:
            c = [kind, a, rng.choice([i for i in range(len(sol)) if i != sol.index(a)])]
        new = [p for p in cands if _arr_holds(p, c)]
        if len(new) < len(cands):
            cons.append(c)
            cands = new
    q = (f"Put these fruits in a row of positions 1 to {len(items)}: {', '.join(sorted(items))}.\n" +
         "\n".join(_arr_text(c) for c in cons) + "\nAnswer with the fruits from left to right as a Python list of strings.")
    return Instance(q, repr(sol), {"items": sorted(items), "constraints": cons})


# ============================================================================ synthesis / decomposition

_SYN_RULES = [
    ({"A": 3}, {"B": 1}), ({"B": 2, "A": 1}, {"C": 1}), ({"C": 2}, {"D": 1}),
    ({"A": 1, "D": 1}, {"B": 1}), ({"B": 3}, {"C": 2}), ({"A": 2, "C": 1}, {"D": 1}),
]


def _syn_run(state: dict[str, int], rules: list[int]) -> dict[str, int]:
    state = dict(state)
    while True:
        for i in rules:
            need, give = _SYN_RULES[i]
            if all(state[k] >= v for k, v in need.items()):
                for k, v in need.items():
                    state[k] -= v
                for k, v in give.items():
                    state[k] += v
                break
        else:
            return state


def _syn_text(i: int) -> str:
    need, give = _SYN_RULES[i]
    f = lambda d: " + ".join(f"{v} {k}" for k, v in d.items())  # noqa: E731
    return f"{f(need)} -> {f(give)}"


@spec("sym/synthesis_decomposition", "SymBench: Synthesis Decomposition", "apply combination rules until none applies",
      solver=lambda d: (f"state = {d['start']!r}\nrules = {[_SYN_RULES[i] for i in d['rules']]!r}\nwhile True:\n"
                        "    for need, give in rules:\n        if all(state[k] >= v for k, v in need.items()):\n"
                        "            for k, v in need.items(): state[k] -= v\n"
                        "            for k, v in give.items(): state[k] += v\n            break\n    else:\n        break\n"
                        "print([state[k] for k in 'ABCD'])\n"), check=_list_check)
def synthesis_decomposition(rng: random.Random) -> Instance:
    rules = rng.sample(range(len(_SYN_RULES)), 4)
    start = {"A": rng.randint(3, 15), "B": rng.randint(0, 6), "C": rng.randint(0, 4), "D": 0}
    end = _syn_run(start, rules)
    ans = repr([end[k] for k in "ABCD"])
    q = (f"You hold {start['A']} A, {start['B']} B, {start['C']} C and {start['D']} D. Rules:\n" +
         "\n".join(f"{k + 1}. {_syn_text(i)}" for k, i in enumerate(rules)) +
         "\nRepeatedly apply the first rule (in this order) whose inputs you hold, then start again from rule 1; "
         "stop when no rule applies. How many A, B, C and D do you hold at the end? Answer as a Python list [A, B, C, D].")
    return Instance(q, ans, {"answer": ans, "start": start, "rules": rules})


# ============================================================================ latin square


def _latin_check(ans: str, d: dict) -> bool:
    g = [list(map(int, r)) for r in literal(ans)]
    n = d["n"]
    if len(g) != n or any(len(r) != n for r in g):
        return False
    full = set(range(1, n + 1))
    if any(set(r) != full for r in g) or any(set(c) != full for c in zip(*g)):
        return False
    return all(v == 0 or g[i][j] == v for i, r in enumerate(d["puzzle"]) for j, v in enumerate(r))


def _latin_perturb(ref: str, d: dict, rng: random.Random) -> str:
    g = literal(ref)
    g[0][0], g[0][1] = g[0][1], g[0][0]
    return repr(g)


@spec("sym/latin_square", "SymBench: Letter Logic Diagram (simplified: digits, no diagonal rule)", "complete a Latin square",
      check=_latin_check, perturb=_latin_perturb)
def latin_square(rng: random.Random) -> Instance:
    n = rng.randint(4, 5)
    sym = rng.sample(range(1, n + 1), n)
    rows, cols = rng.sample(range(n), n), rng.sample(range(n), n)
    g = [[sym[(rows[i] + cols[j]) % n] for j in range(n)] for i in range(n)]
    puzzle = [r[:] for r in g]
    for i, j in rng.sample([(i, j) for i in range(n) for j in range(n)], rng.randint(n, 2 * n)):
        puzzle[i][j] = 0
    q = (f"Fill the 0s so that every row and every column of this {n}x{n} grid contains each of 1..{n} exactly once:\n" +
         "\n".join(" ".join(map(str, r)) for r in puzzle) + "\nAnswer with the full grid as a Python list of rows.")
    return Instance(q, repr(g), {"n": n, "puzzle": puzzle})


# ============================================================================ grid route

_DIRS = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}


def _route_bfs(grid: list[str]) -> str | None:
    n, m = len(grid), len(grid[0])
    start = next((i, j) for i in range(n) for j in range(m) if grid[i][j] == "S")
    prev = {start: None}
    q = deque([start])
    while q:
        p = q.popleft()
        if grid[p[0]][p[1]] == "G":
            path = ""
            while prev[p] is not None:
                p, d = prev[p]
                path = d + path
            return path
        for d, (di, dj) in _DIRS.items():
            t = (p[0] + di, p[1] + dj)
            if 0 <= t[0] < n and 0 <= t[1] < m and grid[t[0]][t[1]] != "#" and t not in prev:
                prev[t] = (p, d)
                q.append(t)
    return None


def _route_check(ans: str, d: dict) -> bool:
    moves = re.sub(r"[\s,\[\]'\"]", "", ans).upper()
    grid = d["grid"]
    i, j = next((i, j) for i in range(len(grid)) for j in range(len(grid[0])) if grid[i][j] == "S")
    if len(moves) != d["shortest"] or any(c not in _DIRS for c in moves):
        return False
    for c in moves:
        i, j = i + _DIRS[c][0], j + _DIRS[c][1]
        if not (0 <= i < len(grid) and 0 <= j < len(grid[0])) or grid[i][j] == "#":
            return False
    return grid[i][j] == "G"


@spec("sym/grid_route", "SymBench: Path Plan (one agent, shortest route)", "find a shortest route on a grid with walls",
      check=_route_check, perturb=lambda ref, d, rng: ref + "UD")
def grid_route(rng: random.Random) -> Instance:
    while True:
        n = rng.randint(4, 6)
        cells = [["#" if rng.random() < 0.3 else "." for _ in range(n)] for _ in range(n)]
        (a, b), (c, e) = rng.sample([(i, j) for i in range(n) for j in range(n)], 2)
        cells[a][b], cells[c][e] = "S", "G"
        grid = ["".join(r) for r in cells]
        path = _route_bfs(grid)
        if path and len(path) >= 3:
            break
    q = ("Grid ('.' free, '#' wall, S start, G goal):\n" + "\n".join(grid) +
         "\nGive a shortest route from S to G as a string of moves U, D, L, R (e.g. RRDL).")
    return Instance(q, path, {"grid": grid, "shortest": len(path)})


# ============================================================================ knapsack


def _knap_best(w: list[int], v: list[int], cap: int) -> int:
    best = [0] * (cap + 1)
    for wi, vi in zip(w, v):
        for c in range(cap, wi - 1, -1):
            best[c] = max(best[c], best[c - wi] + vi)
    return best[cap]


def _knap_check(ans: str, d: dict) -> bool:
    idx = [int(x) for x in literal(ans)]
    w, v = d["weights"], d["values"]
    if len(set(idx)) != len(idx) or any(not (0 <= i < len(w)) for i in idx):
        return False
    return sum(w[i] for i in idx) <= d["capacity"] and sum(v[i] for i in idx) == d["best"]


def _knap_solver(d: dict) -> str:
    return f"""import itertools
w = {d['weights']}; v = {d['values']}; cap = {d['capacity']}
best = max((sum(v[i] for i in s), list(s)) for r in range(len(w) + 1) for s in itertools.combinations(range(len(w)), r)
           if sum(w[i] for i in s) <= cap)
print(best[1])
"""


@spec("sym/knapsack", "SymBench-style (combinatorial optimisation; no single original)",
      "choose items of maximum value within a weight limit", check=_knap_check,
      perturb=lambda ref, d, rng: repr(literal(ref)[:-1]), solver=_knap_solver)
def knapsack(rng: random.Random) -> Instance:
    k = rng.randint(4, 7)
    w, v = _ints(rng, k, 1, 15), _ints(rng, k, 1, 30)
    cap = max(1, sum(w) // 2)
    best_val, best = max((sum(v[i] for i in s), list(s)) for r in range(1, k + 1)
                         for s in itertools.combinations(range(k), r) if sum(w[i] for i in s) <= cap) \
        if min(w) <= cap else (0, [])
    if not best:
        return knapsack(rng)
    items = "\n".join(f"item {i}: weight {w[i]}, value {v[i]}" for i in range(k))
    q = (f"{items}\nChoose items with total weight at most {cap} and the largest possible total value. "
         "Answer with a Python list of the chosen item numbers.")
    return Instance(q, repr(best), {"weights": w, "values": v, "capacity": cap, "best": best_val})


# ============================================================================ scheduling


@spec("sym/scheduling", "SymBench-style (planning; no single original)",
      "shortest finishing time of jobs with prerequisites and unlimited workers",
      solver=lambda d: (f"dur = {d['durations']!r}\npre = {d['prereqs']!r}\nfinish = {{}}\n"
                        "def f(j):\n    if j not in finish:\n        finish[j] = dur[j] + max([f(p) for p in pre[j]], default=0)\n"
                        "    return finish[j]\nprint(max(f(j) for j in dur))\n"), check=_int_check)
def scheduling(rng: random.Random) -> Instance:
    k = rng.randint(4, 7)
    names = list(LETTERS[:k])
    dur = {j: rng.randint(1, 9) for j in names}
    pre = {j: sorted(rng.sample(names[:i], rng.randint(0, min(2, i)))) for i, j in enumerate(names)}
    finish: dict[str, int] = {}
    for j in names:
        finish[j] = dur[j] + max((finish[p] for p in pre[j]), default=0)
    total = max(finish.values())
    lines = [f"Job {j} takes {dur[j]} hours" + (f" and can start only after {' and '.join(pre[j])} finish." if pre[j] else ".")
             for j in names]
    q = ("\n".join(lines) + "\nAny number of jobs can run at the same time. What is the shortest time, in hours, "
         "to finish every job? Answer with the integer.")
    return Instance(q, str(total), {"answer": str(total), "durations": dur, "prereqs": pre})


# ============================================================================ coin change


def _coins_best(coins: list[int], amount: int) -> int | None:
    INF = 10**9
    best = [0] + [INF] * amount
    for a in range(1, amount + 1):
        for c in coins:
            if c <= a and best[a - c] + 1 < best[a]:
                best[a] = best[a - c] + 1
    return None if best[amount] >= INF else best[amount]


def _coins_check(ans: str, d: dict) -> bool:
    used = [int(x) for x in literal(ans)]
    return all(c in d["coins"] for c in used) and sum(used) == d["amount"] and len(used) == d["best"]


def _coins_perturb(ref: str, d: dict, rng: random.Random) -> str:
    used = literal(ref)
    return repr(used + [min(d["coins"])])


@spec("sym/coin_change", "SymBench-style (combinatorial optimisation; no single original)",
      "pay an amount with the fewest coins", check=_coins_check, perturb=_coins_perturb)
def coin_change(rng: random.Random) -> Instance:
    coins = sorted({1, *rng.sample(range(3, 25), 3)})
    amount = rng.randint(20, 99)
    best = _coins_best(coins, amount)
    used, a = [], amount
    table = {0: []}
    for x in range(1, amount + 1):
        opts = [table[x - c] + [c] for c in coins if c <= x and x - c in table]
        table[x] = min(opts, key=len)
    used = sorted(table[amount], reverse=True)
    assert len(used) == best
    q = (f"Coin values: {coins} (unlimited coins of each). Pay exactly {amount} with as few coins as possible. "
         "Answer with a Python list of the coins used.")
    return Instance(q, repr(used), {"coins": coins, "amount": amount, "best": best})


# ============================================================================ stack machine


@spec("sym/stack_machine", "SymBench-style (code execution; no single original)",
      "run a small stack-machine program and give the final stack",
      solver=lambda d: (f"prog = {d['program']!r}\nst = []\nfor ins in prog:\n    op, *arg = ins.split()\n"
                        "    if op == 'push': st.append(int(arg[0]))\n    elif op == 'pop': st.pop()\n"
                        "    elif op == 'dup': st.append(st[-1])\n    elif op == 'swap': st[-1], st[-2] = st[-2], st[-1]\n"
                        "    else:\n        b, a = st.pop(), st.pop()\n        st.append(a + b if op == 'add' else a - b if op == 'sub' else a * b)\n"
                        "print(st)\n"), check=_list_check)
def stack_machine(rng: random.Random) -> Instance:
    st: list[int] = []
    prog: list[str] = []
    for _ in range(rng.randint(6, 12)):
        ops = ["push"] + (["dup", "pop"] if st else []) + (["add", "sub", "mul", "swap"] if len(st) >= 2 else [])
        op = rng.choice(ops)
        if op == "push":
            x = rng.randint(1, 9)
            st.append(x)
            prog.append(f"push {x}")
            continue
        prog.append(op)
        if op == "dup":
            st.append(st[-1])
        elif op == "pop":
            st.pop()
        elif op == "swap":
            st[-1], st[-2] = st[-2], st[-1]
        else:
            b, a = st.pop(), st.pop()
            st.append(a + b if op == "add" else a - b if op == "sub" else a * b)
    q = ("A stack machine runs this program (push x puts x on top; pop removes the top; dup copies the top; swap "
         "exchanges the top two; add, sub and mul pop b then a and push a+b, a-b or a*b):\n" + "\n".join(prog) +
         "\nAnswer with the final stack, bottom first, as a Python list.")
    ans = repr(st)
    return Instance(q, ans, {"answer": ans, "program": prog})


# ============================================================================ pattern recognition


def _largest_square(g: list[str]) -> list[int]:
    n, m = len(g), len(g[0])
    best = [0, 0, 1]
    for size in range(2, min(n, m) + 1):
        for r in range(n - size + 1):
            for c in range(m - size + 1):
                if len({g[r + i][c + j] for i in range(size) for j in range(size)}) == 1 and size > best[2]:
                    best = [r, c, size]
    return best


@spec("sym/pattern_recognition", "SymBench: Pattern Recognition", "find the largest one-letter square in a grid",
      check=_list_check,
      solver=lambda d: (f"g = {d['grid']!r}\nn, m = len(g), len(g[0])\nbest = [0, 0, 1]\n"
                        "for size in range(2, min(n, m) + 1):\n    for r in range(n - size + 1):\n"
                        "        for c in range(m - size + 1):\n"
                        "            if len({g[r + i][c + j] for i in range(size) for j in range(size)}) == 1 and size > best[2]:\n"
                        "                best = [r, c, size]\nprint(best)\n"))
def pattern_recognition(rng: random.Random) -> Instance:
    n, m = rng.randint(5, 7), rng.randint(5, 7)
    g = [[rng.choice("xo") for _ in range(m)] for _ in range(n)]
    size = rng.randint(2, 3)
    r, c, ch = rng.randrange(n - size + 1), rng.randrange(m - size + 1), rng.choice("xo")
    for i in range(size):
        for j in range(size):
            g[r + i][c + j] = ch
    grid = ["".join(row) for row in g]
    best = _largest_square(grid)
    ties = [(rr, cc) for rr in range(n - best[2] + 1) for cc in range(m - best[2] + 1)
            if len({grid[rr + i][cc + j] for i in range(best[2]) for j in range(best[2])}) == 1]
    if len(ties) != 1:
        return pattern_recognition(rng)
    q = ("Grid:\n" + "\n".join(grid) + "\nFind the largest square block whose cells all hold the same letter. Answer "
         "with a Python list [row, column, size] giving its top-left cell (counting from 0) and its side length.")
    ans = repr(best)
    return Instance(q, ans, {"answer": ans, "grid": grid})


# ============================================================================ meeting slot


@spec("sym/meeting_slot", "SymBench-style (scheduling; no single original)",
      "earliest common free hour-long slot in several calendars", check=_int_check,
      solver=lambda d: (f"busy = {d['busy']!r}\nfor h in range(9, 17):\n"
                        "    if all(not (a <= h < b) for cal in busy for a, b in cal):\n        print(h)\n        break\n"))
def meeting_slot(rng: random.Random) -> Instance:
    while True:
        busy = []
        for _ in range(rng.randint(2, 4)):
            cal = []
            for _ in range(rng.randint(1, 3)):
                a = rng.randint(9, 15)
                cal.append([a, min(17, a + rng.randint(1, 3))])
            busy.append(sorted(cal))
        free = [h for h in range(9, 17) if all(not (a <= h < b) for cal in busy for a, b in cal)]
        if free and free[0] > 9:
            break
    lines = [f"Person {k + 1} is busy " + ", ".join(f"from {a}:00 to {b}:00" for a, b in cal) + "." for k, cal in enumerate(busy)]
    q = (" ".join(lines) + " The working day runs from 9:00 to 17:00. At what hour can the earliest one-hour meeting "
         "with everyone start? Answer with the hour as an integer (e.g. 13 for 13:00).")
    return Instance(q, str(free[0]), {"answer": str(free[0]), "busy": busy})


# ============================================================================ subset counting


@spec("sym/subset_count", "SymBench-style (combinatorial counting; no single original)",
      "count the subsets of a list that add up to a target", check=_int_check,
      solver=lambda d: (f"import itertools\nxs = {d['numbers']!r}\nt = {d['target']}\n"
                        "print(sum(1 for r in range(1, len(xs) + 1) for s in itertools.combinations(range(len(xs)), r)"
                        " if sum(xs[i] for i in s) == t))\n"))
def subset_count(rng: random.Random) -> Instance:
    xs = _ints(rng, rng.randint(5, 9), 1, 15)
    t = rng.randint(10, max(11, sum(xs) // 2))
    cnt = sum(1 for r in range(1, len(xs) + 1) for s in itertools.combinations(range(len(xs)), r)
              if sum(xs[i] for i in s) == t)
    q = (f"How many subsets of the positions of the list {xs} have elements that add up to exactly {t}? (Subsets are "
         "sets of positions, so equal numbers at different positions count separately.) Answer with a number.")
    return Instance(q, str(cnt), {"answer": str(cnt), "numbers": xs, "target": t})


# ============================================================================ reversi

_R_DIRS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _reversi_flips(b: list[list[str]], r: int, c: int, me: str) -> list[tuple[int, int]]:
    if b[r][c] != ".":
        return []
    other = "W" if me == "B" else "B"
    out = []
    for dr, dc in _R_DIRS:
        line, i, j = [], r + dr, c + dc
        while 0 <= i < len(b) and 0 <= j < len(b) and b[i][j] == other:
            line.append((i, j))
            i, j = i + dr, j + dc
        if line and 0 <= i < len(b) and 0 <= j < len(b) and b[i][j] == me:
            out += line
    return out


_REVERSI_SOLVER = """b = [list(r) for r in {board!r}]
moves = {moves!r}
dirs = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
n = len(b)
for me, r, c in moves:
    other = 'W' if me == 'B' else 'B'
    for dr, dc in dirs:
        line, i, j = [], r + dr, c + dc
        while 0 <= i < n and 0 <= j < n and b[i][j] == other:
            line.append((i, j)); i += dr; j += dc
        if line and 0 <= i < n and 0 <= j < n and b[i][j] == me:
            for i, j in line: b[i][j] = me
    b[r][c] = me
print([''.join(row) for row in b])
"""


@spec("sym/reversi", "SymBench: Reversi", "play given Reversi moves and give the final board",
      check=lambda ans, d: [str(x).strip() for x in literal(ans)] == d["final"],
      solver=lambda d: _REVERSI_SOLVER.format(board=d["board"], moves=d["moves"]))
def reversi(rng: random.Random) -> Instance:
    n = rng.choice([4, 6])
    b = [["."] * n for _ in range(n)]
    m = n // 2
    b[m - 1][m - 1], b[m][m], b[m - 1][m], b[m][m - 1] = "W", "W", "B", "B"
    start = ["".join(r) for r in b]
    moves, me = [], "B"
    for _ in range(rng.randint(2, 4)):
        legal = [(r, c) for r in range(n) for c in range(n) if _reversi_flips(b, r, c, me)]
        if not legal:
            break
        r, c = rng.choice(legal)
        for i, j in _reversi_flips(b, r, c, me):
            b[i][j] = me
        b[r][c] = me
        moves.append([me, r, c])
        me = "W" if me == "B" else "B"
    final = ["".join(r) for r in b]
    q = ("Reversi on this board ('.' empty, B black, W white; rows and columns counted from 0):\n" + "\n".join(start) +
         "\nA move places a disc and flips every straight line of the opponent's discs that it closes off against one "
         "of the mover's own discs. Moves, in order: " + "; ".join(f"{p} at row {r}, column {c}" for p, r, c in moves) +
         ".\nAnswer with the final board as a Python list of row strings, e.g. ['....', '.BW.', ...].")
    return Instance(q, repr(final), {"board": start, "moves": moves, "final": final})


SPECS["sym/cryptanalysis"].perturb = lambda ref, d, rng: ref[1:] + ref[0]  # a rotation: same digits, wrong places
