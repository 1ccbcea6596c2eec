"""Adapter: every dataset of the installed ``reasoning-gym`` package as task ``gym/<name>``.

Each uses the package's own generator and scorer. Splits are made by hashing the question text
(see :mod:`reasonlab.tasks.base`), so train and test never share a question whatever seeds are used,
and a given (split, seed) always yields the same problems.
"""

from __future__ import annotations

import re
from typing import Any

from reasonlab.episode import Problem, Score
from reasonlab.tasks.base import answer_or_fail, check_split, register, system_prompt, register_lazy, split_of, stable_hash

SYSTEM_PROMPT = (
    "You are a helpful assistant. Think step by step inside <think> </think> tags, then give only the "
    "final answer inside <answer> </answer> tags."
)
MAX_ANSWER_CHARS = 4096


def normalize_answer(a: str) -> str:
    return re.sub(r"\s+", " ", a.strip()).lower()


class GymTask:
    """A reasoning-gym dataset as a reasonlab Task. Extra kwargs go to the dataset's config."""

    def __init__(self, dataset: str, test_percent: int = 10, format_reward: float = 0.0, **config: Any):
        self.dataset = dataset
        self.name = f"gym/{dataset}"
        self.description = f"reasoning-gym dataset {dataset!r}"
        self.test_percent = test_percent
        self.format_reward = format_reward
        self.config = config
        self._score_fn = None

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        import reasoning_gym as rg

        check_split(split)
        out: list[Problem] = []
        seen: set[str] = set()
        chunk = max(16, 3 * n)
        for round_ in range(50):
            ds_seed = stable_hash("gym", self.dataset, seed, round_) % (2**31)
            ds = rg.create_dataset(self.dataset, seed=ds_seed, size=chunk, **self.config)
            for i in range(len(ds)):
                entry = ds[i]
                q = entry["question"]
                if q in seen or split_of(f"{self.dataset}:{q}", self.test_percent) != split:
                    continue
                seen.add(q)
                out.append(
                    Problem(
                        id=f"{self.name}-{split}-{stable_hash(q) % 10**10:010d}",
                        task=self.name,
                        split=split,
                        question=q,
                        answer=entry["answer"],
                        metadata={"entry": entry},
                    )
                )
                if len(out) == n:
                    return out
        raise RuntimeError(
            f"{self.name}: only {len(out)} distinct {split} problems could be generated (asked for {n}); "
            "the dataset's space may be small — ask for fewer or change its config"
        )

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]:
        return [{"role": "system", "content": system_prompt(SYSTEM_PROMPT, tools)}, {"role": "user", "content": problem.question}]

    def score(self, problem: Problem, text: str) -> Score:
        answer, failed = answer_or_fail(text, MAX_ANSWER_CHARS)
        if failed is not None:
            return failed
        if self._score_fn is None:
            import reasoning_gym as rg

            self._score_fn = rg.get_score_answer_fn(self.dataset)
        try:
            value = float(self._score_fn(answer, problem.metadata["entry"]))
        except Exception as e:  # a scorer must never crash a run over odd model text
            return Score(self.format_reward, False, True, normalize_answer(answer), {"error": f"scorer raised {e!r}"[:300]})
        correct = value >= 1.0 - 1e-9
        reward = value if value > 0 else self.format_reward
        return Score(reward, correct, True, normalize_answer(answer), {"score": value})


def _register_all() -> None:
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:  # the package is optional at import time; tasks list just omits gym/*
        return
    for name, (cls, _cfg) in DATASETS.items():
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        register(f"gym/{name}", f"reasoning-gym: {doc}" if doc else f"reasoning-gym dataset {name}")(
            lambda name=name, **kw: GymTask(name, **kw)
        )


register_lazy(_register_all)
