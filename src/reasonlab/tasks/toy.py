"""Toy tasks with dense rewards, for checking that an RL algorithm learns in a CPU minute.

``toy/letter``: "Write the letter X many times." Reward = fraction of the response's non-space
characters that are X (so a random model already earns a little, and every improvement counts);
correct when at least 90 % are. Not a reasoning task: a smoke test for optimisers and losses.
"""

from __future__ import annotations

import random

from reasonlab.episode import Problem, Score
from reasonlab.tasks.base import check_split, register, split_of, stable_hash

LETTERS = "abcdefghijklmnopqrstuvwxyz"


@register("toy/letter", "Toy: write one given letter many times (dense reward, for RL smoke tests)")
class LetterTask:
    """Write a given letter many times; reward = fraction of characters that are that letter."""

    name = "toy/letter"
    description = "write a given letter many times"

    def __init__(self, letters: str = "a", min_chars: int = 4):
        self.letters = letters
        self.min_chars = min_chars

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        check_split(split)
        rng = random.Random(stable_hash("toy/letter", seed, split))
        out = []
        i = 0
        while len(out) < n:
            c = rng.choice(self.letters)
            i += 1
            key = f"{c}-{i}-{seed}"
            if split_of(key, 50) != split:
                continue
            out.append(Problem(id=f"letter-{split}-{stable_hash(key) % 10**8:08d}", task=self.name, split=split,
                               question=f"Write the letter {c} many times.", answer=c, metadata={"letter": c}))
        return out

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]:
        return [{"role": "user", "content": problem.question}]

    def score(self, problem: Problem, text: str) -> Score:
        chars = [ch for ch in text[:10_000].lower() if not ch.isspace()]
        if len(chars) < self.min_chars:
            return Score(0.0, False, False, None, {"chars": len(chars)})
        frac = sum(ch == problem.metadata["letter"] for ch in chars) / len(chars)
        return Score(frac, frac >= 0.9, True, None, {"fraction": frac})
