"""Cognitive-behaviour counts in reasoning text, and how to measure a behaviour classifier.

The four behaviours of Gandhi et al. 2025 (arXiv 2503.01307): verification, backtracking, subgoal
setting, backward chaining. The study counts them with an LLM judge; this module has a fast local
stand-in, :func:`count_behaviors_local`, that needs no server (under a millisecond per response), for
quick looks at rollouts during training. It is a rule-based counter: phrase cues (regexes), one
list per behaviour, matched per sentence. A run of consecutive sentences matching the same
behaviour counts once ("That doesn't work. Let me try another way." is one backtrack), except that
a backward-chaining run counts one per sentence stating a relation ``N = N op N``, since
consecutive links of a chain are separate steps ("75 = 3 * 25, so I need 25. 25 = 5 * 5, so I
need 5." is two).

Honesty note. The cues were written while reading the synthetic trace templates of
:mod:`reasonlab.priming` (the ``standard`` family, and ``paraphrase_a``) plus common model
phrasings ("Let me check", "That doesn't work, let's try", "Working backwards", "First, I'll aim
for"). On those templates it is perfect *by construction*, which says nothing about other text. On
the held-out family ``paraphrase_b`` (written after the cues were frozen) it keeps precision 1.0
but finds only ~10% of the behaviour (micro recall 0.10; none of the subgoals or backward
chaining): regex cues learn wording, not behaviour. Numbers and history in docs/priming.md. Use it for
quick relative looks at text phrased like the priming traces; report the LLM judge.

:func:`evaluate_classifier` compares any counter (this one, or an LLM judge with the same
``text -> {behaviour: count}`` shape) with the true counts stored in ``Episode.behaviors``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from reasonlab.episode import Episode

BEHAVIORS = ("verification", "backtracking", "subgoal_setting", "backward_chaining")

_N = r"\d+(?:\.\d+)?"
_OP = r"[-+*/×÷x−]"
_LET = r"(?:let(?:'s| me| us)|I(?:'ll| will| should| can)|we(?:'ll| will| should| can)?)"

# First draft, written against the STANDARD trace templates and the common phrasings named in the
# module docstring, then frozen before the paraphrase families existed. Kept to reproduce the
# numbers in docs/priming.md.
CUES_V1: dict[str, list[str]] = {
    "verification": [
        rf"\b{_LET} (?:also |quickly )?(?:double[- ]?)?(?:check|verify|confirm|make sure)\b",
        r"\b(?:double[- ]check|verif(?:y|ying|ied|ication)|sanity[- ]check)\b",
        r"\b(?:quick|final) check\b",
        r"\bcheck(?:ing)? (?:the|my|this|that|our|it|whether|if)\b",
        r"\bchecks out\b",
        r"\bto (?:be sure|make sure)\b",
        r"\b(?:every|each|all) numbers? (?:is |are )?used (?:exactly )?once\b",
    ],
    "backtracking": [
        r"\b(?:doesn't|does not|didn't|did not|won't|will not|isn't going to) (?:work|help|reach)\b",
        rf"\b{_LET} (?:try|use|consider|look for|go with) (?:a |an )?(?:different|another|other|new)\b",
        r"\btry (?:again|something else|another|a different)\b",
        r"\b(?:start(?:ing)? over|start again|go(?:ing)? back|step(?:ping)? back|backtrack(?:ing)?|scratch that)\b",
        r"\b(?:dead[- ]end|no luck|not working|that fails|this fails|path fails)\b",
        r"\b(?:this|that) (?:approach|path|idea|attempt|route|combination) (?:fails|failed|is wrong|leads nowhere)\b",
    ],
    "subgoal_setting": [
        r"\bfirst,? (?:I(?:'ll| will)?|let(?:'s| me)|we(?:'ll| will)?) (?:aim|target|try to (?:get|reach|make)|get to|reach|make|need)\b",
        r"\b(?:aim|aiming) (?:for|at)\b",
        r"\b(?:intermediate|sub-?) ?(?:goal|target|result)s?\b",
        r"\bsubgoal\b",
        r"\bget (?:close|closer|near) to\b",
        r"\bget to \d+ first\b",
        r"\b(?:break|breaking|split|splitting) (?:it|this|the problem) (?:down|into)\b",
    ],
    "backward_chaining": [
        r"\bwork(?:ing|ed)? backwards?\b",
        r"\bbackwards? from\b",
        r"\bstart(?:ing)? from the (?:target|answer|goal|end)\b",
        rf"\b{_N}\s*=\s*{_N}\s*{_OP}\s*{_N}\s*[,;]?\s*(?:so|then) (?:I|we) (?:would |will )?need\b",
        rf"\b(?:to get|to make|to reach) {_N},? (?:I|we) (?:could|can|would|need)\b",
    ],
}
# Added after the first draft scored ~0 recall on paraphrase_a (so measured on that family
# they are tuned, not held out): general phrasings of each behaviour. PARAPHRASE_B was written
# after these were frozen and is the held-out measurement.
_ADDED: dict[str, list[str]] = {
    "verification": [
        r"\bcheck(?:s|ed|ing)?\b",
        r"\bre-?(?:comput|calculat|check|run|do|evaluat)\w*",
        r"\bconfirm(?:s|ed|ing)?\b",
        r"\bsanity\b",
        r"\bis indeed\b|\bindeed (?:gives|equals|is|makes)\b",
        r"\b(?:go|going|look|looking) over (?:it|this|that|the|my)\b",
        r"\bplug(?:ging)? (?:it |this |that )?(?:back )?in\b",
        r"\bas (?:claimed|expected)\b",
        r"\b(?:that's|that is|this is|it's|it is) (?:correct|right)\b",
        r"\bmatches (?:the )?(?:target|goal|\d+)\b",
    ],
    "backtracking": [
        r"\b(?:scrap|discard|abandon|undo|rewind|revert|retract)\w*\b",
        r"\b(?:from scratch|fresh start|begin again|start(?:ing)? (?:again|afresh|fresh))\b",
        r"\bwrong (?:track|turn|path|direction|approach|idea)\b",
        r"\b(?:another|different|new|other) (?:angle|approach|way|strategy|idea|combination|pair|option|route|tack)\b",
        r"\b(?:goes|go|leads|led|going|get(?:s|ting)?) nowhere\b",
        r"\b(?:that|this|it) miss(?:es|ed)\b|\bthat's a miss\b",
        r"^\W*(?:wait|nope|no good|not (?:it|quite|right))\b",
        r"\b(?:reconsider|rethink|re-think)\b",
        r"\balternatively\b|\binstead\b",
    ],
    "subgoal_setting": [
        r"\b(?:stepping[- ]stone|milestone|waypoint|intermediate)\b",
        r"\bplan\s*:|\b(?:my|the|a) plan\b|\bplan (?:is|to)\b",
        r"\bwould (?:help|be useful|be handy|be nice) to\b|\bit would help\b",
        r"\bfirst,? (?:get|make|reach|build|produce|form)\b",
        r"\b(?:get|reach|make|produce|build) \d+ first\b",
        r"\b(?:break|split|divide) (?:it|this|the problem|the task) (?:down|into|up)\b",
        r"\bsmaller (?:problem|step|goal|target)s?\b",
    ],
    "backward_chaining": [
        r"\breverse[- ]engineer\w*|\bin reverse\b|\bunwind\w*",
        r"\b(?:last|final) (?:step|operation|move) (?:would|could|must|should|might) be\b",
        r"\bwhat (?:could|would|should|might) the (?:last|final) (?:step|operation|move)\b",
        r"\b(?:think|thinking) about the (?:last|final) (?:step|operation|move)\b",
        r"\b(?:has|have|needs?) to (?:come|be made|be formed|be produced) (?:out of|from)\b",
        r"\b(?:must|should|has to) (?:produce|yield|make|give) \d+\b",  # not "I need to make 75 from ..."
        r"\bif \d+ = \d+ [-+*/×÷x] \d+\b",
        rf"\b(?:since|as|because) {_N}\s*=\s*{_N}\s*{_OP}\s*{_N},? (?:I|we) (?:would |will )?need\b",
        rf"\b{_N} (?:=|is|equals) {_N} {_OP} {_N},? (?:which means|meaning|so|then)\b",
    ],
}
CUES: dict[str, list[str]] = {b: CUES_V1[b] + _ADDED[b] for b in CUES_V1}


_RELATION = re.compile(rf"\b(?:{_N}|it)\s*(?:=|is|equals)\s*{_N}\s*{_OP}\s*{_N}", re.IGNORECASE)
_LINKS = {"backward_chaining": _RELATION}  # a run of these counts once per sentence with a relation
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    """Split on sentence ends followed by whitespace, and on newlines (``12.5`` stays whole)."""
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def make_counter(cues: dict[str, list[str]]) -> Callable[[str], dict[str, int]]:
    """A counter like :func:`count_behaviors_local` over other cue lists (for experiments)."""
    compiled = {b: re.compile("|".join(f"(?:{p})" for p in pats), re.IGNORECASE) for b, pats in cues.items()}

    def count(text: str) -> dict[str, int]:
        sents = sentences(text)
        out = {}
        for b in BEHAVIORS:
            rx, links, n = compiled[b], _LINKS.get(b), 0
            run: list[str] = []
            for s in sents + [""]:  # the empty sentence closes the last run
                if s and rx.search(s):
                    run.append(s)
                    continue
                if run:
                    n += max(1, sum(links.search(x) is not None for x in run)) if links else 1
                run = []
            out[b] = n
        return out

    return count


def count_behaviors_local(text: str) -> dict[str, int]:
    """Count each behaviour in ``text``: sentences matching its cues (runs merged, see above)."""
    return _count(text)


_count = make_counter(CUES)


# ----------------------------------------------------------------------------- evaluation


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r else 0.0


def evaluate_classifier(episodes: Iterable[Episode], predict: Callable[[str], dict[str, float]]) -> dict:
    """Precision and recall of ``predict`` (text → counts) against ``Episode.behaviors``.

    Count level, per behaviour and summed over episodes: TP = min(pred, true), FP = max(pred −
    true, 0), FN = max(true − pred, 0); precision = TP/(TP+FP), recall = TP/(TP+FN). Presence
    level: the same with each episode reduced to "shows it / does not". ``micro`` pools the count-level
    TP/FP/FN of all behaviours. A ratio with a zero denominator is ``None``. Episodes without
    true counts (``behaviors is None``) are skipped and counted in ``skipped``. The text scored is
    the assistant's completion.
    """
    zero = {"tp": 0.0, "fp": 0.0, "fn": 0.0, "ptp": 0, "pfp": 0, "pfn": 0, "true": 0.0, "pred": 0.0}
    stats = {b: dict(zero) for b in BEHAVIORS}
    n = skipped = 0
    for ep in episodes:
        if ep.behaviors is None:
            skipped += 1
            continue
        n += 1
        pred = predict(ep.completion)
        for b in BEHAVIORS:
            t, p, s = float(ep.behaviors.get(b, 0)), float(pred.get(b, 0)), stats[b]
            s["tp"] += min(p, t)
            s["fp"] += max(p - t, 0.0)
            s["fn"] += max(t - p, 0.0)
            s["true"] += t
            s["pred"] += p
            s["ptp"] += (p > 0) and (t > 0)
            s["pfp"] += (p > 0) and not (t > 0)
            s["pfn"] += (t > 0) and not (p > 0)
    per = {}
    for b, s in stats.items():
        precision, recall = _ratio(s["tp"], s["tp"] + s["fp"]), _ratio(s["tp"], s["tp"] + s["fn"])
        per[b] = {
            "precision": precision, "recall": recall, "f1": _f1(precision, recall),
            "tp": s["tp"], "fp": s["fp"], "fn": s["fn"], "true_total": s["true"], "pred_total": s["pred"],
            "presence_precision": _ratio(s["ptp"], s["ptp"] + s["pfp"]),
            "presence_recall": _ratio(s["ptp"], s["ptp"] + s["pfn"]),
        }
    tp, fp, fn = (sum(s[k] for s in stats.values()) for k in ("tp", "fp", "fn"))
    mp, mr = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"n": n, "skipped": skipped, "per_behavior": per, "micro": {"precision": mp, "recall": mr, "f1": _f1(mp, mr)}}


def evaluate_local_classifier(episodes: Iterable[Episode]) -> dict:
    """:func:`evaluate_classifier` with :func:`count_behaviors_local` (see the honesty note above)."""
    return evaluate_classifier(episodes, count_behaviors_local)
