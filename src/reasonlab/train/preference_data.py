"""Training sets from scored Episodes: rejection-sampled SFT, preference pairs (DPO), labels (KTO).

All builders work on whole multi-turn trajectories and are deterministic given ``seed``.

Rejection sampling keeps correct trajectories (optionally at most ``per_problem`` per problem,
distinct completions only). Preference pairs contrast a correct with an incorrect trajectory of the
*same* problem; problems without both are skipped. Pairing strategies, ``k`` = pairs per problem:

- ``random``:  ``k`` (default 1) (correct, incorrect) combinations drawn uniformly without replacement.
- ``all``:     every correct × incorrect combination, at most ``k`` (default: no cap). After a seeded
               shuffle, combination n is (correct[n mod C], incorrect[(n + ⌊n/lcm(C, I)⌋) mod I]):
               this lists each combination once and uses the trajectories round-robin, so a capped
               set spreads over as many distinct trajectories as it can.
- ``hardest``: the most informative contrasts: correct trajectories from shortest to longest
               (length = characters of assistant text; ties: higher reward first) against incorrect
               ones from highest reward to lowest (the near misses; ties: longest first, the most
               effort spent on a wrong answer); the i-th of each list form pair i, i < k (default 1).

Unpaired KTO data labels correct trajectories desirable and incorrect ones undesirable, shuffled
(KTO trains in dataset order, see ``KTOConfig.train_sampling_strategy``).

The datasets are pre-tokenized with the trained model's tokenizer in the SFT layout
(:func:`reasonlab.train.sft.tokenize_episode`): the ``*_policy_mask`` columns are 1 on tokens the
policy wrote (assistant text, end-of-turn) and 0 on tool outputs; the trainers in
:mod:`reasonlab.train.preference` turn them into TRL's ``completion_mask``.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any, Literal

from reasonlab.episode import Episode
from reasonlab.train.sft import tokenize_episode

Pairing = Literal["random", "all", "hardest"]
PAIRINGS: tuple[str, ...] = ("random", "all", "hardest")


def by_problem(episodes: list[Episode]) -> dict[str, list[Episode]]:
    """Episodes grouped by problem id, problems in sorted order, episodes in input order."""
    groups: dict[str, list[Episode]] = defaultdict(list)
    for e in episodes:
        groups[e.problem_id].append(e)
    return {pid: groups[pid] for pid in sorted(groups)}


def rejection_sample(episodes: list[Episode], *, per_problem: int | None = None, dedupe: bool = True,
                     seed: int = 0) -> list[Episode]:
    """Correct trajectories only (rejection-sampled SFT); turn them into a dataset with
    :func:`reasonlab.train.sft.episodes_to_dataset`."""
    rng = random.Random(seed)
    out = []
    for eps in by_problem(episodes).values():
        good = [e for e in eps if e.correct]
        if dedupe:
            distinct: dict[str, Episode] = {}
            for e in good:
                distinct.setdefault(e.completion, e)
            good = list(distinct.values())
        if per_problem is not None and len(good) > per_problem:
            good = rng.sample(good, per_problem)
        out += good
    return out


def make_pairs(episodes: list[Episode], strategy: Pairing = "random", *,
               max_pairs_per_problem: int | None = None, seed: int = 0) -> list[tuple[Episode, Episode]]:
    """(chosen = correct, rejected = incorrect) pairs of the same problem (see the module docstring)."""
    if strategy not in PAIRINGS:
        raise ValueError(f"unknown pairing {strategy!r}; choose one of {PAIRINGS}")
    cap = max_pairs_per_problem
    if cap is not None and cap < 1:
        raise ValueError("max_pairs_per_problem must be >= 1 (or None for the strategy's default)")
    rng = random.Random(seed)
    pairs: list[tuple[Episode, Episode]] = []
    for eps in by_problem(episodes).values():
        good = [e for e in eps if e.correct]
        bad = [e for e in eps if not e.correct]
        if not good or not bad:
            continue
        if strategy == "random":
            combos = [(g, b) for g in good for b in bad]
            pairs += rng.sample(combos, min(cap or 1, len(combos)))
        elif strategy == "all":
            rng.shuffle(good)
            rng.shuffle(bad)
            n_good, n_bad = len(good), len(bad)
            lcm = math.lcm(n_good, n_bad)
            combos = [(good[n % n_good], bad[(n + n // lcm) % n_bad]) for n in range(n_good * n_bad)]
            pairs += combos[:cap] if cap is not None else combos
        else:  # hardest; the shuffle only breaks exact ties, reproducibly
            rng.shuffle(good)
            rng.shuffle(bad)
            good.sort(key=lambda e: (len(e.completion), -e.reward))
            bad.sort(key=lambda e: (-e.reward, -len(e.completion)))
            pairs += list(zip(good, bad))[: cap or 1]
    return pairs


def make_unpaired(episodes: list[Episode], *, per_problem: int | None = None, contrastive_only: bool = False,
                  seed: int = 0) -> list[tuple[Episode, bool]]:
    """(episode, desirable = correct) for KTO, shuffled. ``per_problem`` caps desirable and undesirable
    trajectories separately; ``contrastive_only`` keeps problems that have both."""
    rng = random.Random(seed)
    out: list[tuple[Episode, bool]] = []
    for eps in by_problem(episodes).values():
        good = [e for e in eps if e.correct]
        bad = [e for e in eps if not e.correct]
        if contrastive_only and not (good and bad):
            continue
        for group, label in ((good, True), (bad, False)):
            if per_problem is not None and len(group) > per_problem:
                group = rng.sample(group, per_problem)
            out += [(e, label) for e in group]
    rng.shuffle(out)
    return out


def _first_policy_index(mask: list[int]) -> int:
    return mask.index(1) if 1 in mask else len(mask)


class _Tokenized:
    """Memoised :func:`tokenize_episode` (an episode may appear in many pairs)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[int, tuple[list[int], list[int]]] = {}

    def __call__(self, e: Episode) -> tuple[list[int], list[int]]:
        if id(e) not in self.cache:
            self.cache[id(e)] = tokenize_episode(self.tokenizer, e.messages)
        return self.cache[id(e)]


def pairs_to_dataset(pairs: list[tuple[Episode, Episode]], tokenizer: Any):
    """Pre-tokenized pairs for :class:`~reasonlab.train.preference.EntroPODPOTrainer`.

    ``prompt_ids`` is the longest shared prefix before either trajectory's first policy token (the
    chat-rendered problem); ``chosen_ids``/``rejected_ids`` are the rest of each trajectory, tool
    outputs included, with ``chosen_policy_mask``/``rejected_policy_mask`` aligned to them.
    """
    from datasets import Dataset

    if not pairs:
        raise ValueError("no preference pairs: no problem has both a correct and an incorrect trajectory")
    tok = _Tokenized(tokenizer)
    rows: dict[str, list] = defaultdict(list)
    for chosen, rejected in pairs:
        (c_ids, c_mask), (r_ids, r_mask) = tok(chosen), tok(rejected)
        limit = min(_first_policy_index(c_mask), _first_policy_index(r_mask))
        k = 0
        while k < limit and c_ids[k] == r_ids[k]:
            k += 1
        rows["prompt_ids"].append(c_ids[:k])
        rows["chosen_ids"].append(c_ids[k:])
        rows["chosen_policy_mask"].append(c_mask[k:])
        rows["rejected_ids"].append(r_ids[k:])
        rows["rejected_policy_mask"].append(r_mask[k:])
        rows["problem_id"].append(chosen.problem_id)
    return Dataset.from_dict(dict(rows))


def unpaired_to_dataset(items: list[tuple[Episode, bool]], tokenizer: Any):
    """Pre-tokenized labelled trajectories for :class:`~reasonlab.train.preference.EntroPOKTOTrainer`:
    ``prompt_ids`` (up to the first policy token), ``completion_ids``, ``completion_policy_mask``,
    ``label``."""
    from datasets import Dataset

    if not items:
        raise ValueError("no labelled trajectories for KTO")
    rows: dict[str, list] = defaultdict(list)
    for e, label in items:
        ids, mask = tokenize_episode(tokenizer, e.messages)
        k = _first_policy_index(mask)
        rows["prompt_ids"].append(ids[:k])
        rows["completion_ids"].append(ids[k:])
        rows["completion_policy_mask"].append(mask[k:])
        rows["label"].append(bool(label))
        rows["problem_id"].append(e.problem_id)
    return Dataset.from_dict(dict(rows))
