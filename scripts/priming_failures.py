"""Why a primed organism fails at Countdown: sample it, then sort every failure (docs/priming.md,
"Priming the behavior-poor organism").

    OMP_NUM_THREADS=1 python scripts/priming_failures.py sample MODEL OUT.jsonl [PROBLEMS]   # 64 x 4 at T=1
    python scripts/priming_failures.py classify OUT.jsonl ...
    python scripts/priming_failures.py fidelity RUN_DIR [STEP ...]   # a countdown-behaviors run's eval responses
    python scripts/priming_failures.py fidelity OUT.jsonl ...        # samples written by `sample`

The classifier reads the ``organism`` / ``organism_facts`` phrasing (regexes on its templates):
(a) cut by the token limit, (b) a wrong ``a op b = c`` (or ``g = a op b``, or a leaf value that no
operation gives), (c) a check that accepts a wrong result or a leaf check that rejects a right one,
(d) the answer uses numbers the prompt does not give (or a restart restates other numbers), (e) the
answer differs from the expression the trace concluded with, (f) a right expression stated but not
answered, (g) none ever stated. Then, per first move after each "I have [...]": are its operands the
prompt's numbers, and is the list of what is left right?

``fidelity`` asks whether a search *works* (docs/priming.md, session 9), over the eval responses of
every condition and seed of a ``reasonlab run countdown-behaviors`` output, at the given eval steps
(default 0 and the last): the share of true ``a op b = c`` statements; of leaf rejections ("From a and
b I can get ..., but not g") where g is really out of reach; of acceptances ("..., exactly what I
need") whose value is what the attempt needed (the number after "so I need", else the target); of
final checks ("That's v") that claim the target; and accuracy when the check claims the target and
when it does not. A search whose acceptances are not gated by the value is decoration: it stops
where the traces stopped, not where the value says.
"""
import json, re, sys
from collections import Counter
from fractions import Fraction
from reasonlab.tasks.countdown import evaluate_expression, ExpressionError

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
       "/": lambda a, b: Fraction(a, b) if b else None}
N = r"(\d+)"
FWD = re.compile(rf"(?<![\d=] )(?<!= ){N} ([-+*/]) {N} = {N}")        # a op b = c (not the right side of g = ...)
BWD = re.compile(rf"(?:^|[:.,] ){N} = {N} ([-+*/]) {N}")                # g = a op b (backward relation)
LEAF_FAIL = re.compile(rf"From {N} and {N} I can get ([\d, ]+), but not {N}")
LEAF_FACTS = re.compile(rf"From {N} and {N}: [^.]*?, but not {N}")  # organism_facts
LEAF_HIT = re.compile(rf"And {N} ([-+*/]) {N} = {N}, exactly what I need")
LEAF_CHECK = re.compile(rf"From {N} and {N}: ([^.]*?), (but not \d+|none is \d+|exactly what I need)")  # organism_facts/_faithful/_verdicts
VERDICT = re.compile(rf"= {N} (not|is) {N}\b")  # organism_verdicts: each try's own verdict
TRY = re.compile(rf"{N} ([-+*/]) {N} = {N}")
NEED = re.compile(rf"so I need {N} from")
INTRO = re.compile(rf"I have \[([\d, ]+)\] and want {N}")
VERIFY = re.compile(r"Let me verify: ([^.]*)\. That's (\d+)(,| ,)? and each number")
ANS_IN_TRACE = re.compile(r"(?:the full expression is|So the answer is) ([\d ()+\-*/]+?)(?: = \d+)?[.<]")

def ev(expr):
    try:
        r = evaluate_expression(expr)
        return r.value, sorted(r.numbers)
    except ExpressionError:
        return None, None

def classify(e):
    nums, target, text = e["numbers"], e["target"], e["completion"]
    think = text.split("</think>")[0]
    m = re.search(r"<answer>(.*?)</answer>", text, re.S)
    answer = m.group(1).strip() if m else None
    f = set()
    if e["tokens"] >= 384 or answer is None:
        f.add("a_cut")
    # (b) wrong arithmetic in a try / step / backward relation / leaf list
    wrong_arith = 0; facts = 0
    for a, op, b, c in FWD.findall(think):
        facts += 1
        v = OPS[op](int(a), int(b))
        if v is None or v != int(c): wrong_arith += 1
    for g, a, op, b in BWD.findall(think):
        facts += 1
        v = OPS[op](int(a), int(b))
        if v is None or v != int(g): wrong_arith += 1
    for a, b, vals, goal in LEAF_FAIL.findall(think):
        a, b = int(a), int(b)
        ok = {a + b, abs(a - b), a * b} | ({max(a, b) // min(a, b)} if min(a, b) and max(a, b) % min(a, b) == 0 else set())
        for v in re.findall(r"\d+", vals):
            facts += 1
            if int(v) not in ok: wrong_arith += 1
    if wrong_arith: f.add("b_wrong_arith")
    # (c) verification: accepts a wrong result / rejects a right one
    acc_wrong = rej_right = 0
    for a, op, b, c in LEAF_HIT.findall(think):
        v = OPS[op](int(a), int(b))
        if v is None or v != int(c): acc_wrong += 1
    for txt in re.findall(r"Let me check: ([^.]*?)(?:, so|\. Yes)", think):
        for a, op, b, c in re.findall(rf"{N} ([-+*/]) {N} = {N}", txt) + [(x[1], x[2], x[3], x[0]) for x in re.findall(rf"{N} = {N} ([-+*/]) {N}", txt)]:
            v = OPS[op](int(a), int(b))
            if v is None or v != int(c): acc_wrong += 1
    for chain_, val, _ in VERIFY.findall(think):
        if int(val) == target:
            # claims the target: is the trace's final answer really the target?
            fin = ANS_IN_TRACE.findall(think)
            if fin:
                v, used = ev(fin[-1])
                if v != target or used != sorted(nums): acc_wrong += 1
    for a, b, goal in [(x, y, g) for x, y, _, g in LEAF_FAIL.findall(think)] + LEAF_FACTS.findall(think):
        a, b, goal = int(a), int(b), int(goal)
        ok = {a + b, abs(a - b), a * b} | ({max(a, b) // min(a, b)} if min(a, b) and max(a, b) % min(a, b) == 0 else set())
        if goal in ok: rej_right += 1
    if acc_wrong: f.add("c_accepts_wrong")
    if rej_right: f.add("c_rejects_right")
    # (d) numbers misread: intro/restarts restate other numbers or target; answer uses numbers not given
    intro_bad = any(sorted(int(x) for x in ns.split(", ")) != sorted(nums) or int(t) != target for ns, t in INTRO.findall(think))
    if intro_bad: f.add("d_restates_wrong")
    if e["error"] and "number" in e["error"]: f.add("d_answer_misreads")
    # (e) final answer differs from the expression the trace concluded with
    fin = ANS_IN_TRACE.findall(think)
    if answer is not None and fin and fin[-1].replace(" ", "") != answer.replace(" ", ""): f.add("e_answer_differs")
    # (f) trace found a correct expression (any stated in it) but answered otherwise
    found = any(ev(x)[0] == target and ev(x)[1] == sorted(nums) for x in fin)
    if found and not e["correct"]: f.add("f_found_not_answered")
    if not found and not e["correct"]: f.add("g_never_found")
    return f, wrong_arith, facts

def main(path):
    L = [json.loads(l) for l in open(path)]
    c = Counter(); wa = fa = 0
    prim = Counter()
    for e in L:
        f, w, n = classify(e); wa += w; fa += n
        c.update(f)
        if e["correct"]: prim["correct"] += 1
        elif e["error"] is None or "no <answer>" in (e["error"] or "") and "a_cut" in f: prim["a_cut" if "a_cut" in f else "?"] += 1
        elif "a_cut" in f: prim["a_cut"] += 1
        elif "d_answer_misreads" in f: prim["d_answer_misreads"] += 1
        elif "f_found_not_answered" in f: prim["f_found_not_answered"] += 1
        else: prim["g_wrong_value(never found)"] += 1
    n = len(L)
    print(f"{path}: {n} samples, correct {sum(e['correct'] for e in L)}, format_ok {sum(e['format_ok'] for e in L)}, mean tokens {sum(e['tokens'] for e in L)/n:.0f}")
    print(" flags (samples with):", dict(sorted(c.items())))
    print(f" arithmetic statements in thinking: {fa}, wrong {wa} ({wa/max(fa,1):.0%})")
    print(" primary outcome:", dict(prim))
    errs = Counter((e["error"] or "ok").split(":")[0][:40] if not e["error"] or "evaluates" not in e["error"] else "wrong value" for e in L)
    print(" scorer:", dict(errs))



STEP = re.compile(rf"{N} ([-+*/]) {N} = {N}, so now I have \[([\d, ]*)\]")
BACK = re.compile(rf"Working backwards: {N} = {N} ([-+*/]) {N}, so I need {N} from \[([\d, ]*)\]")
def ms(s): return sorted(int(x) for x in s.split(", ") if x)
def rm(pool, xs):
    pool = list(pool)
    for x in xs:
        if x in pool: pool.remove(x)
        else: return None
    return pool
def state(path):
    c = Counter()
    for l in open(path):
        e = json.loads(l); nums, T = e["numbers"], e["target"]
        think = e["completion"].split("</think>")[0]
        # first sentence after each intro: state = prompt numbers
        for para in re.split(r"I have \[[\d, ]+\] and want \d+\.", think)[1:]:
            m1, m2 = STEP.search(para), BACK.search(para)
            first = min([m for m in (m1, m2) if m], key=lambda m: m.start(), default=None)
            if first is None: continue
            if first.re is STEP:
                a, op, b, v, rest = first.groups(); a, b, v = int(a), int(b), int(v)
                c["step"] += 1
                r = rm(nums, [a, b])
                c["step operands in prompt"] += r is not None
                tv = OPS[op](a, b)
                c["step value right"] += tv == v
                c["step rest right (given its operands)"] += r is not None and sorted(r + [v]) == ms(rest)
            else:
                g, x, op, y, need, rest = first.groups(); g, x, y, need = int(g), int(x), int(y), int(need)
                c["back"] += 1
                c["back goal=target"] += g == T
                c["back relation right"] += OPS[op](x, y) == g
                c["back uses a prompt number"] += x in nums or y in nums
                c["back need consistent (= other side)"] += need in (x, y) and (x in nums or y in nums)
                used = x if need == y else y
                r = rm(nums, [used])
                c["back rest right"] += r is not None and sorted(r) == ms(rest)
        for a, op, b, v in FWD.findall(think):
            c["FWD"] += 1; c["FWD wrong"] += OPS[op](int(a), int(b)) != int(v)
        for g, a, op, b in BWD.findall(think):
            c["BWD"] += 1; c["BWD wrong"] += OPS[op](int(a), int(b)) != int(g)
        for a, b, vals, goal in LEAF_FAIL.findall(think):
            a, b = int(a), int(b)
            ok = {a + b, abs(a - b), a * b} | ({max(a, b) // min(a, b)} if min(a, b) and max(a, b) % min(a, b) == 0 else set())
            for v in re.findall(r"\d+", vals):
                c["LEAF value"] += 1; c["LEAF value wrong"] += int(v) not in ok
    print(path); [print(f"  {k}: {v}") for k, v in c.items()]


def sample(model, out, P=64):
    import torch
    from reasonlab.rollout.agent import run_agent
    from reasonlab.rollout.base import SamplingParams
    from reasonlab.rollout.hf import HFBackend
    from reasonlab.tasks import get_task
    from reasonlab.organisms import CPU_TASK_ARGS
    backend = HFBackend(model, dtype="fp32", device="cpu", batch_size=64, compile=False)
    task = get_task("countdown", **CPU_TASK_ARGS)
    probs = task.problems("test", P, seed=0)
    torch.manual_seed(0)
    groups = run_agent(backend, task, probs, SamplingParams(n=4, temperature=1.0, max_new_tokens=384, seed=0), tools=None)
    with open(out, "w") as f:
        for p, g in zip(probs, groups):
            for e in g:
                f.write(json.dumps({"numbers": p.metadata["numbers"], "target": p.metadata["target"], "completion": e.completion,
                                    "correct": e.correct, "format_ok": e.format_ok, "error": (e.score_details or {}).get("error"),
                                    "tokens": int(e.stats.get("generated_tokens", 0))}) + "\n")
    print(sum(json.loads(l)["correct"] for l in open(out)), "correct of", 4 * P)


CHECK = re.compile(r"Let me verify: [^.]*\. That's (\d+)")  # a final check, whatever it concludes
PROMPT = re.compile(r"Using the numbers \[([\d, ]+)\], create an equation that equals (\d+)")


def fidelity(run, steps):
    import glob
    import os

    from reasonlab.episode import read_jsonl

    rows = {}
    for cond in sorted(os.listdir(f"{run}/conditions")):
        files = sorted(glob.glob(f"{run}/conditions/{cond}/seed-*/rl/episodes/eval-step-*.jsonl"))
        have = sorted({int(f.rsplit("-", 1)[1].split(".")[0]) for f in files})
        for step in steps or ([have[0], have[-1]] if have else []):
            c = Counter()
            for f in [f for f in files if f.endswith(f"-{step:06d}.jsonl")]:
                for e in read_jsonl(f):
                    nums, target = PROMPT.search(e["messages"][1]["content"]).groups()
                    fidelity_one(e["messages"][-1]["content"], int(target), bool(e["correct"]), c)
            if c["n"]:
                rows[(cond, step)] = c
    fidelity_table(rows)


def fidelity_one(text, target, correct, c):
    """Add one response's search-fidelity counts to ``c`` (both leaf layouts: ``I can get 8, 2, 15,
    but not 5`` and ``From 5 and 3: 5 + 3 = 8, ..., but not 5`` / ``..., exactly what I need``)."""
    think = text.split("</think>")[0]
    c["n"] += 1; c["correct"] += correct
    for a, op, b, v in FWD.findall(think) + [(x[1], x[2], x[3], x[0]) for x in BWD.findall(think)]:
        c["stmt"] += 1; c["stmt true"] += OPS[op](int(a), int(b)) == int(v)
    for a, b, _, g in LEAF_FAIL.findall(think):
        a, b, g = int(a), int(b), int(g)
        reach = {OPS[o](x, y) for o in OPS for x, y in ((a, b), (b, a))}
        c["reject"] += 1; c["reject true"] += g not in reach
    for m in LEAF_HIT.finditer(think):
        a, op, b, _ = m.groups()
        need = NEED.findall(think[:m.start()].split("start over")[-1]) or [target]
        c["accept"] += 1; c["accept gated"] += OPS[op](int(a), int(b)) == int(need[-1])
    for m in LEAF_CHECK.finditer(think):  # the faithful layout: every operation tried, written out
        a, b, tries, verdict = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
        need = NEED.findall(think[:m.start()].split("start over")[-1]) or [target]
        need = int(need[-1])
        stated = [(int(x), o, int(y), int(v)) for x, o, y, v in TRY.findall(tries)]
        reach = {OPS[o](x, y) for o in OPS for x, y in ((a, b), (b, a))}
        if not verdict.startswith("exactly"):
            c["reject"] += 1; c["reject true"] += need not in reach
            c["reject despite a stated hit"] += any(v == need for *_, v in stated)
        else:
            last = stated[-1] if stated else None
            c["accept"] += 1
            c["accept gated"] += bool(last) and OPS[last[1]](last[0], last[2]) == need
    for v, word, g in VERDICT.findall(think):
        c["verdict"] += 1; c["verdict true"] += (word == "is") == (v == g)
    checks = CHECK.findall(think)
    if checks:
        claim = int(checks[-1]) == target
        c["check"] += 1; c["check claims target"] += claim
        k = "claims" if claim else "not"
        c[f"n {k}"] += 1; c[f"correct {k}"] += correct


def fidelity_file(paths):
    """fidelity over ``sample`` output files (one row each)."""
    rows = {}
    for path in paths:
        c = Counter()
        for line in open(path):
            e = json.loads(line)
            fidelity_one(e["completion"], e["target"], bool(e["correct"]), c)
        rows[(path, "-")] = c
    fidelity_table(rows)


def fidelity_table(rows):

    def share(c, a, b):
        return f"{c[a] / c[b]:.2f} ({c[b]})" if c[b] else "–"

    print("| condition | step | accuracy | true statements | true rejections | rejections of a stated hit | "
          "gated acceptances | true try verdicts | checks claiming the target | accuracy when claimed | when not |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (cond, step), c in rows.items():
        print(f"| {cond} | {step} | {share(c, 'correct', 'n')} | {share(c, 'stmt true', 'stmt')} | "
              f"{share(c, 'reject true', 'reject')} | {share(c, 'reject despite a stated hit', 'reject')} | "
              f"{share(c, 'accept gated', 'accept')} | {share(c, 'verdict true', 'verdict')} | "
              f"{share(c, 'check claims target', 'check')} | {share(c, 'correct claims', 'n claims')} | "
              f"{share(c, 'correct not', 'n not')} |")


if __name__ == "__main__":
    if sys.argv[1] == "fidelity" and sys.argv[2].endswith(".jsonl"):
        fidelity_file(sys.argv[2:])
    elif sys.argv[1] == "fidelity":
        fidelity(sys.argv[2], [int(x) for x in sys.argv[3:]])
    elif sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 64)
    else:
        for p in sys.argv[2:]:
            main(p)
            state(p)
