"""Which train problems an RL step samples: uniform, or R1-Code-Interpreter's improvement-potential curriculum.

    p_i  = success rate of problem i under the starting (SFT) model, from offline samples
    Π_i  = 4 · p_i · (1 − p_i)          (1 at p = ½, 0 when always or never solved)

Problems are sorted by Π (highest first; ties by problem id, so the order is reproducible) and cut
into ``groups`` equal groups (sizes differ by at most one). Stage s (0-based) samples from groups
0..s; each stage lasts ``stage_steps`` steps and the last one runs to the end. Within a stage the
active problems are visited in epoch-wise seeded shuffles, so the problems of a step are a function
of (seed, step) and a resumed run samples exactly what an uninterrupted one does.

Uniform sampling (the ablation) is the same visit order over the whole pool.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from reasonlab.tasks.base import stable_hash


def potential(p: float) -> float:
    """Π = 4·p·(1−p)."""
    return 4.0 * p * (1.0 - p)


def success_rates(episodes: Sequence[Any]) -> dict[str, float]:
    """Problem id → fraction of its episodes that are correct."""
    tot: dict[str, list[int]] = {}
    for e in episodes:
        c = tot.setdefault(e.problem_id, [0, 0])
        c[0] += int(bool(e.correct))
        c[1] += 1
    return {pid: k / n for pid, (k, n) in tot.items()}


def potential_groups(rates: dict[str, float], groups: int) -> list[list[str]]:
    """Problem ids in ``groups`` equal groups, highest Π first (ties: by id)."""
    order = sorted(rates, key=lambda pid: (-round(potential(rates[pid]), 9), pid))  # rounding: 4·.4·.6 == 4·.6·.4
    base, extra = divmod(len(order), groups)
    out, i = [], 0
    for g in range(groups):
        size = base + (g < extra)
        out.append(order[i : i + size])
        i += size
    return out


class Curriculum:
    """Problems for each step (see the module docstring). ``pool``: the train problems."""

    def __init__(self, pool: list, *, seed: int, steps: int, kind: str = "uniform",
                 rates: dict[str, float] | None = None, groups: int = 4, stage_steps: int | None = None):
        self.seed, self.kind = seed, kind
        if kind == "uniform":
            self.stages = [list(pool)]
            self.stage_steps = steps
            self.groups: list[list[str]] = [[p.id for p in pool]]
            return
        if not rates:
            raise ValueError("curriculum.kind=potential needs success rates: set curriculum.episodes to Episode files "
                             "of the starting model on the train pool (e.g. `reasonlab eval --split train`)")
        by_id = {p.id: p for p in pool}
        known = {pid: r for pid, r in rates.items() if pid in by_id}
        if not known:
            raise ValueError(f"none of the {len(rates)} problems in curriculum.episodes is in the train pool; estimate "
                             "p with the same task, seed and split=train (and train_pool ≥ the eval's limit)")
        self.groups = potential_groups(known, groups)
        self.stages = []
        active: list = []
        for g in self.groups:
            active = active + [by_id[pid] for pid in g]
            self.stages.append(list(active))
        self.stage_steps = stage_steps or max(1, steps // groups)
        self.rates = known

    def stage(self, step: int) -> int:
        return min(step // self.stage_steps, len(self.stages) - 1)

    def problems_for(self, step: int, per_step: int) -> list:
        s = self.stage(step)
        active = self.stages[s]
        start = s * self.stage_steps if self.kind != "uniform" else 0
        out = []
        for k in range((step - start) * per_step, (step - start + 1) * per_step):
            epoch, i = divmod(k, len(active))
            order = list(range(len(active)))
            key = (self.seed, "epoch", epoch) if self.kind == "uniform" else (self.seed, "stage", s, "epoch", epoch)
            random.Random(stable_hash(*key)).shuffle(order)
            out.append(active[order[i]])
        return out
