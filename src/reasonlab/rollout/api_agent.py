"""The agent loop against a chat API (any OpenAI-compatible endpoint), for trajectory collection.

A chat API cannot continue a half-written assistant message, so each interpreter round is a new
turn: the model writes until it closes a ```python block (the stop string), the block runs in the
episode's sandbox session, and its output comes back as the next user message (recorded in the
Episode as a ``tool`` message). Limits on turns and code calls are the local agent loop's.

Every request goes through :class:`OpenAIChat`, whose cache is keyed on the whole conversation and
the sample index, so re-running a collection replays finished turns from disk and pays only for
what is new. Episodes from an API carry messages, not tokens: training re-tokenizes them with the
trained model's tokenizer (:func:`reasonlab.train.sft.tokenize_episode`).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Callable

from reasonlab.episode import Episode, Problem

from reasonlab.rollout.agent import AgentConfig, extract_code, format_output
from reasonlab.rollout.openai_client import BudgetExceeded, OpenAIChat, RequestFailed

API_STOP = "\n```\n"


async def run_episode(
    client: OpenAIChat,
    task: Any,
    problem: Problem,
    sample_index: int,
    *,
    sandbox: Any = None,
    config: AgentConfig | None = None,
    params: dict[str, Any] | None = None,
) -> Episode:
    cfg = config or AgentConfig()
    if getattr(task, "max_code_calls", None) is not None:  # a protocol's limits (R1-CI: 8 code calls)
        cfg = replace(cfg, max_code_calls=task.max_code_calls, max_turns=max(cfg.max_turns, task.max_code_calls + 1),
                      output_style=getattr(task, "tool_output_style", cfg.output_style))
    tools = ["python"] if sandbox is not None else []
    messages = task.messages(problem, tools=tools or None)
    convo = [dict(m) for m in messages]  # what the API sees (tool output as user turns)
    record = [dict(m) for m in messages]  # what the Episode keeps
    stats = {"turns": 0, "code_calls": 0, "code_errors": 0, "code_timeouts": 0, "prompt_tokens": 0,
             "completion_tokens": 0, "generated_tokens": 0, "finish_reason": None, "cached_turns": 0}
    assistant_text: list[str] = []
    session = None
    p = dict(params or {})
    if sandbox is not None:
        p["stop"] = [API_STOP]
    try:
        while True:
            try:
                res = await client.achat(convo, sample_index=sample_index, **p)
            except (RequestFailed, BudgetExceeded) as e:
                stats["finish_reason"] = "budget" if isinstance(e, BudgetExceeded) else "error"
                stats["error"] = str(e)[:300]
                break
            stats["turns"] += 1
            stats["cached_turns"] += int(res.cached)
            stats["prompt_tokens"] += res.prompt_tokens
            stats["completion_tokens"] += res.completion_tokens
            stats["generated_tokens"] += res.completion_tokens
            text = res.text
            code = None
            if sandbox is not None and res.finish_reason == "stop":
                closed = text + "\n```\n"  # the API drops the stop string; put the fence back
                code = extract_code(closed)
                if code is not None:
                    text = closed
            convo.append({"role": "assistant", "content": text})
            record.append({"role": "assistant", "content": text})
            assistant_text.append(text)
            if code is None:
                stats["finish_reason"] = "length" if res.finish_reason == "length" else "eos"
                break
            if stats["code_calls"] >= cfg.max_code_calls:
                stats["finish_reason"] = "max_code_calls"
                break
            if stats["turns"] >= cfg.max_turns:
                stats["finish_reason"] = "max_turns"
                break
            if session is None:
                session = sandbox.session()
            r = await session.arun(code)
            stats["code_calls"] += 1
            stats["code_errors"] += int(r.exit_code != 0 or r.timed_out)
            stats["code_timeouts"] += int(r.timed_out)
            block = format_output(r, cfg.max_output_chars, cfg.output_style)
            convo.append({"role": "user", "content": block})
            record.append({"role": "tool", "content": block})
    finally:
        if session is not None:
            session.close()
    score = task.score(problem, "".join(assistant_text))
    return Episode(
        task=problem.task, problem_id=problem.id, sample_index=sample_index, messages=record,
        reward=score.reward, correct=score.correct, format_ok=score.format_ok, answer=score.answer,
        score_details=score.details, stats=stats, meta={"model": client.model, "endpoint": client.base_url},
    )


def collect_api(
    client: OpenAIChat,
    task: Any,
    problems: list[Problem],
    n: int,
    *,
    sandbox: Any = None,
    config: AgentConfig | None = None,
    params: dict[str, Any] | None = None,
    on_problem: Callable[[list[Episode]], None] | None = None,
) -> list[list[Episode]]:
    """n episodes per problem, all in flight at once (the client's semaphore limits requests);
    ``on_problem`` is called with each problem's episodes as soon as they are all done."""

    async def one_problem(pr: Problem) -> list[Episode]:
        eps = await asyncio.gather(*(run_episode(client, task, pr, j, sandbox=sandbox, config=config, params=params)
                                     for j in range(n)))
        if on_problem:
            on_problem(list(eps))
        return list(eps)

    async def run():
        return await asyncio.gather(*(one_problem(pr) for pr in problems))

    return asyncio.run(run())
