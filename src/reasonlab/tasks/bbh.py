"""BIG-Bench-Hard-style procedural tasks (``bbh/<name>``).

BIG-Bench-Hard's data files are not shipped by any package here (``--task file:PATH`` reads the real
files when a researcher has them; see :mod:`reasonlab.tasks.fileimport`). These generators write new
instances of the BBH tasks that are algorithmic — the answer follows from the text by a computation
(boolean expressions, Dyck languages, multi-step arithmetic, object tracking, deduction, dates,
navigation, ...) — with the same answer shapes as BBH (``True``/``False``, ``Yes``/``No``,
multiple choice ``(A)``, numbers). Expressions are evaluated by small interpreters written here,
never by ``eval``. docs/r1ci.md maps each task to its original.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import re

from reasonlab.tasks.procedural import Instance, as_int, norm, spec

NAMES = ["Alice", "Bob", "Claire", "Dave", "Eve", "Fred", "Gina"]


def _choice_letter(ans: str) -> str | None:
    m = re.search(r"\(?\b([A-G])\b\)?", ans.strip())
    return m.group(1) if m else None


def mc_check(ans: str, d: dict) -> bool:
    """Multiple choice: '(B)', 'B' or the option's text."""
    got = _choice_letter(ans) if len(ans.strip()) <= 4 else None
    if got is None:
        texts = {norm(t): k for k, t in d["options"].items()}
        got = texts.get(norm(ans))
    return got == d["answer"].strip("()")


def mc_perturb(ref: str, d: dict, rng: random.Random) -> str:
    other = [k for k in d["options"] if k != d["answer"].strip("()")]
    return f"({rng.choice(other)})"


def _mc(rng: random.Random, correct: str, wrong: list[str]) -> tuple[dict[str, str], str]:
    opts = [correct] + wrong
    rng.shuffle(opts)
    keys = "ABCDEFG"[: len(opts)]
    options = dict(zip(keys, opts))
    ans = keys[opts.index(correct)]
    return options, f"({ans})"


def _mc_text(options: dict[str, str]) -> str:
    return "Options:\n" + "\n".join(f"({k}) {v}" for k, v in options.items())


def int_check(ans: str, d: dict) -> bool:
    return as_int(ans) == int(d["answer"])


def word_check(ans: str, d: dict) -> bool:
    return norm(ans) == norm(d["answer"])


def yesno_perturb(ref: str, d: dict, rng: random.Random) -> str:
    return {"yes": "No", "no": "Yes", "true": "False", "false": "True"}[ref.lower()]


# ============================================================================ boolean expressions


def _bool_expr(rng: random.Random, depth: int) -> tuple[str, bool]:
    if depth == 0 or rng.random() < 0.3:
        v = rng.random() < 0.5
        return str(v), v
    kind = rng.choice(["not", "and", "or", "paren"])
    if kind == "not":
        t, v = _bool_expr(rng, depth - 1)
        return f"not {t}", not v
    if kind == "paren":
        t, v = _bool_expr(rng, depth - 1)
        return f"( {t} )", v
    a, va = _bool_expr(rng, depth - 1)
    b, vb = _bool_expr(rng, depth - 1)
    # keep precedence explicit: both sides parenthesised when they are compound
    a = a if a in ("True", "False") else f"( {a} )"
    b = b if b in ("True", "False") else f"( {b} )"
    return f"{a} {kind} {b}", (va and vb) if kind == "and" else (va or vb)


@spec("bbh/boolean_expressions", "BIG-Bench-Hard: boolean_expressions", "evaluate a boolean expression",
      check=word_check, perturb=yesno_perturb,
      solver=lambda d: "toks = " + repr(d["expr"].replace("(", " ( ").replace(")", " ) ").split()) + "\n" + _BOOL_SOLVER)
def boolean_expressions(rng: random.Random) -> Instance:
    expr, v = _bool_expr(rng, rng.randint(2, 4))
    return Instance(f"Evaluate the result of a random Boolean expression.\n\n{expr} is", str(v),
                    {"answer": str(v), "expr": expr})


_BOOL_SOLVER = """# a small recursive-descent evaluator (or < and < not)
pos = 0
def peek():
    return toks[pos] if pos < len(toks) else None
def take():
    global pos
    pos += 1
    return toks[pos - 1]
def atom():
    t = take()
    if t == 'not': return not atom()
    if t == '(':
        v = expr_or(); take(); return v
    return t == 'True'
def expr_and():
    v = atom()
    while peek() == 'and':
        take(); w = atom(); v = v and w
    return v
def expr_or():
    v = expr_and()
    while peek() == 'or':
        take(); w = expr_and(); v = v or w
    return v
print(expr_or())
"""


# ============================================================================ dyck languages

_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}


@spec("bbh/dyck_languages", "BIG-Bench-Hard: dyck_languages", "close every open bracket of a sequence",
      check=lambda ans, d: ans.split() == d["answer"].split(),
      solver=lambda d: (f"seq = {d['prefix']!r}.split()\npairs = {_PAIRS!r}\nstack = []\nfor t in seq:\n"
                        "    if t in pairs: stack.append(t)\n    else: stack.pop()\n"
                        "print(' '.join(pairs[t] for t in reversed(stack)))\n"))
def dyck_languages(rng: random.Random) -> Instance:
    while True:
        stack, seq = [], []
        for _ in range(rng.randint(6, 18)):
            if stack and rng.random() < 0.4:
                seq.append(_PAIRS[stack.pop()])
            else:
                o = rng.choice(list(_PAIRS))
                stack.append(o)
                seq.append(o)
        if stack:
            break
    close = " ".join(_PAIRS[o] for o in reversed(stack))
    q = ("Complete the rest of the sequence, making sure that the parentheses are closed properly. Answer with only "
         f"the closing symbols, separated by spaces.\nInput: {' '.join(seq)}")
    return Instance(q, close, {"answer": close, "prefix": " ".join(seq)})


# ============================================================================ multistep arithmetic


def _arith(rng: random.Random, depth: int) -> tuple[str, int]:
    if depth == 0:
        v = rng.randint(-9, 9)
        return str(v), v
    a, va = _arith(rng, depth - 1)
    b, vb = _arith(rng, depth - 1)
    op = rng.choice("+-*")
    v = va + vb if op == "+" else va - vb if op == "-" else va * vb
    return f"({a} {op} {b})", v


@spec("bbh/multistep_arithmetic", "BIG-Bench-Hard: multistep_arithmetic_two", "evaluate nested integer arithmetic",
      check=int_check, solver=lambda d: f"print({d['expr']})\n")
def multistep_arithmetic(rng: random.Random) -> Instance:
    a, va = _arith(rng, 2)
    b, vb = _arith(rng, 2)
    op = rng.choice("+-*")
    v = va + vb if op == "+" else va - vb if op == "-" else va * vb
    expr = f"{a} {op} {b}"
    return Instance(f"{expr} =", str(v), {"answer": str(v), "expr": expr})


# ============================================================================ object counting

_CATS = {
    "musical instruments": ["piano", "flute", "trumpet", "violin", "drum", "clarinet", "accordion", "trombone"],
    "fruits": ["apple", "banana", "peach", "plum", "grape", "orange", "strawberry", "nectarine"],
    "animals": ["dog", "cat", "rabbit", "goat", "cow", "snail", "mouse", "duck"],
    "vegetables": ["carrot", "onion", "potato", "cabbage", "yam", "garlic", "celery", "lettuce head"],
}
_NUM = ["a", "two", "three", "four", "five"]


@spec("bbh/object_counting", "BIG-Bench-Hard: object_counting", "count the objects of one category in a list",
      check=int_check)
def object_counting(rng: random.Random) -> Instance:
    cat = rng.choice(list(_CATS))
    others = [c for c in _CATS if c != cat]
    parts, total = [], 0
    for _ in range(rng.randint(3, 7)):
        c = cat if rng.random() < 0.6 else rng.choice(others)
        k = rng.randint(1, 4) if rng.random() < 0.4 else 1
        item = rng.choice(_CATS[c])
        parts.append(f"{_NUM[k - 1]} {item}{'s' if k > 1 else ''}" if k > 1 else f"a {item}")
        total += k if c == cat else 0
    q = f"I have {', '.join(parts[:-1])}, and {parts[-1]}. How many {cat} do I have? Answer with a number."
    return Instance(q, str(total), {"answer": str(total)})


# ============================================================================ navigate


@spec("bbh/navigate", "BIG-Bench-Hard: navigate", "follow moves and tell whether you end where you started",
      check=word_check, perturb=yesno_perturb)
def navigate(rng: random.Random) -> Instance:
    x = y = 0
    facing = 0  # 0 north, 1 east, 2 south, 3 west
    steps = ["Always face forward."] if rng.random() < 0.5 else []
    always = bool(steps)
    moves = []
    for _ in range(rng.randint(3, 7)):
        if always:
            k = rng.randint(1, 9)
            d = rng.choice(["forward", "backward", "left", "right"])
            moves.append(f"Take {k} step{'s' if k > 1 else ''} {d}.")
            dx, dy = {"forward": (0, 1), "backward": (0, -1), "left": (-1, 0), "right": (1, 0)}[d]
            x, y = x + k * dx, y + k * dy
        elif rng.random() < 0.35:
            t = rng.choice(["Turn left.", "Turn right.", "Turn around."])
            moves.append(t)
            facing = (facing + {"Turn left.": 3, "Turn right.": 1, "Turn around.": 2}[t]) % 4
        else:
            k = rng.randint(1, 9)
            moves.append(f"Take {k} step{'s' if k > 1 else ''}.")
            dx, dy = [(0, 1), (1, 0), (0, -1), (-1, 0)][facing]
            x, y = x + k * dx, y + k * dy
    if rng.random() < 0.5 and (x, y) != (0, 0) and always:  # make about half of them return home
        if x:
            moves.append(f"Take {abs(x)} step{'s' if abs(x) > 1 else ''} {'left' if x > 0 else 'right'}.")
        if y:
            moves.append(f"Take {abs(y)} step{'s' if abs(y) > 1 else ''} {'backward' if y > 0 else 'forward'}.")
        x = y = 0
    ans = "Yes" if (x, y) == (0, 0) else "No"
    q = ("If you follow these instructions, do you return to the starting point? " + " ".join(steps + moves) +
         "\nAnswer Yes or No.")
    return Instance(q, ans, {"answer": ans})


# ============================================================================ tracking shuffled objects


@spec("bbh/tracking_shuffled_objects", "BIG-Bench-Hard: tracking_shuffled_objects", "track objects through swaps",
      check=mc_check, perturb=mc_perturb)
def tracking_shuffled_objects(rng: random.Random) -> Instance:
    k = rng.choice([3, 5, 7])
    people = NAMES[:k]
    balls = rng.sample(["red", "blue", "green", "yellow", "white", "black", "pink", "orange", "purple"], k)
    hold = dict(zip(people, balls))
    swaps = [rng.sample(people, 2) for _ in range(rng.randint(3, 6))]
    for a, b in swaps:
        hold[a], hold[b] = hold[b], hold[a]
    who = rng.choice(people)
    options, ans = _mc(rng, f"{hold[who]} ball", [f"{b} ball" for b in balls if b != hold[who]])
    q = (f"{', '.join(people[:-1])} and {people[-1]} are playing a game. At the start, " +
         ", ".join(f"{p} has a {b} ball" for p, b in zip(people, balls)) + ". Then, in order: " +
         "; ".join(f"{a} and {b} swap balls" for a, b in swaps) + f". At the end, {who} has the\n" + _mc_text(options))
    return Instance(q, ans, {"answer": ans, "options": options})


# ============================================================================ logical deduction


@spec("bbh/logical_deduction", "BIG-Bench-Hard: logical_deduction", "order objects from clues, pick a position",
      check=mc_check, perturb=mc_perturb)
def logical_deduction(rng: random.Random) -> Instance:
    k = rng.choice([3, 5])
    birds = rng.sample(["robin", "owl", "crow", "hawk", "quail", "raven", "finch"], k)
    order = birds[:]
    rng.shuffle(order)
    pos = {b: i for i, b in enumerate(order)}
    cands = list(itertools.permutations(birds))
    clues = []
    ord_ = ["first", "second", "third", "fourth", "fifth"]
    while len(cands) > 1:
        a, b = rng.sample(birds, 2)
        if rng.random() < 0.7:
            if pos[a] > pos[b]:
                a, b = b, a
            text, test = f"The {a} is to the left of the {b}.", (lambda p, a=a, b=b: p.index(a) < p.index(b))
        else:
            text, test = (f"The {a} is the {ord_[pos[a]]} from the left.", (lambda p, a=a, i=pos[a]: p.index(a) == i))
        new = [p for p in cands if test(p)]
        if len(new) < len(cands):
            clues.append(text)
            cands = new
    i = rng.randrange(k)
    options, ans = _mc(rng, f"The {order[i]} is the {ord_[i]} from the left",
                       [f"The {b} is the {ord_[i]} from the left" for b in birds if b != order[i]])
    q = (f"On a branch, there are {k} birds: {', '.join(birds)}. They sit in a fixed order. " + " ".join(clues) +
         "\n" + _mc_text(options))
    return Instance(q, ans, {"answer": ans, "options": options})


# ============================================================================ date understanding


@spec("bbh/date_understanding", "BIG-Bench-Hard: date_understanding", "date arithmetic, multiple choice",
      check=mc_check, perturb=mc_perturb)
def date_understanding(rng: random.Random) -> Instance:
    today = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(0, 9000))
    delta, phrase = rng.choice([(-1, "yesterday"), (1, "tomorrow"), (-7, "one week ago"), (7, "one week from today"),
                                (-10, "10 days ago"), (30, "30 days later"), (-365, "365 days ago")])
    target = today + dt.timedelta(days=delta)
    f = lambda d: d.strftime("%m/%d/%Y")  # noqa: E731
    wrong = {f(target + dt.timedelta(days=x)) for x in (-1, 1, 2)} | {f(target.replace(year=target.year + 1))}
    wrong.discard(f(target))
    options, ans = _mc(rng, f(target), sorted(wrong)[:4])
    q = f"Today is {f(today)}. What is the date {phrase} in MM/DD/YYYY?\n" + _mc_text(options)
    return Instance(q, ans, {"answer": ans, "options": options})


# ============================================================================ temporal sequences


@spec("bbh/temporal_sequences", "BIG-Bench-Hard: temporal_sequences", "find the free time slot in a day",
      check=mc_check, perturb=mc_perturb)
def temporal_sequences(rng: random.Random) -> Instance:
    person = rng.choice(NAMES)
    place = rng.choice(["the bakery", "the gym", "the library", "the park", "the museum"])
    hours = list(range(rng.randint(5, 8), 22, 2))[:5]
    free = rng.randrange(len(hours) - 1)
    acts = ["was seen walking", "was seen at the office", "was seen reading", "was seen buying lunch",
            "was seen at the train station", "was seen jogging"]
    lines = [f"Between {h}:00 and {h + 2}:00, {rng.choice(NAMES)} saw {person} {rng.choice(acts)[9:]}."
             for i, h in enumerate(hours[:-1]) if i != free]
    slot = lambda h: f"{h}:00 to {h + 2}:00"  # noqa: E731
    options, ans = _mc(rng, slot(hours[free]), [slot(h) for i, h in enumerate(hours[:-1]) if i != free])
    q = (f"Today, {person} went to {place}. {person} woke up at {hours[0]}:00. " + " ".join(lines) +
         f" {place[0].upper() + place[1:]} was closed after {hours[-1]}:00. Between what times could {person} have gone "
         f"to {place}?\n" + _mc_text(options))
    return Instance(q, ans, {"answer": ans, "options": options})


# ============================================================================ web of lies


@spec("bbh/web_of_lies", "BIG-Bench-Hard: web_of_lies", "follow a chain of truth-tellers and liars",
      check=word_check, perturb=yesno_perturb)
def web_of_lies(rng: random.Random) -> Instance:
    people = rng.sample(NAMES, rng.randint(3, 6))
    truth = rng.random() < 0.5
    text = [f"{people[0]} {'tells the truth' if truth else 'lies'}."]
    for a, b in zip(people[1:], people):
        says_truth = rng.random() < 0.5
        text.append(f"{a} says {b} {'tells the truth' if says_truth else 'lies'}.")
        truth = (says_truth == truth)
    ans = "Yes" if truth else "No"
    return Instance("Question: " + " ".join(text) + f" Does {people[-1]} tell the truth? Answer Yes or No.", ans,
                    {"answer": ans})


# ============================================================================ colored objects


@spec("bbh/colored_objects", "BIG-Bench-Hard: reasoning_about_colored_objects", "questions about a row of colored objects",
      check=int_check)
def colored_objects(rng: random.Random) -> Instance:
    objs = rng.sample(["pen", "mug", "keychain", "notebook", "cup", "phone charger", "sheet of paper", "booklet"],
                      rng.randint(4, 6))
    colors = [rng.choice(["red", "blue", "green", "purple", "teal", "mauve"]) for _ in objs]
    i = rng.randrange(len(objs))
    c = colors[i]
    count = sum(1 for j in range(i) if colors[j] != c)
    q = ("On the desk, you see these items arranged in a row: " + ", ".join(f"a {col} {o}" for col, o in zip(colors, objs)) +
         f". How many items to the left of the {objs[i]} are not {c}? Answer with a number.")
    return Instance(q, str(count), {"answer": str(count)})


# ============================================================================ penguins in a table


@spec("bbh/penguins_in_a_table", "BIG-Bench-Hard: penguins_in_a_table", "answer questions about a small table",
      check=word_check)
def penguins_in_a_table(rng: random.Random) -> Instance:
    names = rng.sample(["Louis", "Bernard", "Vincent", "Gwen", "James", "Ada", "Hugo"], rng.randint(4, 6))
    rows = [(n, rng.randint(1, 12), rng.randint(40, 90), rng.randint(5, 25)) for n in names]
    table = "name, age, height (cm), weight (kg)\n" + "\n".join(f"{n}, {a}, {h}, {w}" for n, a, h, w in rows)
    kind = rng.choice(["older", "tallest", "heaviest"])
    if kind == "older":
        k = rng.randint(3, 9)
        ans, q = str(sum(a > k for _, a, _, _ in rows)), f"How many penguins are more than {k} years old? Answer with a number."
    else:
        col = 2 if kind == "tallest" else 3
        best = max(rows, key=lambda r: (r[col], r[0]))
        if sum(r[col] == best[col] for r in rows) > 1:
            return penguins_in_a_table(rng)
        ans, q = best[0], f"Which penguin is the {kind}? Answer with its name."
    return Instance(f"Here is a table of penguins:\n{table}\n{q}", ans, {"answer": ans})


# ============================================================================ hyperbaton

_ADJ = [("opinion", ["lovely", "obnoxious", "wonderful", "terrible"]), ("size", ["big", "little", "enormous", "tiny"]),
        ("age", ["old", "new", "ancient", "brand-new"]), ("shape", ["square", "circular", "triangular", "rectangular"]),
        ("color", ["red", "gray", "white", "green"]), ("origin", ["Mexican", "Japanese", "Egyptian", "Russian"]),
        ("material", ["wool", "plastic", "steel", "leather"]), ("purpose", ["hiking", "drinking", "smoking", "exercise"])]


@spec("bbh/hyperbaton", "BIG-Bench-Hard: hyperbaton", "pick the sentence with correct English adjective order",
      check=mc_check, perturb=mc_perturb)
def hyperbaton(rng: random.Random) -> Instance:
    kinds = sorted(rng.sample(range(len(_ADJ)), rng.randint(2, 4)))
    adjs = [rng.choice(_ADJ[k][1]) for k in kinds]
    noun = rng.choice(["ship", "sweater", "knife", "cat", "car", "shoe"])
    right = f"{' '.join(adjs)} {noun}"
    perm = adjs[:]
    while perm == adjs:
        rng.shuffle(perm)
    wrong = f"{' '.join(perm)} {noun}"
    options, ans = _mc(rng, right, [wrong])
    return Instance("Which sentence has the correct adjective order?\n" + _mc_text(options), ans,
                    {"answer": ans, "options": options})
