"""Sentence templates for the traces: one list per narrated event, picked by a seeded RNG.

Two families with the same events and slots:

- ``STANDARD``: the training traces. The local behaviour classifier
  (:mod:`reasonlab.analysis.behaviors`) was written while looking at these, so measuring it on them
  says little beyond "the regexes match the templates".
- ``PARAPHRASE_A``: written after the classifier's first draft of cues was frozen. That draft
  found almost nothing in it (see docs/priming.md), so cues were added while looking at it: it is
  no longer held out for the current classifier.
- ``PARAPHRASE_B``: written after the current cues were frozen and never used to tune them, so
  precision/recall on it says how the cues carry to wording they were not written for
  (``generate_traces(..., paraphrase=True)``).

Behaviour events (each emitted once per counted behaviour): ``backtrack_restart``,
``backtrack_partial`` (backtracking); ``subgoal`` (subgoal setting); ``backward`` (backward
chaining); ``check_step``, ``check_backward``, ``verify_final`` (verification). Every other event is
neutral narration and must not read as a behaviour.

Slots: ``{a} {op} {b} {v}`` a step; ``{rest}``/``{state}``/``{numbers}`` number lists; ``{goal}``
the current goal; ``{target}``; ``{tries}`` "54 + 21 = 75, 54 - 21 = 33"; ``{values}`` "75, 33";
``{relation}`` "3 * 25"; ``{need}``; ``{inverse}`` "54 + 44 = 98"; ``{chain}`` every step of the
answer; ``{reason}`` why a subgoal value is useful (from the ``reason_*`` lists); ``{expr}``.
"""

from __future__ import annotations

STANDARD: dict[str, list[str]] = {
    # ------------------------------------------------------------------ neutral
    "intro": [
        "I need to reach {target} using {numbers}, each exactly once.",
        "The numbers are {numbers} and the target is {target}.",
        "Goal: make {target} from {numbers}.",
        "I have {numbers} and want {target}.",
    ],
    "step": [
        "Let me try {a} {op} {b} = {v}. That leaves {rest}.",
        "{a} {op} {b} = {v}, so now I have {rest}.",
        "Try {a} {op} {b} = {v}; remaining: {rest}.",
        "Combining {a} and {b}: {a} {op} {b} = {v}. Now the numbers are {rest}.",
        "What about {a} {op} {b}? That gives {v}, leaving {rest}.",
    ],
    "leaf_fail": [
        "With {a} and {b}: {tries}. None of these is {goal}.",
        "{tries}. No way to get {goal} from {a} and {b}.",
        "From {a} and {b} I can get {values}, but not {goal}.",
        "{tries}; {goal} is not among them.",
    ],
    "leaf_hit": [
        "{a} {op} {b} = {goal}. That's it!",
        "And {a} {op} {b} = {goal}, exactly what I need.",
        "Then {a} {op} {b} = {goal}. Got it.",
        "{a} {op} {b} gives {goal}!",
    ],
    "assemble": [
        "Putting it together: {expr} = {target}.",
        "So the full expression is {expr} = {target}.",
        "That means {expr} = {target}.",
    ],
    "conclude": [
        "So the answer is {expr}.",
        "Final answer: {expr}.",
        "The expression is {expr}.",
    ],
    # ------------------------------------------------------------------ backtracking
    "backtrack_restart": [
        "That doesn't work. Let me try a different approach.",
        "This path fails, so let me start over with {numbers}.",
        "Dead end. I'll go back to the original numbers and try something else.",
        "That approach doesn't work, let's try another combination.",
        "No luck here. Let me backtrack and try a different first step.",
    ],
    "backtrack_partial": [
        "That doesn't work. Let me go back to {state} and try a different step.",
        "Dead end. Going back to {state} to try another operation.",
        "This doesn't reach the goal, so I'll step back to {state} and try something else.",
    ],
    # ------------------------------------------------------------------ subgoal setting
    "subgoal": [
        "First, I'll aim for {v}, {reason}.",
        "Let me set an intermediate goal of {v}, {reason}.",
        "Subgoal: get {v} first, {reason}.",
        "I'll try to get to {v} first, {reason}.",
    ],
    "reason_equal": ["which is the value I need", "since that is {goal} itself"],
    "reason_near": ["which is close to {goal}", "since it is near {goal}"],
    "reason_factor": ["since {goal} is a multiple of {v}", "because {v} divides {goal}"],
    "reason_multiple": ["since {v} is a multiple of {goal}", "because {goal} divides {v}"],
    "reason_other": ["to cut down the numbers", "and see what the rest can do with it"],
    # ------------------------------------------------------------------ backward chaining
    "backward": [
        "Working backwards: {goal} = {relation}, so I need {need} from {rest}.",
        "Let me work backwards from {goal}. Since {goal} = {relation}, I need to make {need} with {rest}.",
        "Starting from {goal}: {goal} = {relation}, so I need {need} from {rest}.",
        "To get {goal}, I could use {goal} = {relation}; then I need {need} from {rest}.",
    ],
    # ------------------------------------------------------------------ verification
    "check_step": [
        "Let me check: {inverse}, so {a} {op} {b} = {v} is right.",
        "Verifying: {a} {op} {b} = {v}. Correct.",
        "Let me double-check that: {inverse}. Yes.",
        "Quick check: {inverse}, confirmed.",
    ],
    "check_backward": [
        "Let me check: {relation} = {goal}. Yes.",
        "Verifying that relation: {relation} = {goal}. Correct.",
    ],
    "verify_final": [
        "Let me verify: {chain}. That's {target}, and each number is used exactly once.",
        "Verification: {chain}. All numbers used once, result {target}. Correct.",
        "Let me double-check the whole thing: {chain}. Yes, it equals {target}.",
        "Checking the answer: {chain}. It works.",
    ],
    "give_up": [
        "I can't find a way to make {target} exactly. The closest I found is {expr}, which gives {v}.",
        "Nothing reaches {target}. The nearest result was {v}, from {expr}.",
        "I couldn't get {target}. I'll go with the closest one, {expr} = {v}.",
    ],
    "verify_miss": [
        "Let me verify: {chain}. That's {v}, not {target}, but it is the closest.",
        "Checking the answer: {chain}. It gives {v} instead of {target}.",
        "Let me double-check: {chain}. So {v}, close to {target}.",
    ],
}

BEHAVIOR_OF_EVENT = {
    "backtrack_restart": "backtracking",
    "backtrack_partial": "backtracking",
    "subgoal": "subgoal_setting",
    "backward": "backward_chaining",
    "check_step": "verification",
    "check_backward": "verification",
    "verify_final": "verification",
    "verify_miss": "verification",
}

# Written after the classifier's first draft (CUES_V1) was frozen; the second draft's added cues
# were then tuned on it, so it is *not* held out for the current classifier (see PARAPHRASE_B).
PARAPHRASE_A: dict[str, list[str]] = {
    # ------------------------------------------------------------------ neutral
    "intro": [
        "Target {target}; available numbers {numbers}.",
        "We have to hit {target} with {numbers}, using each one once.",
        "Numbers on the table: {numbers}. Wanted: {target}.",
    ],
    "step": [
        "Suppose I compute {a} {op} {b}, which is {v}; the pool becomes {rest}.",
        "{a} {op} {b} makes {v}, and the remaining pool is {rest}.",
        "How about pairing {a} with {b}: {a} {op} {b} is {v}. Pool: {rest}.",
        "Taking {a} {op} {b} = {v} leaves {rest} to work with.",
    ],
    "leaf_fail": [
        "Only {a} and {b} remain: {tries}. Nothing equals {goal}.",
        "The last pair {a}, {b} yields {values}; {goal} is out of reach.",
        "{tries}. Missing {goal} every time.",
    ],
    "leaf_hit": [
        "Finally {a} {op} {b} = {goal}, bingo.",
        "{a} {op} {b} comes out to exactly {goal}.",
        "Look: {a} {op} {b} = {goal}.",
    ],
    "assemble": [
        "Substituting back: {expr} = {target}.",
        "Assembled, that is {expr} = {target}.",
    ],
    "conclude": [
        "Answer: {expr}.",
        "I'll go with {expr}.",
        "That gives the expression {expr}.",
    ],
    # ------------------------------------------------------------------ backtracking
    "backtrack_restart": [
        "Hmm, that misses. Scrap it and begin again from {numbers}.",
        "Wrong track. Fresh start with the original numbers.",
        "This line goes nowhere; abandoning it and returning to {numbers}.",
        "Not it. Another angle, from scratch.",
        "Nope, that's a miss. Discard everything and re-pick the first pair.",
    ],
    "backtrack_partial": [
        "Hmm, that misses. Undo the last move and return to {state}, picking a different operation.",
        "Not quite. Rewind to {state} and choose another pair.",
        "Wrong turn; reverting to {state}.",
    ],
    # ------------------------------------------------------------------ subgoal setting
    "subgoal": [
        "A handy stepping stone would be {v}, {reason}.",
        "Milestone: reach {v}, {reason}.",
        "Plan: produce {v} as a waypoint, {reason}.",
        "It would help to have {v} on hand, {reason}.",
    ],
    "reason_equal": ["exactly the number required", "identical to {goal}"],
    "reason_near": ["being only a little off from {goal}", "since {goal} is within reach from there"],
    "reason_factor": ["because {v} goes into {goal} evenly", "as {goal} is {v} times something"],
    "reason_multiple": ["since {goal} goes into {v} evenly", "as {v} is a whole multiple of {goal}"],
    "reason_other": ["to shrink the pool", "to merge two numbers into one"],
    # ------------------------------------------------------------------ backward chaining
    "backward": [
        "Reverse-engineering {goal}: it equals {relation}, which means {need} has to come out of {rest}.",
        "What could the last operation be? If {goal} = {relation}, then {rest} must produce {need}.",
        "Think about the final step: {goal} is {relation}. That leaves the job of making {need} from {rest}.",
        "Unwinding from {goal}: {goal} = {relation}, so {rest} should yield {need}.",
    ],
    # ------------------------------------------------------------------ verification
    "check_step": [
        "Sanity check on that: {inverse}, consistent.",
        "Recomputing to be safe: {a} {op} {b} is indeed {v}.",
        "Confirming the arithmetic: {inverse}. Good.",
    ],
    "check_backward": [
        "Confirming: {relation} is indeed {goal}.",
        "Quick re-computation: {relation} gives {goal}, as claimed.",
    ],
    "verify_final": [
        "Going over it once more: {chain}. Matches {target}, and nothing was reused.",
        "Re-running the arithmetic: {chain}. Good, {target}.",
        "Recomputing every step: {chain}. That is {target}, with each number appearing once.",
        "Confirming the result: {chain}, which equals {target}.",
    ],
    "give_up": [
        "No combination lands on {target}. Best so far: {expr}, which is {v}.",
        "{target} seems out of reach; {expr} comes nearest at {v}.",
    ],
    "verify_miss": [
        "Re-running the arithmetic: {chain}. That is {v}, short of {target}.",
        "Recomputing every step: {chain}. It comes to {v}, not {target}.",
    ],
}

# Written after the current cues (CUES) were frozen and never used to tune them: the held-out family.
PARAPHRASE_B: dict[str, list[str]] = {
    # ------------------------------------------------------------------ neutral
    "intro": [
        "Numbers: {numbers}. Target: {target}. Each number once.",
        "So I've got {numbers} and I'm supposed to end up at {target}.",
        "Okay, {target} from {numbers}.",
    ],
    "step": [
        "{a} {op} {b} → {v}. Left with {rest}.",
        "Okay so {a} {op} {b} is {v}, which leaves me {rest}.",
        "If I do {a} {op} {b} I get {v}, and I still have {rest}.",
    ],
    "leaf_fail": [
        "{tries}. None hit {goal}.",
        "Out of {a} and {b} the options are {values}, no {goal} there.",
        "{a} and {b}: {tries}. Not {goal}.",
    ],
    "leaf_hit": [
        "{a} {op} {b} = {goal}. Yes!",
        "Oh nice, {a} {op} {b} is {goal}.",
        "{a} {op} {b} → {goal}, there we go.",
    ],
    "assemble": [
        "Writing it out in full: {expr} = {target}.",
        "All together: {expr} = {target}.",
    ],
    "conclude": [
        "Final: {expr}.",
        "So: {expr}.",
    ],
    # ------------------------------------------------------------------ backtracking
    "backtrack_restart": [
        "Hmm, no. Okay, forget that whole line and go again from {numbers}.",
        "That's not getting me there. Let me think about it differently.",
        "Ugh, no. Back to square one.",
        "Nah, this won't lead to the target. Different plan.",
        "Okay that failed. Rewinding all the way to {numbers}.",
    ],
    "backtrack_partial": [
        "No. Keep what I had up to {state} and change the next move.",
        "Hmm, close but no. Back up one step, to {state}, and pick something else.",
        "That last bit was the problem; return to {state} and do it another way.",
    ],
    # ------------------------------------------------------------------ subgoal setting
    "subgoal": [
        "Idea: get a {v} out of this first ({reason}).",
        "Useful target along the way: {v}, {reason}.",
        "I want to build {v} before anything else, {reason}.",
        "Let's shoot for {v} on the way, {reason}.",
    ],
    "reason_equal": ["that's literally what we need", "same as {goal}"],
    "reason_near": ["it's just a few away from {goal}", "{goal} is right next to it"],
    "reason_factor": ["{v} fits into {goal} a whole number of times", "{goal} divided by {v} is a whole number"],
    "reason_multiple": ["{v} divided by {goal} is a whole number", "{goal} fits into {v} evenly"],
    "reason_other": ["fewer numbers to juggle", "just to simplify"],
    # ------------------------------------------------------------------ backward chaining
    "backward": [
        "Flip it around: {goal} = {relation}. Then I'd need a {need} from {rest}.",
        "Going from the answer side: {goal} is {relation}, which leaves {need} to be built out of {rest}.",
        "Start at the end: {goal} = {relation}. Need {need} from {rest}.",
    ],
    # ------------------------------------------------------------------ verification
    "check_step": [
        "Double-checking that one: {inverse}, fine.",
        "Make sure: {a} {op} {b}... yes, {v}.",
        "Is that right? {inverse}, yep.",
    ],
    "check_backward": [
        "Is {relation} really {goal}? Yes.",
        "{relation}, that's {goal}, good.",
    ],
    "verify_final": [
        "Let me just go through it again: {chain}. Yep, {target}.",
        "Does it work? {chain}. Yes, {target}, every number once.",
        "Running through it: {chain}. Good.",
        "Testing it: {chain}, so it really is {target}.",
    ],
    "give_up": [
        "Nothing I tried hits {target}. Going with {expr}, which makes {v}.",
        "Out of ideas for {target}; {expr} gets {v}.",
    ],
    "verify_miss": [
        "Let me just go through it again: {chain}. Hmm, {v}, not {target}.",
        "Does it work? {chain}. No, {v}, not {target}.",
    ],
}

# For small model organisms (reasonlab.organisms): one template per event, every list in brackets, and
# each restart restating the numbers *and* the target. A 1-M-parameter model copies from the line
# just written far better than from a prompt 200 tokens back, and varied wording costs it capacity
# it needs for the arithmetic (session 4: the primed organism lost the target and the numbers in
# STANDARD traces and solved nothing). Same events and slots as STANDARD, wording drawn from it, so the
# local classifier reads it like STANDARD (tests/test_priming.py checks the counts).
ORGANISM: dict[str, list[str]] = {
    "intro": ["I have {numbers} and want {target}."],
    "step": ["{a} {op} {b} = {v}, so now I have {rest}."],
    "leaf_fail": ["From {a} and {b} I can get {values}, but not {goal}."],
    "leaf_hit": ["And {a} {op} {b} = {goal}, exactly what I need."],
    "assemble": ["So the full expression is {expr} = {target}."],
    "conclude": ["So the answer is {expr}."],
    "backtrack_restart": ["This path fails, so let me start over. I have {numbers} and want {target}."],
    "backtrack_partial": ["That doesn't work. Let me go back to {state} and try a different step."],
    "subgoal": ["Let me set an intermediate goal of {v}, {reason}."],
    "reason_equal": ["since that is {goal} itself"],
    "reason_near": ["since it is near {goal}"],
    "reason_factor": ["because {v} divides {goal}"],
    "reason_multiple": ["because {goal} divides {v}"],
    "reason_other": ["to cut down the numbers"],
    "backward": ["Working backwards: {goal} = {relation}, so I need {need} from {rest}."],
    "check_step": ["Let me check: {inverse}, so {a} {op} {b} = {v} is right."],
    "check_backward": ["Let me check: {relation} = {goal}. Yes."],
    "verify_final": ["Let me verify: {chain}. That's {target}, and each number is used exactly once."],
    "give_up": ["I can't find a way to make {target} exactly. The closest I found is {expr}, which gives {v}."],
    "verify_miss": ["Let me verify: {chain}. That's {v}, not {target}, but it is the closest."],
    "list_style": ["brackets"],
}

# ``organism`` with each operation of a failed leaf check written as a fact, ``10 - 7 = 3``, the layout
# the organisms' pretraining corpus states arithmetic in (``From 10 and 7: 10 + 7 = 17, 10 - 7 = 3,
# 10 * 7 = 70, but not 33.``) instead of a bare list of values the model must compute without it
ORGANISM_FACTS: dict[str, list[str]] = {**ORGANISM, "leaf_fail": ["From {a} and {b}: {tries}, but not {goal}."]}

# ``organism_facts`` for the faithful search (``search="faithful"``): a leaf check that hits states every
# operation it tried before the hit too (``From 10 and 7: 10 + 7 = 17, 10 - 7 = 3, exactly what I need.``),
# so accepting is, like rejecting, a comparison of the value just written with the goal
ORGANISM_FAITHFUL: dict[str, list[str]] = {**ORGANISM_FACTS, "leaf_hit": ["From {a} and {b}: {tries}, exactly what I need."]}

# ``organism_faithful`` with each try's verdict beside its value, the goal restated every time
# (``From 10 and 7: 10 + 7 = 17 not 4, 10 - 7 = 3 not 4, 10 * 7 = 70 not 4, none is 4.``): the primed
# organism of ``organism_faithful`` accepted after a position, not a value (docs/priming.md, session 10)
ORGANISM_VERDICTS: dict[str, list[str]] = {
    **ORGANISM_FAITHFUL,
    "try_miss": ["{t} = {v} not {goal}"],
    "try_hit": ["{t} = {v} is {goal}"],
    "leaf_fail": ["From {a} and {b}: {tries}, none is {goal}."],
    "leaf_hit": ["From {a} and {b}: {tries}, exactly what I need."],
}

FAMILIES: dict[str, dict[str, list[str]]] = {
    "standard": STANDARD,
    "paraphrase_a": PARAPHRASE_A,
    "paraphrase_b": PARAPHRASE_B,
    "organism": ORGANISM,
    "organism_facts": ORGANISM_FACTS,
    "organism_faithful": ORGANISM_FAITHFUL,
    "organism_verdicts": ORGANISM_VERDICTS,
}
HELD_OUT = "paraphrase_b"  # what ``paraphrase=True`` means


def check_family(name: str, field: str = "trace_phrasing") -> str:
    """``name`` if it is a family of :data:`FAMILIES`, else a ValueError naming ``field`` and the choices."""
    if name not in FAMILIES:
        raise ValueError(f"unknown {field} {name!r}; allowed: {', '.join(FAMILIES)}")
    return name
