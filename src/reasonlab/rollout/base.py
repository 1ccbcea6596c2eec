"""The generation-backend interface.

A backend takes *token* prompts and sampling parameters and returns samples with token ids and
per-token logprobs. It knows nothing of tasks or tools (ARCHITECTURE.md, "Boundaries"); the HF
backend implements it today, a vLLM backend implements the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class SamplingParams:
    """Sampling settings, named as in vLLM/TRL.

    ``temperature=0`` means greedy. ``top_k=0`` and ``top_p=1`` disable those filters. ``stop``
    strings end a sample; the stop string is kept in the output (the agent loop needs to see the
    closing fence). ``seed`` makes sampling reproducible for a fixed batch composition.
    ``logprobs`` are those of the sampled token under softmax(logits / temperature), before top-k /
    top-p truncation (under softmax(logits) when greedy) — the policy's own probability.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")


@dataclass
class Sample:
    """One completion. ``finish_reason`` is 'eos', 'stop' (a stop string) or 'length'."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    stop_string: str | None = None


@runtime_checkable
class GenerationBackend(Protocol):
    tokenizer: Any

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        """For each prompt, ``params.n`` samples (a list of lists, in prompt order)."""
        ...
