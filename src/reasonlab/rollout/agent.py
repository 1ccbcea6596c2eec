"""The multi-turn agent loop: the model reasons in text and may run Python any number of times.

    generate ─► stopped at a closing ``` of a ```python block? ─► run it in the episode's sandbox
       ▲        session ─► append its output as a ```output block (mask 0) ─┐
       └────────────────────────────────────────────────────────────────────┘
    until EOS, the token budget, the turn limit or the code-call limit.

All live episodes advance together: each round sends every unfinished episode's full token
sequence to the backend as one batch (the backend knows nothing of tools), then runs every code
block of the round concurrently through the sandbox's async API. The loop knows tools and stop
rules, not models (ARCHITECTURE.md, "Boundaries").

The Episode keeps the exact token sequence the policy saw: prompt tokens and tool-output tokens
have mask 0, generated tokens mask 1, so trainers can mask interpreter output out of the loss.
The reward is computed on the assistant's text only: text printed by code cannot forge an answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from reasonlab.episode import Episode, Problem
from reasonlab.rollout.base import SamplingParams
from reasonlab.rollout.chat import encode_chat

CODE_OPEN = "```python"
FENCE = "```"
# A closing fence is "```" at the start of a line, followed by a newline; the opening fence
# "```python" never contains "```\n", so this stop string only fires on closing fences.
STOP = "\n```\n"



@dataclass
class AgentConfig:
    max_turns: int = 6  # generation rounds per episode
    max_code_calls: int = 4
    max_total_tokens: int = 1024  # generated + tool-output tokens after the prompt
    max_output_chars: int = 1024  # interpreter output shown to the model (head and tail kept)
    output_style: str = "fence"  # "fence": ```output block; "r1ci": "Code Execution Results: ..."


@dataclass
class _State:
    problem: Problem
    sample_index: int
    messages: list[dict[str, str]]
    tokens: list[int]
    mask: list[int]
    logprobs: list[float]
    prompt_len: int
    assistant_parts: list[str] = field(default_factory=list)
    pending: str = ""  # assistant text since the last tool output
    stats: dict[str, Any] = field(default_factory=lambda: {
        "turns": 0, "code_calls": 0, "code_errors": 0, "code_timeouts": 0,
        "generated_tokens": 0, "tool_tokens": 0, "finish_reason": None,
    })
    session: Any = None
    code: str | None = None

    @property
    def used(self) -> int:
        return len(self.tokens) - self.prompt_len

    def flush_assistant(self) -> None:
        if self.pending:
            self.messages.append({"role": "assistant", "content": self.pending})
            self.assistant_parts.append(self.pending)
            self.pending = ""


def extract_code(segment: str) -> str | None:
    """The code of the last ```python block closed at the end of ``segment``, if any."""
    body = segment.rstrip()
    if not body.endswith(FENCE):
        return None
    body = body[: -len(FENCE)]
    start = body.rfind(CODE_OPEN)
    if start < 0 or FENCE in body[start + len(CODE_OPEN):]:
        return None  # the closing fence belongs to some other block
    return body[start + len(CODE_OPEN):].lstrip("\n").rstrip() + "\n"


def format_output(result: Any, max_chars: int, style: str = "fence") -> str:
    """Interpreter result → the ```output block shown to the model (truncated: head + tail);
    ``style="r1ci"``: R1-Code-Interpreter's ``Code Execution Results:`` block instead."""
    text = (result.stdout or "") + (result.stderr or "")
    if result.timed_out:
        text += f"\n[timed out after {getattr(result, 'duration_s', 0):.1f}s]"
    elif result.exit_code not in (0, None) and not result.stderr:
        text += f"\n[exit code {result.exit_code}{': ' + result.error if result.error else ''}]"
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + f"\n...[{len(text) - max_chars} characters cut]...\n" + text[-half:]
    if style == "r1ci":
        return f"Code Execution Results: {text.rstrip()}\n"
    return f"```output\n{text.rstrip()}\n```\n"


def run_agent(
    backend: Any,
    task: Any,
    problems: list[Problem],
    params: SamplingParams,
    *,
    sandbox: Any = None,
    config: AgentConfig | None = None,
    tools: list[str] | None = ("python",),  # type: ignore[assignment]
    progress: Callable[[int], None] | None = None,
) -> list[list[Episode]]:
    """``params.n`` episodes per problem. Without ``sandbox`` or tools, a single-turn rollout."""
    cfg = config or AgentConfig()
    if getattr(task, "max_code_calls", None) is not None:  # a protocol's limits (R1-CI: 8 code calls)
        cfg = replace(cfg, max_code_calls=task.max_code_calls, max_turns=max(cfg.max_turns, task.max_code_calls + 1),
                      output_style=getattr(task, "tool_output_style", cfg.output_style))
    tools = list(tools or [])
    use_code = "python" in tools and sandbox is not None
    tok = backend.tokenizer
    states: list[_State] = []
    for p in problems:
        msgs = task.messages(p, tools=tools or None)
        prompt = encode_chat(tok, msgs)
        for j in range(params.n):
            states.append(_State(p, j, [dict(m) for m in msgs], list(prompt), [0] * len(prompt),
                                 [0.0] * len(prompt), len(prompt)))
    try:
        _loop(backend, states, params, cfg, sandbox if use_code else None, progress)
    finally:
        for s in states:
            if s.session is not None:
                s.session.close()
    out: list[list[Episode]] = []
    for i, p in enumerate(problems):
        group = states[i * params.n : (i + 1) * params.n]
        out.append([_to_episode(task, s) for s in group])
    return out


def _loop(backend, states, params, cfg, sandbox, progress) -> None:
    live = list(states)
    rnd = 0
    while live:
        budget = [cfg.max_total_tokens - s.used for s in live]
        step = SamplingParams(
            n=1, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            max_new_tokens=max(1, min(params.max_new_tokens, max(budget))),
            stop=[STOP] if sandbox is not None else list(params.stop),
            seed=None if params.seed is None else params.seed + 7919 * rnd,
        )
        results = backend.generate([s.tokens for s in live], step)
        rnd += 1
        to_run: list[_State] = []
        still: list[_State] = []
        for s, (sample,) in zip(live, results):
            room = cfg.max_total_tokens - s.used
            ids, lps = sample.token_ids[:room], sample.logprobs[:room]
            text = sample.text if len(ids) == len(sample.token_ids) else tok_decode(backend, ids)
            s.tokens += ids
            s.mask += [1] * len(ids)
            s.logprobs += lps
            s.pending += text
            s.stats["turns"] += 1
            s.stats["generated_tokens"] += len(ids)
            code = extract_code(s.pending) if sample.finish_reason == "stop" and sandbox is not None else None
            if sample.finish_reason == "eos":
                s.stats["finish_reason"] = "eos"
            elif s.used >= cfg.max_total_tokens or len(ids) < len(sample.token_ids):
                s.stats["finish_reason"] = "length"
            elif sample.finish_reason == "length":
                s.stats["finish_reason"] = "length"
            elif s.stats["turns"] >= cfg.max_turns:
                s.stats["finish_reason"] = "max_turns"
            elif code is not None and s.stats["code_calls"] >= cfg.max_code_calls:
                s.stats["finish_reason"] = "max_code_calls"
            elif code is not None:
                s.code = code
                to_run.append(s)
                continue
            elif sandbox is None:  # a caller's stop string ended a single-turn rollout
                s.stats["finish_reason"] = "stop"
            else:  # stopped on a fence that closed no python block: keep generating
                still.append(s)
                continue
            s.flush_assistant()
            if progress:
                progress(1)
        if to_run:
            _execute(sandbox, to_run, cfg, backend)
            for s in to_run:
                if s.used >= cfg.max_total_tokens:
                    s.stats["finish_reason"] = "length"
                    s.flush_assistant()
                    if progress:
                        progress(1)
                else:
                    still.append(s)
        live = still


def tok_decode(backend: Any, ids: list[int]) -> str:
    return backend.tokenizer.decode(ids, skip_special_tokens=False)


def _execute(sandbox: Any, states: list[_State], cfg: AgentConfig, backend: Any) -> None:
    async def run_all():
        for s in states:
            if s.session is None:
                s.session = sandbox.session()
        return await asyncio.gather(*(s.session.arun(s.code) for s in states))

    results = asyncio.run(run_all())
    tok = backend.tokenizer
    for s, r in zip(states, results):
        s.stats["code_calls"] += 1
        s.stats["code_errors"] += int(r.exit_code != 0 or r.timed_out)
        s.stats["code_timeouts"] += int(r.timed_out)
        block = format_output(r, cfg.max_output_chars, cfg.output_style)
        ids = tok(block, add_special_tokens=False)["input_ids"]
        ids = ids[: max(0, cfg.max_total_tokens - s.used)]
        s.flush_assistant()
        s.messages.append({"role": "tool", "content": block})
        s.tokens += ids
        s.mask += [0] * len(ids)
        s.logprobs += [0.0] * len(ids)
        s.stats["tool_tokens"] += len(ids)
        s.code = None


def _to_episode(task: Any, s: _State) -> Episode:
    s.flush_assistant()
    score = task.score(s.problem, "".join(s.assistant_parts))
    return Episode(
        task=s.problem.task,
        problem_id=s.problem.id,
        sample_index=s.sample_index,
        messages=s.messages,
        tokens=s.tokens,
        mask=s.mask,
        logprobs=[round(x, 5) for x in s.logprobs],
        reward=score.reward,
        correct=score.correct,
        format_ok=score.format_ok,
        answer=score.answer,
        score_details=score.details,
        stats={**s.stats, "prompt_tokens": s.prompt_len},
    )
