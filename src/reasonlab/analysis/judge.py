"""LLM judge that counts the four cognitive behaviors in a response (as in arXiv 2503.01307).

One prompt per behavior asks an OpenAI-compatible model to count the occurrences and answer
inside ``<count>N</count>``. Requests go through :class:`reasonlab.rollout.openai_client.OpenAIChat`
(concurrency limit, retries with backoff, on-disk cache, token accounting), so a re-run or a
resumed run spends nothing twice. A reply without a parseable count is retried once with a
different sample index, then recorded as ``None`` (and counted in ``malformed``), never guessed.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from reasonlab.analysis.behaviors import BEHAVIORS
from reasonlab.rollout.openai_client import BudgetExceeded, OpenAIChat, RequestFailed

DEFINITIONS = {
    "verification": (
        "verification: the solver explicitly checks whether an intermediate or final result is correct, "
        "e.g. 'Let me check: 25 * 3 = 75, correct' or 'This gives 74, not 75'."
    ),
    "backtracking": (
        "backtracking: the solver realises an approach fails and explicitly abandons it to try another, "
        "e.g. 'That doesn't work. Let's try a different combination.'"
    ),
    "subgoal_setting": (
        "subgoal setting: the solver breaks the problem into an intermediate goal, e.g. 'First I'll try "
        "to get close to 50, then adjust with the remaining numbers.'"
    ),
    "backward_chaining": (
        "backward chaining: the solver works backwards from the target, e.g. '75 is 3 times 25, so I "
        "need to make 25 from the other numbers.'"
    ),
}

PROMPT = """Below is a chain of reasoning by a model solving a Countdown arithmetic puzzle.

Count how many distinct times it shows this behavior:
{definition}

Reasoning:
<reasoning>
{text}
</reasoning>

Think briefly, then give the number of occurrences (0 if none) as <count>N</count>."""

_COUNT = re.compile(r"<count>\s*(\d{1,4})\s*</count>")
MAX_TEXT_CHARS = 12_000


def parse_count(reply: str) -> int | None:
    found = _COUNT.findall(reply or "")
    return int(found[-1]) if found else None


@dataclass
class JudgeReport:
    counts: list[dict[str, int | None]]
    usage: dict[str, Any]
    malformed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class BehaviorJudge:
    def __init__(self, client: OpenAIChat, *, max_tokens: int = 256, temperature: float = 0.0):
        self.client = client
        self.params = {"max_tokens": max_tokens, "temperature": temperature}

    def messages(self, text: str, behavior: str) -> list[dict[str, str]]:
        body = text[:MAX_TEXT_CHARS]
        return [{"role": "user", "content": PROMPT.format(definition=DEFINITIONS[behavior], text=body)}]

    async def _one(self, text: str, behavior: str, report: JudgeReport) -> int | None:
        msgs = self.messages(text, behavior)
        for attempt in range(2):
            try:
                res = await self.client.achat(msgs, sample_index=attempt, **self.params)
            except (RequestFailed, BudgetExceeded) as e:
                report.failed += 1
                report.errors.append(str(e)[:300])
                return None
            n = parse_count(res.text)
            if n is not None:
                return n
        report.malformed += 1
        return None

    async def acount(self, texts: list[str], progress: Callable[[int], None] | None = None) -> JudgeReport:
        report = JudgeReport(counts=[{} for _ in texts], usage={})

        async def cell(i: int, b: str):
            report.counts[i][b] = await self._one(texts[i], b, report)
            if progress:
                progress(1)

        await asyncio.gather(*(cell(i, b) for i in range(len(texts)) for b in BEHAVIORS))
        report.usage = self.client.usage.as_dict()
        return report

    def count(self, texts: list[str], progress: Callable[[int], None] | None = None) -> JudgeReport:
        return asyncio.run(self.acount(texts, progress))
