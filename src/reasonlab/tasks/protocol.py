"""Prompt/answer styles. ``answer`` (the default) is each task's own ``<answer>…</answer>`` style;
``r1ci`` is R1-Code-Interpreter's protocol (arXiv 2505.21668):

- the model may write one ```` ```python ```` block per turn that prints its results; the platform
  runs it and appends ``Code Execution Results: …`` (the agent loop formats tool output that way
  for a task with ``tool_output_style = "r1ci"``); at most :data:`MAX_CODE_CALLS` (8) code calls;
- the final answer comes as ``<<<answer>>>``;
- reward = 1 if correct, plus the turn-format term: +0.1 when every turn is well formed (at most one
  code block per turn, closed; a final turn with ``<<<…>>>`` and no code) and the episode used at most
  :data:`MAX_TURNS` (6) turns; −0.1 otherwise.

Turns are read from the assistant's own text (one per executed code block, plus the final turn), so
the reward needs nothing from the agent loop beyond the text it already scores. The wrapped task's
scorer decides correctness: the ``<<<…>>>`` content is handed to it as ``<answer>…</answer>``.
"""

from __future__ import annotations

import re
from typing import Any

from reasonlab.episode import Problem, Score

PROTOCOLS = ("answer", "r1ci")
MAX_CODE_CALLS = 8
MAX_TURNS = 6
FORMAT_REWARD = 0.1
R1CI_SYSTEM = (
    "You are a helpful assistant. Reason step by step. You may write Python code to compute, search or check: "
    "write one ```python block at a time that prints what you need, then stop; the code is executed and its "
    "output is returned to you after 'Code Execution Results:'. You may run code at most 8 times. When you are "
    "done, give the final answer in the form <<<answer>>>, e.g. <<<42>>>."
)
_TAG = re.compile(r"<answer>(.*?)</answer>(\s*tags?\b)?", re.S)


def _rewrite_tag(m: re.Match) -> str:
    """``<answer> </answer> tags`` → ``the form <<<answer>>>``; ``<answer>x</answer>`` → ``<<<x>>>``."""
    body = m.group(1).strip()
    return "the form <<<answer>>>" if not body else f"<<<{body}>>>{m.group(2) or ''}"


def extract_triple(text: str, max_chars: int = 200_000) -> str | None:
    """Content of the last ``<<<…>>>`` (linear time), or None."""
    text = text[-max_chars:]
    close = text.rfind(">>>")
    if close < 0:
        return None
    open_ = text.rfind("<<<", 0, close)
    if open_ < 0:
        return None
    return text[open_ + 3 : close].strip()


def turn_format(text: str) -> dict[str, Any]:
    """Turns and well-formedness of an R1-CI response (see the module docstring)."""
    parts = text.split("```python")
    closed = sum(1 for p in parts[1:] if "```" in p)
    unclosed = len(parts) - 1 - closed
    turns = closed + 1
    final = parts[-1].split("```")[-1] if closed else parts[-1]
    two_in_a_turn = any(p.count("```") > 1 for p in parts[1:])  # a second fence opened in the same turn
    ok = unclosed == 0 and not two_in_a_turn and extract_triple(final) is not None
    return {"turns": turns, "well_formed": ok, "within_turns": turns <= MAX_TURNS}


class R1CIProtocol:
    """Any task, asked and scored in R1-Code-Interpreter's protocol."""

    tool_output_style = "r1ci"
    max_code_calls = MAX_CODE_CALLS

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.description = f"{inner.description} (R1-CI protocol)"

    def __getattr__(self, item: str) -> Any:  # members (suites), solver_code, … of the wrapped task
        return getattr(self.inner, item)

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        return self.inner.problems(split, n, seed=seed)

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]:
        msgs = [dict(m) for m in self.inner.messages(problem, None)]
        msgs = [m for m in msgs if m["role"] != "system"]
        for m in msgs:
            if m["role"] == "user":
                m["content"] = _TAG.sub(_rewrite_tag, m["content"])  # one pass: replacements are not rescanned
        return [{"role": "system", "content": R1CI_SYSTEM}, *msgs]

    def score(self, problem: Problem, text: str) -> Score:
        fmt = turn_format(text)
        ans = extract_triple(text)
        term = FORMAT_REWARD if fmt["well_formed"] and fmt["within_turns"] else -FORMAT_REWARD
        details = {**fmt, "format_term": term}
        if ans is None:
            return Score(term, False, False, None, {**details, "error": "no <<<answer>>>"})
        inner = self.inner.score(problem, f"<answer>{ans}</answer>")
        reward = (1.0 if inner.correct else 0.0) + term
        return Score(reward, inner.correct, fmt["well_formed"], inner.answer, {**inner.details, **details})


def wrap_protocol(task: Any, protocol: str) -> Any:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    return R1CIProtocol(task) if protocol == "r1ci" else task
