"""Measure a behaviour classifier on synthetic traces whose true counts are known.

Four trace sets, every condition, ``n`` traces each, same classifier:

- ``standard``: the training templates, at ``seed`` (seed 0 is where the local classifier's cues
  were tuned) — tells you whether the cues match the templates, nothing more;
- ``standard, held-out seed``: other problems (test split, ``heldout_seed``), same templates;
- ``paraphrase_a``: held out for the first draft of the local cues, *tuned on* for the current one;
- ``paraphrase_b``: never seen while writing the current cues — the honest number.

The classifier is any ``text -> {behaviour: count}`` callable, so an LLM judge is measured the same
way as :func:`reasonlab.analysis.behaviors.count_behaviors_local`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reasonlab.analysis.behaviors import count_behaviors_local, evaluate_classifier
from reasonlab.priming.traces import CONDITIONS, check_condition, trace_episode
from reasonlab.tasks import get_task


def trace_sets(seed: int = 0, heldout_seed: int = 1) -> dict[str, tuple[int, str, str]]:
    """Label → (seed, split, phrasing) of each measured set."""
    return {
        f"standard, seed {seed}": (seed, "train", "standard"),
        f"standard, seed {heldout_seed} test": (heldout_seed, "test", "standard"),
        "paraphrase_a, tuned on": (heldout_seed, "test", "paraphrase_a"),
        "paraphrase_b, held out": (heldout_seed, "test", "paraphrase_b"),
    }


def measure_classifier(predict: Callable[[str], dict[str, float]] = count_behaviors_local, *, n: int = 200,
                       seed: int = 0, heldout_seed: int = 1, conditions: tuple[str, ...] = CONDITIONS,
                       task_args: dict[str, Any] | None = None,
                       on_trace: Callable[[], None] | None = None) -> dict[str, dict]:
    """Label → :func:`evaluate_classifier` result, for each set of :func:`trace_sets`."""
    for c in conditions:
        check_condition(c)
    task = get_task("countdown", **(task_args or {}))
    out = {}
    for label, (s, split, phrasing) in trace_sets(seed, heldout_seed).items():
        episodes = []
        for problem in task.problems(split, n, seed=s):  # the same problems for every condition
            for condition in conditions:
                episodes.append(trace_episode(task, problem, condition, seed=s, paraphrase=phrasing))
                if on_trace:
                    on_trace()
        out[label] = evaluate_classifier(episodes, predict)
    return out
