"""`reasonlab run countdown-behaviors`: the cognitive-behaviors study (arXiv 2503.01307) end to end.

Two *base models* stand in for the study's Qwen-2.5-3B (behavior-rich) and Llama-3.2-3B
(behavior-poor): on a CPU, pretrained model organisms (:mod:`reasonlab.organisms`), on GPUs any HF
model. Each *condition* is a starting model for the same PPO run on Countdown:

    none               the behavior-poor base itself
    rich_base          the behavior-rich base itself                         (the paper's first figure)
    <priming>          the poor base after SFT on that condition's synthetic traces
                       (all_strategies, only_backtracking, backtracking_verification, backtracking_subgoal,
                       backtracking_backward, empty_cot, dots, no_positive)
    curated_enriched   the poor base after continued pretraining on the behavior-enriched subset of a
    curated_minimal    mixed corpus, or on its minimal-behavior subset (same token count)

Every condition runs RL once per seed; the bases are shared, and each priming condition is primed once
(``priming_seed``; the seeds then measure the spread of RL, as the study's runs would) unless
``priming_seed: null`` primes per seed too. Writes

    bases/<name>/competence.json   what each base can do before RL (arithmetic, step-0 accuracy, behaviors)
    conditions/<c>/primed/competence.json   the same for each primed model
    results.csv     a row per condition, seed and eval step: the study's columns (avg_verifications,
                    avg_backtracking, avg_subgoals, avg_backwards, total_behaviors, accuracy, pass@k,
                    response_length) plus base, seed and train_reward; with a ``judge`` endpoint
                    also judge_<column> and judge_total_behaviors (the LLM judge on the eval responses,
                    conditions/<c>/seed-<s>/rl/judge/eval-step-N.json)
    report.md / report.html (self-contained): competence, final accuracy per condition (mean ± sd over
                    seeds), the comparisons as differences with their spread, and plots with bands
    conditions/<name>/primed/{traces.jsonl, sft/}   the primed model (once per condition by default)
    conditions/<name>/seed-<s>/rl/                  one RL run per seed

Each stage is skipped when its output is complete and RL resumes from its last checkpoint, so an
interrupted experiment picks up where it stopped.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from reasonlab.config import Strict, dump_yaml
from reasonlab.episode import append_jsonl

log = logging.getLogger(__name__)

BEHAVIOR_COLUMNS = {  # our behavior name → the study's column name
    "verification": "avg_verifications",
    "backtracking": "avg_backtracking",
    "subgoal_setting": "avg_subgoals",
    "backward_chaining": "avg_backwards",
}
BASE_CONDITIONS = {"none": "poor", "rich_base": "rich"}
CURATED = {"curated_enriched": "enriched", "curated_minimal": "control"}
# (a, b): the study's comparisons, each reported as a − b with its spread over seeds
COMPARISONS = [("rich_base", "none"), ("all_strategies", "none"), ("no_positive", "none"),
               ("all_strategies", "empty_cot"), ("no_positive", "empty_cot"), ("all_strategies", "dots"),
               ("curated_enriched", "curated_minimal")]


class CurationSettings(Strict):
    """The curated continued-pretraining arm: a mixed corpus, classified, two subsets, same tokens."""

    documents: int = Field(6000, ge=10, description="Countdown documents in the mixed corpus")
    behavior_rate: float = Field(0.3, ge=0, le=1, description="share of them that are behavior traces")
    top_fraction: float = Field(0.3, gt=0, le=0.5, description="enriched subset: the documents with the most behaviors")
    steps: int = Field(150, ge=1, description="continued-pretraining steps on each subset (same token count)")
    lr: float = Field(1e-3, gt=0)
    replay: int = Field(0, ge=0, description="documents of the base's own pretraining corpus (chat layout "
                        "included) mixed into both subsets, the same ones for both, so continued pretraining "
                        "keeps what the base knows; 0 = each subset alone")


class JudgeSettings(Strict):
    """The LLM judge on the eval responses of every RL run (any OpenAI-compatible endpoint)."""

    base_url: str = Field(..., description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(..., description="model name served there")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (unset: 'none')")
    per_eval: int = Field(32, ge=1, description="responses judged per eval step (the first N of the eval file)")
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_tokens: int = Field(256, ge=8)
    cache: str | None = Field(None, description="on-disk request cache (default <out>/judge-cache.sqlite)")


class BehaviorsRecipe(Strict):
    name: str = "countdown-behaviors"
    bases: dict[str, Any] = Field(
        default_factory=lambda: {"poor": {"behavior_rate": 0.0}, "rich": {"behavior_rate": 0.3}},
        description="'poor' and 'rich' base: a model name/path, or organism fields (over `organism`); "
                    "`init_from: poor` continues the poor base's pretraining on the rich one's corpus")
    organism: dict[str, Any] = Field(default_factory=dict, description="OrganismSpec fields shared by both organisms")
    conditions: list[str] = Field(default_factory=lambda: ["none", "rich_base", "all_strategies", "only_backtracking",
                                                             "backtracking_verification", "backtracking_subgoal",
                                                             "backtracking_backward", "empty_cot", "dots", "no_positive",
                                                             "curated_enriched", "curated_minimal"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    task_args: dict[str, Any] = Field(default_factory=lambda: {"min_numbers": 3, "max_numbers": 3})
    rl_task_args: dict[str, Any] | None = Field(
        None, description="Countdown arguments of the RL and eval problems, over task_args (null = task_args); "
        "the organisms' corpus and the priming traces keep task_args, so RL can run on problems neither saw, "
        "e.g. target_range [31, 60] where a direct guess rarely lands")
    traces: int = Field(256, ge=1, description="priming traces per condition (and seed, see priming_seed)")
    trace_phrasing: str = Field("standard", description="template family of the priming traces: standard, organism "
                                "(terse, restating numbers and target; for small organisms), organism_facts (the same, leaf checks "
                                "written as a op b = c facts), organism_faithful (organism_facts for the faithful "
                                "search), organism_verdicts (organism_faithful with each try's verdict beside its value), "
                                "paraphrase_a, paraphrase_b")
    trace_max_detours: int | None = Field(None, ge=1, description="cap on the dead ends of each priming trace "
                                          "(null = the search's 1–3; 1 = one failed attempt, then the solution)")
    trace_restart_only: bool = Field(False, description="every dead end starts over from the prompt's numbers "
                                     "(no going back part-way)")
    trace_search: Literal["guided", "faithful"] = Field(
        "guided", description="the search the priming traces narrate: guided (an oracle steers the last path) or "
        "faithful (a random search a model can run as written, each leaf check in the order + - * /; use the "
        "organism_faithful phrasing)")
    priming_replay: int = Field(0, ge=0, description="documents of the poor organism's own pretraining corpus (fact "
                                "lists, one-line Countdown problems with direct answers; never the chat layout) mixed "
                                "into each priming SFT set, so priming does not overwrite its arithmetic")
    priming_seed: int | None = Field(
        0, description="prime each condition once, with this seed, and run RL from it with every seed (the seeds "
        "then measure RL's spread); null = traces and SFT per seed too")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTSettings fields (model/data/out are set here)")
    rl: dict[str, Any] = Field(default_factory=dict, description="RLConfig fields (model/task/out are set here)")
    curation: CurationSettings = Field(default_factory=CurationSettings)
    workers: int = Field(1, ge=1, description="(condition, seed) RL runs at once, each in its own process; for the "
                         "organisms on a 2-core CPU, 2 workers × 1 torch thread beat 1 × 2 threads (small matmuls "
                         "do not scale over threads)")
    threads: int | None = Field(None, ge=1, description="torch threads per worker (default: cores // workers)")
    judge: JudgeSettings | None = Field(None, description="also count behaviors with an LLM judge (the local "
                                       "classifier always runs)")
    competence: dict[str, Any] = Field(default_factory=lambda: {"problems": 32, "n": 4},
                                       description="competence_report arguments for each base")
    out: str | None = None

    @field_validator("conditions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from reasonlab.priming.traces import CONDITIONS

        allowed = [*BASE_CONDITIONS, *CONDITIONS, *CURATED]
        bad = [c for c in v if c not in allowed]
        if bad:
            raise ValueError(f"unknown condition(s) {bad}; allowed: {', '.join(allowed)}")
        if len(set(v)) != len(v):
            raise ValueError("conditions must not repeat")
        return v

    @field_validator("trace_phrasing")
    @classmethod
    def _phrasing(cls, v: str) -> str:
        from reasonlab.priming.phrases import check_family

        return check_family(v)

    @field_validator("bases")
    @classmethod
    def _bases(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if k not in ("poor", "rich")]
        if bad:
            raise ValueError(f"unknown base(s) {bad}; allowed: poor, rich")
        for k, b in v.items():
            if not isinstance(b, (str, dict)):
                raise ValueError(f"bases.{k}: a model name/path or a mapping of organism fields, not {type(b).__name__}")
        return v


def priming_units(recipe: "BehaviorsRecipe") -> float:
    """A priming stage's share of the plan, in RL runs (for the ETA only): the SFT sequences it
    trains on against the sequences an RL run generates (rollouts and evals), as measured on the
    cpu preset (a 480 × 16 priming took about 5 RL runs of 20 × 8 × 4 rollouts)."""
    rl, roll = recipe.rl, recipe.rl.get("rollout") or {}
    steps = int(rl.get("steps", 1))
    gen = steps * int(roll.get("prompts_per_step", 8)) * int(roll.get("n", 4))
    every = int(rl.get("eval_every") or steps)
    gen += (steps // max(1, every) + 1) * int(rl.get("eval_limit") or 64) * int(rl.get("eval_n") or 1)
    sft = int(recipe.sft.get("max_steps", 100)) * int(recipe.sft.get("batch_size", 8))
    return max(1.0, 0.8 * sft / max(1, gen))


def rl_task_args(recipe: BehaviorsRecipe) -> dict[str, Any]:
    """The RL and eval task: task_args with rl_task_args over it."""
    return {**recipe.task_args, **(recipe.rl_task_args or {})}


def base_of(condition: str) -> str:
    return BASE_CONDITIONS.get(condition, "poor")


class Progress:
    """One line per stage, with the elapsed time and an ETA from the stages done so far."""

    def __init__(self, total_units: float, enabled: bool = True):
        self.total, self.done, self.t0, self.enabled = total_units, 0.0, time.time(), enabled
        self.found_done: set[Any] = set()  # stages known complete before the run (already out of the plan)

    def skip_known(self, keys: set[Any], units_each: float = 1) -> None:
        """Take stages found complete on disk at start out of the plan, so the first ETA is right."""
        self.found_done |= keys
        self.total -= units_each * len(keys)

    def line(self, text: str) -> None:
        if self.enabled:
            el = time.time() - self.t0
            eta = el / self.done * (self.total - self.done) if self.done else float("nan")
            eta_s = f"ETA {_fmt(eta)}" if eta == eta else "ETA -"
            print(f"[{_fmt(el)} · {eta_s}] {text}", flush=True)

    def advance(self, units: float, worked: bool = True, key: Any = None) -> None:
        """``units`` of the plan are finished; stages found complete (``worked=False``) leave the
        plan instead, so the ETA extrapolates only from stages that ran."""
        if worked:
            self.done += units
        elif key is None or key not in self.found_done:
            self.total -= units


def _fmt(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ----------------------------------------------------------------------------- stages


def organism_spec(recipe: BehaviorsRecipe, name: str, _seen: tuple[str, ...] = ()):
    from reasonlab.organisms import OrganismSpec

    # named by the base, not the recipe: presets with the same organism fields share the cached model
    fields = {"task_args": recipe.task_args, **recipe.organism, **recipe.bases[name], "name": name}
    parent = _parent_base(recipe, name)
    if parent:  # `init_from: poor`: continued pretraining of that base
        from reasonlab.models import resolve_model
        from reasonlab.organisms import ensure_organism

        if parent in _seen:
            raise ValueError(f"bases.{name}.init_from: the bases continue each other's pretraining in a cycle "
                             f"({' -> '.join((*_seen, name, parent))}); one of them must start from scratch")
        b = recipe.bases[parent]
        fields["init_from"] = str(resolve_model(b) if isinstance(b, str)
                                  else ensure_organism(organism_spec(recipe, parent, (*_seen, name))))
    return OrganismSpec(**fields)


def _parent_base(recipe: BehaviorsRecipe, name: str) -> str | None:
    """The other base that ``name`` continues (``init_from`` naming a base), else None."""
    b = recipe.bases.get(name)
    parent = b.get("init_from") if isinstance(b, dict) else None
    return parent if parent in recipe.bases and parent != name else None


def _pretrain_worker(spec_json: str, threads: int) -> str:
    from reasonlab.organisms import OrganismSpec, ensure_organism

    prog = worker_progress(threads)
    return str(ensure_organism(OrganismSpec.model_validate_json(spec_json), log=prog.line))


def pretrain_in_parallel(recipe: BehaviorsRecipe, need: set[str], prog: Progress) -> set[str]:
    """With ``workers`` > 1, the organisms not yet cached are pretrained side by side, one process
    each (one torch thread each pretrains about twice as fast as two threads for one on 2 cores:
    the matmuls are small). Returns the bases pretrained here."""
    from reasonlab.organisms import organism_source

    if recipe.workers < 2 or any(_parent_base(recipe, n) for n in need):
        return set()  # one base continues the other's pretraining: one after the other (ensure_bases)
    todo = [n for n in ("poor", "rich") if n in need and isinstance(recipe.bases.get(n), dict)
            and organism_source(organism_spec(recipe, n)) == "pretrain"]
    if len(todo) < 2:
        return set()
    import concurrent.futures as cf
    import multiprocessing as mp

    k = min(len(todo), recipe.workers)
    threads = recipe.threads or max(1, (os.cpu_count() or 1) // k)
    prog.line(f"bases {' and '.join(todo)}: pretraining the organisms, {k} at a time")
    with cf.ProcessPoolExecutor(k, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_pretrain_worker, [organism_spec(recipe, n).model_dump_json() for n in todo], [threads] * len(todo)))
    return set(todo)


def ensure_bases(recipe: BehaviorsRecipe, out: Path, prog: Progress) -> dict[str, str]:
    """Path of each base the conditions need (organisms pretrained or reused from the cache),
    with a competence report in ``bases/<name>/competence.json``."""
    from reasonlab.models import resolve_model
    from reasonlab.organisms import competence_report, ensure_organism, format_report

    need = {base_of(c) for c in recipe.conditions}
    if any(c in CURATED for c in recipe.conditions):
        need.add("poor")
    pretrained = pretrain_in_parallel(recipe, need, prog)
    paths = {}
    for name in ("poor", "rich"):
        if name not in need:
            continue
        if name not in recipe.bases:
            raise ValueError(f"conditions need the {name!r} base, but `bases` has no {name!r} entry")
        b = recipe.bases[name]
        worked = False
        if isinstance(b, str):
            paths[name] = resolve_model(b)
        else:
            from reasonlab.organisms import organism_source, organism_status

            spec = organism_spec(recipe, name)
            worked = organism_source(spec) == "pretrain"
            prog.line(f"base {name}: {organism_status(spec)}")
            worked = worked or name in pretrained
            paths[name] = str(ensure_organism(spec, log=prog.line))
        paths[name] = str(paths[name])
        prog.advance(2, worked)
        comp_path = out / "bases" / name / "competence.json"
        if not comp_path.exists():
            rep = competence_report(paths[name], task_args=recipe.task_args, max_new_tokens=_max_new(recipe),
                                    **recipe.competence)
            comp_path.parent.mkdir(parents=True, exist_ok=True)
            comp_path.write_text(json.dumps(rep, indent=2))
        prog.line(f"base {name}: {format_report(json.loads(comp_path.read_text()))}")
    return paths


def _fact_max(recipe: BehaviorsRecipe) -> int | None:
    """The organisms' fact range (for a primed model's arithmetic check); None for HF bases."""
    return recipe.organism.get("fact_max") if isinstance(recipe.bases.get("poor"), dict) else None


def _max_new(recipe: BehaviorsRecipe) -> int:
    return int((recipe.rl.get("rollout") or {}).get("max_new_tokens", 256))


def ensure_curated(recipe: BehaviorsRecipe, out: Path, poor: str, prog: Progress) -> dict[str, str]:
    """Continued pretraining of the poor base on the enriched and the minimal subset of a mixed corpus."""
    from reasonlab.analysis.curate import curate
    from reasonlab.organisms import OrganismSpec, corpus_documents, ensure_organism

    wanted = [c for c in recipe.conditions if c in CURATED]
    if not wanted:
        return {}
    cur = recipe.curation
    d = out / "curation"
    if not (d / "stats.json").exists():
        prog.line(f"curation: mixed corpus of {cur.documents} Countdown documents ({cur.behavior_rate:.0%} traces), classifying")
        # the mixed corpus's traces are the priming traces' kind (search and phrasing)
        spec = organism_spec(recipe, "poor").model_copy(update={"behavior_rate": cur.behavior_rate, "fact_docs": 0,
                                                               "countdown_docs": cur.documents, "seed": 1000,
                                                               "trace_phrasing": recipe.trace_phrasing,
                                                               "trace_search": recipe.trace_search})
        docs = corpus_documents(spec)
        stats = curate([{"text": t} for t in docs], d, top_fraction=cur.top_fraction)
        prog.line(f"curation: {stats['enriched']} enriched / {stats['control']} minimal documents; mean behaviors "
                  f"{sum(stats['mean_behaviors']['enriched'].values()):.2f} vs {sum(stats['mean_behaviors']['control'].values()):.2f}")
    base = organism_spec(recipe, "poor")
    paths = {}
    for c in wanted:
        corpus = d / f"{CURATED[c]}.jsonl"
        if cur.replay:  # the subset plus the same replayed base documents for both arms, shuffled together
            mixed = d / f"{CURATED[c]}+replay{cur.replay}.jsonl"
            if not mixed.exists():
                from reasonlab.organisms import load_corpus_file, replay_documents

                docs = load_corpus_file(str(corpus)) + replay_documents(poor, cur.replay, seed=1, chat=True)
                random.Random(f"curation-replay|{c}").shuffle(docs)
                tmp = mixed.with_suffix(".partial")
                tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
                tmp.rename(mixed)
            corpus = mixed
        # no copy warm-up: the base has had it (its copy documents would also be mixed into the subset)
        spec = OrganismSpec(**{**base.model_dump(), "name": f"poor-{c}", "init_from": poor,
                               "corpus": str(corpus), "steps": cur.steps, "lr": cur.lr,
                               "warmup": min(20, cur.steps // 5), "copy_warmup": None})
        from reasonlab.organisms import organism_path

        worked = not (organism_path(spec) / "config.json").exists()
        paths[c] = str(ensure_organism(spec, log=prog.line))
        prog.advance(1, worked)
    return paths


def run_condition(recipe: BehaviorsRecipe, out: Path, condition: str, seed: int, start: str, prog: Progress,
                  show_progress: bool, rl: bool = True) -> Path:
    """Traces → SFT (priming conditions) → RL for one condition and seed; returns the RL run directory
    (``rl=False``: stops after priming)."""
    from reasonlab.config import validate
    from reasonlab.priming.cache import cache_path, find_primed, primed_key, restore, store_primed
    from reasonlab.priming.traces import CONDITIONS, generate_traces
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import train_rl
    from reasonlab.train.sft import SFTSettings, train_sft

    d = out / "conditions" / condition / f"seed-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    model = start
    tag = f"{condition} seed {seed}"
    if condition in CONDITIONS:
        prime_seed = seed if recipe.priming_seed is None else recipe.priming_seed
        pd = d if recipe.priming_seed is None else out / "conditions" / condition / "primed"
        pd.mkdir(parents=True, exist_ok=True)
        traces = pd / "traces.jsonl"
        if not traces.exists():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(start)  # dots are length-matched in this tokenizer's tokens
            eps = generate_traces(condition, recipe.traces, seed=prime_seed, task_args=recipe.task_args, tokenizer=tok,
                                  paraphrase=recipe.trace_phrasing, max_detours=recipe.trace_max_detours,
                                  restart_only=recipe.trace_restart_only, search=recipe.trace_search)
            tmp = traces.with_suffix(".partial")
            tmp.unlink(missing_ok=True)
            append_jsonl(tmp, eps)
            tmp.rename(traces)
        data = [str(traces)]
        if recipe.priming_replay:  # the base's own documents, next to the traces (kept apart from them)
            replay = pd / "replay.jsonl"
            if not replay.exists():
                from reasonlab.organisms import replay_episodes

                tmp = replay.with_suffix(".partial")
                tmp.unlink(missing_ok=True)
                append_jsonl(tmp, replay_episodes(start, recipe.priming_replay, seed=prime_seed))
                tmp.rename(replay)
            data.append(str(replay))
        final = pd / "sft" / "final"
        sft = validate(SFTSettings, {**recipe.sft, "model": start, "data": data, "out": str(pd / "sft"),
                                     "seed": prime_seed}, f"{condition}: sft")
        # the same base weights, traces and SFT settings make the same primed model: take it from the
        # cache or the shipped ones (reasonlab.priming.cache) instead of training it again
        key = primed_key(start, condition, data, sft.model_dump(mode="json"))
        sft_worked = False
        if not (final / "config.json").exists():
            found = find_primed(condition, key)
            if found is not None:
                restore(found[0], final)
                if (found[0] / "competence.json").exists() and not (pd / "competence.json").exists():
                    shutil.copy2(found[0] / "competence.json", pd / "competence.json")
                prog.line(f"{tag}: primed model {found[0].name} " + ("from the shipped weights "
                          "(REASONLAB_SHIPPED_ORGANISMS=0 trains it here)" if found[1] == "shipped" else "cached"))
            else:
                sft_worked = True
        if sft_worked:
            t0 = time.time()
            prog.line(f"{tag}: priming SFT on {recipe.traces} traces"
                      + (f" + {recipe.priming_replay} replayed base documents" if recipe.priming_replay else ""))
            train_sft(sft, show_progress=show_progress)
            hist = json.loads((pd / "sft" / "log_history.json").read_text())
            loss = [h["loss"] for h in hist if "loss" in h]
            prog.line(f"{tag}: SFT done in {_fmt(time.time() - t0)}, loss {loss[0]:.2f} → {loss[-1]:.2f}" if loss else
                      f"{tag}: SFT done")
        comp_path = pd / "competence.json"
        if not comp_path.exists():  # what priming made of the base, before RL (arithmetic kept? numbers read?)
            from reasonlab.organisms import competence_report, format_report

            rep = competence_report(str(final), task_args=recipe.task_args, max_new_tokens=_max_new(recipe),
                                    fact_max=_fact_max(recipe), **recipe.competence)
            comp_path.write_text(json.dumps(rep, indent=2))
            prog.line(f"{tag}: primed model: {format_report(rep)}")
        if not (cache_path(condition, key) / "config.json").exists():
            store_primed(final, condition, key, comp_path)
        prog.advance(priming_units(recipe), sft_worked, key=(condition, seed, "sft"))
        model = str(final)
    rl_dir = d / "rl"
    if not rl:
        return rl_dir
    rl_cfg = {**recipe.rl, "model": model, "task": "countdown", "task_args": rl_task_args(recipe), "out": str(rl_dir),
              "seed": seed, "eval_behaviors": True, "eval_at_start": True, "tensorboard": False}
    cfg = validate(RLConfig, rl_cfg, f"{condition}: rl")
    done = rl_dir / "checkpoints" / f"step-{cfg.steps:06d}"
    rl_worked = not done.exists()
    if rl_worked:
        t0 = time.time()

        def on_step(row: dict[str, Any]) -> None:
            s = row["step"]
            if "eval/accuracy" in row or s == cfg.steps:
                acc = f" · eval accuracy {row['eval/accuracy']:.3f}" if "eval/accuracy" in row else ""
                prog.line(f"{tag}: PPO step {s}/{cfg.steps} reward {row.get('reward', float('nan')):.3f}"
                          f" train accuracy {row.get('accuracy', float('nan')):.3f}{acc} · {_fmt(time.time() - t0)}")

        train_rl(cfg, resume=rl_dir.exists(), show_progress=show_progress, on_step=on_step)
    prog.advance(1, rl_worked, key=(condition, seed, "rl"))
    return rl_dir


def judge_run(judge: JudgeSettings, rl_dir: Path, cache: Path, prog: Progress, tag: str) -> None:
    """LLM-judge counts for each eval step of one RL run, in ``rl/judge/eval-step-N.json`` (skipped
    when present; requests are cached, so an interrupted judge pass re-sends nothing answered)."""
    import os

    from reasonlab.analysis.judge import BehaviorJudge
    from reasonlab.episode import read_episodes
    from reasonlab.rollout.openai_client import OpenAIChat

    todo = [f for f in sorted((rl_dir / "episodes").glob("eval-step-*.jsonl"))
            if not (rl_dir / "judge" / f.with_suffix(".json").name).exists()]
    if not todo:
        return
    (rl_dir / "judge").mkdir(exist_ok=True)
    for f in todo:
        eps = read_episodes(f)[: judge.per_eval]
        # a client per file: its async session belongs to the event loop of one count() call
        client = OpenAIChat(judge.base_url, judge.model, api_key=os.environ.get(judge.api_key_env, "none"),
                            concurrency=judge.concurrency, timeout_s=judge.timeout_s, cache=cache)
        rep = BehaviorJudge(client, max_tokens=judge.max_tokens).count([e.completion for e in eps])
        close = getattr(client, "close", None)
        if callable(close):
            close()
        means = {}
        for b in BEHAVIOR_COLUMNS:
            vals = [c[b] for c in rep.counts if c.get(b) is not None]
            means[b] = sum(vals) / len(vals) if vals else None
        out = {"responses": len(eps), "means": means, "malformed": rep.malformed, "failed": rep.failed,
               "usage": rep.usage, "errors": rep.errors[:5]}
        tmp = rl_dir / "judge" / (f.stem + ".partial")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(rl_dir / "judge" / f.with_suffix(".json").name)
        shown = ", ".join(f"{b} {v:.2f}" if v is not None else f"{b} -" for b, v in means.items())
        prog.line(f"{tag}: LLM judge on {f.stem} ({len(eps)} responses): {shown}"
                  + (f" · {rep.failed} failed requests" if rep.failed else ""))


def collect_results(out: Path, conditions: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for c in conditions:
        for seed in seeds:
            path = out / "conditions" / c / f"seed-{seed}" / "rl" / "metrics.jsonl"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                try:
                    m = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of a run still going
                if "eval/accuracy" not in m:
                    continue
                row: dict[str, Any] = {"condition": c, "base": base_of(c), "seed": seed, "step": m["step"]}
                for b, col in BEHAVIOR_COLUMNS.items():
                    row[col] = m.get(f"eval/{b}", 0.0)
                row["total_behaviors"] = sum(row[col] for col in BEHAVIOR_COLUMNS.values())
                row["accuracy"] = m["eval/accuracy"]
                for k, v in m.items():
                    if k.startswith("eval/pass@"):
                        row[k[len("eval/"):]] = v
                row["response_length"] = m["eval/response_length"]
                row["train_reward"] = m.get("reward")
                jf = path.parent / "judge" / f"eval-step-{m['step']:06d}.json"
                if jf.exists():  # the LLM judge's counts next to the local classifier's
                    means = json.loads(jf.read_text())["means"]
                    for b, col in BEHAVIOR_COLUMNS.items():
                        row[f"judge_{col}"] = means.get(b)
                    vals = [v for v in means.values() if v is not None]
                    row["judge_total_behaviors"] = sum(vals) if len(vals) == len(means) else None
                rows.append(row)
    return rows


def write_results(out: Path, rows: list[dict[str, Any]]) -> Path:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    path = out / "results.csv"
    tmp = path.with_suffix(".partial")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- summary


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else (float("nan"), 0.0)


def series(rows: list[dict[str, Any]], condition: str, col: str) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean and sd over seeds of ``col`` for one condition (steps every seed reached)."""
    by_step: dict[int, list[float]] = {}
    for r in rows:
        if r["condition"] == condition and r.get(col) is not None:
            by_step.setdefault(int(r["step"]), []).append(float(r[col]))
    n = max((len(v) for v in by_step.values()), default=0)
    steps = sorted(s for s, v in by_step.items() if len(v) == n)
    return steps, [_mean_sd(by_step[s])[0] for s in steps], [_mean_sd(by_step[s])[1] for s in steps]


def final_by_seed(rows: list[dict[str, Any]], condition: str, col: str = "accuracy", step: int | None = None) -> dict[int, float]:
    """Per seed, ``col`` at ``step`` (default: each seed's last eval step)."""
    out: dict[int, tuple[int, float]] = {}
    for r in rows:
        if r["condition"] != condition:
            continue
        s = int(r["step"])
        if step is not None and s != step:
            continue
        if r["seed"] not in out or s > out[r["seed"]][0]:
            out[r["seed"]] = (s, float(r[col]))
    return {k: v for k, (_, v) in out.items()}


def comparisons(rows: list[dict[str, Any]], conds: list[str]) -> list[dict[str, Any]]:
    """Final-accuracy differences a − b: mean and sd over seeds (paired by seed)."""
    out = []
    for a, b in COMPARISONS:
        if a not in conds or b not in conds:
            continue
        fa, fb = final_by_seed(rows, a), final_by_seed(rows, b)
        seeds = sorted(set(fa) & set(fb))
        diffs = [fa[s] - fb[s] for s in seeds]
        if diffs:
            m, sd = _mean_sd(diffs)
            out.append({"a": a, "b": b, "diff": m, "sd": sd, "seeds": len(diffs),
                        "clear": len(diffs) > 1 and abs(m) > 2 * sd / len(diffs) ** 0.5})
    return out


def plot_band(ax, rows: list[dict[str, Any]], condition: str, col: str, color: Any) -> None:
    """Mean over seeds of ``col`` against step for one condition, with a ± sd band."""
    steps, mean, sd = series(rows, condition, col)
    if steps:
        ax.plot(steps, mean, marker="o", ms=3, color=color, label=condition)
        ax.fill_between(steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                        color=color, alpha=0.15, lw=0)


def plot_results(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(dict.fromkeys(r["condition"] for r in rows))
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(conds)}
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110)
    for c in conds:
        for ax, col in zip(axes, ("accuracy", "response_length")):
            plot_band(ax, rows, c, col, colors[c])
    seeds = len({r["seed"] for r in rows})
    axes[0].set(xlabel="PPO step", ylabel="test accuracy", title=f"Countdown accuracy (mean ± sd, {seeds} seeds)")
    axes[1].set(xlabel="PPO step", ylabel="tokens", title="response length")
    for a in axes:
        a.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), dpi=110)
    for ax, (b, col) in zip(axes, BEHAVIOR_COLUMNS.items()):
        for c in conds:
            plot_band(ax, rows, c, col, colors[c])
        ax.set(xlabel="PPO step", ylabel="per response", title=b.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "behaviors.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def write_report(out: Path, recipe: BehaviorsRecipe, rows: list[dict[str, Any]], plots: list[Path],
                 timings: dict[str, float]) -> None:
    from reasonlab.organisms import format_report

    conds = list(dict.fromkeys(r["condition"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# {recipe.name}", "",
             "Cognitive-behaviors study (arXiv 2503.01307): the same PPO run on Countdown from each starting model.",
             f"Task {recipe.task_args}"
             + (f" (RL and eval: {rl_task_args(recipe)})" if recipe.rl_task_args else "")
             + f"; {recipe.traces} priming traces per condition, "
             + (f"primed once (seed {recipe.priming_seed}); " if recipe.priming_seed is not None else "primed per seed; ")
             + f"RL seeds {seeds} (the spread below is over RL seeds). "
             "Behavior counts: the local rule-based classifier on the eval responses (see docs/priming.md for its "
             "precision/recall).", "", "## Bases before RL", ""]
    for name in ("poor", "rich"):
        p = out / "bases" / name / "competence.json"
        if p.exists():
            lines.append(f"- **{name}** ({recipe.bases.get(name)}): {format_report(json.loads(p.read_text()))}")
    primed = [(c, out / "conditions" / c / "primed" / "competence.json") for c in conds]
    primed = [(c, p) for c, p in primed if p.exists()]
    if primed:
        lines += ["", "## Primed models before RL (the behavior-poor base after priming SFT)", ""]
        lines += [f"- **{c}**: {format_report(json.loads(p.read_text()))}" for c, p in primed]
    judged = any(r.get("judge_total_behaviors") is not None for r in rows)
    lines += ["", "## Accuracy per condition (mean ± sd over seeds)", "",
              "| condition | base | step 0 | final | Δ (final − step 0) | total behaviors 0 → final | length 0 → final |"
              + (" LLM judge: total behaviors 0 → final |" if judged else ""),
              "|---|---|---|---|---|---|---|" + ("---|" if judged else "")]
    for c in conds:
        a0 = list(final_by_seed(rows, c, step=0).values())
        a1 = list(final_by_seed(rows, c).values())
        b0 = list(final_by_seed(rows, c, "total_behaviors", step=0).values())
        b1 = list(final_by_seed(rows, c, "total_behaviors").values())
        l0 = list(final_by_seed(rows, c, "response_length", step=0).values())
        l1 = list(final_by_seed(rows, c, "response_length").values())
        d = [y - x for x, y in zip(a0, a1)]
        f = lambda xs, p=3: "{:.{p}f} ± {:.{p}f}".format(*_mean_sd(xs), p=p)  # noqa: E731
        judge_cell = ""
        if judged:
            jr = [r for r in rows if r.get("judge_total_behaviors") is not None]
            j0 = list(final_by_seed(jr, c, "judge_total_behaviors", step=0).values())
            j1 = list(final_by_seed(jr, c, "judge_total_behaviors").values())
            judge_cell = f" {f(j0, 2)} → {f(j1, 2)} |" if j0 and j1 else " – |"
        lines.append(f"| {c} | {base_of(c)} | {f(a0)} | {f(a1)} | {f(d)} | {f(b0, 2)} → {f(b1, 2)} | "
                     f"{_mean_sd(l0)[0]:.0f} → {_mean_sd(l1)[0]:.0f} |" + judge_cell)
    comps = comparisons(rows, conds)
    if comps:
        lines += ["", "## The study's comparisons (final accuracy, paired by seed)", "",
                  "| comparison | difference (mean ± sd) | seeds | larger than 2 standard errors |", "|---|---|---|---|"]
        for c in comps:
            lines.append(f"| {c['a']} − {c['b']} | {c['diff']:+.3f} ± {c['sd']:.3f} | {c['seeds']} | "
                         f"{'yes' if c['clear'] else 'no'} |")
    if timings:
        lines += ["", "## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), "", "Full table: `results.csv` (a row per condition, seed and eval step)."]
    md = "\n".join(lines)
    (out / "report.md").write_text(md + "\n")
    html_body = md
    for p in plots:  # self-contained: images inline
        data = base64.b64encode(p.read_bytes()).decode()
        html_body = html_body.replace(f"![{p.stem}]({p.name})", f'<img alt="{p.stem}" src="data:image/png;base64,{data}">')
    (out / "report.html").write_text(_html(recipe.name, html_body))


def _html(title: str, md: str) -> str:
    """A minimal Markdown → HTML for our own report (headings, lists, paragraphs, pipe tables, images)."""
    import html as H
    import re

    out, table = [], []

    def inline(s: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", H.escape(s))

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[inline(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{c}</{'th' if i == 0 else 'td'}>" for c in row) + "</tr>"
                for i, row in enumerate(cells)) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{H.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{H.escape(line[2:])}</h1>")
        elif line.startswith("<img"):
            out.append(f"<p>{line}</p>")
        elif line.startswith("- "):
            out.append(f"<p>• {inline(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{H.escape(title)}</title><style>{style}</style></head><body>{''.join(out)}</body></html>\n"


def check_task_args(recipe: BehaviorsRecipe, train_pool: int, eval_limit: int | None) -> None:
    """The Countdown arguments build a task, and the RL ranges hold the problems RL and eval draw
    (a misspelt key or a too-narrow range fails here, not after pretraining and priming)."""
    from reasonlab.config import ConfigError
    from reasonlab.tasks import get_task
    from reasonlab.tasks.countdown import TooFewProblems

    field = "task_args"
    try:
        get_task("countdown", **recipe.task_args)
        if recipe.rl_task_args:
            field = "rl_task_args"
        task = get_task("countdown", **rl_task_args(recipe))
        task.problems("train", train_pool, seed=0)
        if eval_limit:
            task.problems("test", eval_limit, seed=0)
    except TooFewProblems as e:
        raise ConfigError(f"{field}: {e} (rl.train_pool is {train_pool}, rl.eval_limit {eval_limit})") from None
    except ValueError as e:
        raise ConfigError(f"{field}: {e}") from None


def check_stages(recipe: BehaviorsRecipe) -> None:
    """Validate the SFT and RL settings before any stage runs (a typo fails in a second, not after
    an hour of pretraining), naming the bad field."""
    from reasonlab.config import validate
    from reasonlab.organisms import OrganismSpec
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.sft import SFTSettings

    rl = validate(RLConfig, {**recipe.rl, "model": "-", "task": "countdown", "task_args": rl_task_args(recipe)}, "rl")
    check_task_args(recipe, rl.train_pool, rl.eval_limit)
    validate(SFTSettings, {**recipe.sft, "model": "-", "data": ["-"], "out": "-"}, "sft")
    for name, b in recipe.bases.items():
        if isinstance(b, dict):
            validate(OrganismSpec, {"task_args": recipe.task_args, **recipe.organism, **b, "name": name},
                     f"bases.{name} (with organism)")


def worker_progress(threads: int) -> Progress:
    """Set up a spawned experiment worker: the CLI's quiet libraries (a spawned process starts
    without them), its torch thread count, and progress lines marked as the worker's."""
    import torch

    from reasonlab.quiet import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(threads)
    prog = Progress(1)
    prog.line = lambda text: print(f"  [worker] {text}", flush=True)  # type: ignore[method-assign]
    return prog


def _worker(recipe_json: str, out: str, c: str, seed: int, start: str, threads: int, rl: bool = True
            ) -> tuple[str, float]:
    """One (condition, seed) in a worker process with its own torch thread count (``rl=False``: the
    condition's priming only)."""
    t0 = time.time()
    prog = worker_progress(threads)
    recipe = BehaviorsRecipe.model_validate_json(recipe_json)
    rl_dir = run_condition(recipe, Path(out), c, seed, start, prog, show_progress=False, rl=rl)
    return str(rl_dir), time.time() - t0


def expected_tokens(out: Path, condition: str) -> float:
    """Mean response length of the model an RL run starts from (its competence report), a proxy for
    the run's cost: a run's rollouts, updates and evals all scale with it (a search arm's ~300-token
    responses cost ~4x a direct answerer's 30). Unknown (no report yet): infinity, so it goes first."""
    from reasonlab.priming.traces import CONDITIONS

    if condition in CONDITIONS:
        p = out / "conditions" / condition / "primed" / "competence.json"
    elif condition in CURATED:
        return float("inf")
    else:
        p = out / "bases" / base_of(condition) / "competence.json"
    try:
        return float(json.loads(p.read_text())["response_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("inf")


def longest_first(ready: list[tuple[str, int]], out: Path) -> int:
    """Index of the (condition, seed) run expected to take longest; ties keep the list's order."""
    return max(range(len(ready)), key=lambda j: (expected_tokens(out, ready[j][0]), -j))


def run_parallel(recipe: BehaviorsRecipe, out: Path, jobs: list[tuple[str, int]], starts: dict[str, str],
                 prog: Progress, finished: Callable[[str, int, Path, float], None],
                 primed: Callable[[str, float], None] | None = None) -> None:
    """``recipe.workers`` jobs at a time, each in a spawned process with ``threads`` torch threads.

    With ``priming_seed`` set, each priming condition is primed once, as a job of its own; its RL
    runs become ready when its primed model exists (they share it). Priming jobs go first (they are
    the longest when not cached). Of the ready RL runs, the one expected to take longest goes next
    (:func:`expected_tokens`): with the short runs left for the end, the workers finish together
    instead of one search arm running alone at the end (longest-processing-time-first scheduling)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from reasonlab.priming.traces import CONDITIONS

    threads = recipe.threads or max(1, (os.cpu_count() or 1) // recipe.workers)
    payload, pu = recipe.model_dump_json(), priming_units(recipe)
    primed_once = recipe.priming_seed is not None
    prime = list(dict.fromkeys(c for c, _ in jobs if c in CONDITIONS)) if primed_once else []
    waiting = {c: [(c2, s) for c2, s in jobs if c2 == c] for c in prime}
    queue: list[tuple[str, int, bool]] = [(c, recipe.seeds[0], False) for c in prime]
    ready = [(c, seed) for c, seed in jobs if c not in waiting]
    with cf.ProcessPoolExecutor(recipe.workers, mp_context=mp.get_context("spawn")) as pool:
        futs: dict[cf.Future, tuple[str, int, bool]] = {}

        def fill() -> None:
            while len(futs) < recipe.workers and (queue or ready):
                if queue:
                    c, seed, rl = queue.pop(0)
                else:
                    (c, seed), rl = ready.pop(longest_first(ready, out)), True
                futs[pool.submit(_worker, payload, str(out), c, seed, starts[c], threads, rl)] = (c, seed, rl)

        fill()
        while futs:
            done, _ = cf.wait(futs, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                c, seed, rl = futs.pop(fut)
                rl_dir, seconds = fut.result()
                if not rl:  # primed: the condition's RL runs can go
                    if primed:
                        primed(c, seconds)
                    prog.advance(pu if (c, seed, "sft") not in prog.found_done else 0)
                    for s in recipe.seeds[1:]:  # the other seeds' share of the plan: primed already
                        prog.advance(pu, False, key=(c, s, "sft"))
                    ready.extend(waiting.pop(c))
                    continue
                prog.line(f"{c} seed {seed}: finished in {_fmt(seconds)}")
                prog.advance(1 if (c, seed, "rl") not in prog.found_done else 0)
                finished(c, seed, Path(rl_dir), seconds)
            fill()


def stages_done(recipe: BehaviorsRecipe, out: Path) -> set[tuple[str, int, str]]:
    """(condition, seed, "sft"|"rl") stages already complete in ``out`` (a resumed run)."""
    from reasonlab.priming.traces import CONDITIONS
    from reasonlab.train.rl.config import RLConfig

    steps = int(recipe.rl.get("steps", RLConfig.model_fields["steps"].default))
    done = set()
    for c in recipe.conditions:
        for seed in recipe.seeds:
            d = out / "conditions" / c / f"seed-{seed}"
            if (d / "rl" / "checkpoints" / f"step-{steps:06d}").exists():
                done.add((c, seed, "rl"))
            pd = d if recipe.priming_seed is None else out / "conditions" / c / "primed"
            if c in CONDITIONS and (pd / "sft" / "final" / "config.json").exists():
                done.add((c, seed, "sft"))
    return done


def run_behaviors(recipe: BehaviorsRecipe, *, show_progress: bool = True) -> Path:
    check_stages(recipe)
    out = Path(recipe.out or f"runs/{recipe.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(dump_yaml(recipe))
    n_bases = len({base_of(c) for c in recipe.conditions} | ({"poor"} if any(c in CURATED for c in recipe.conditions) else set()))
    from reasonlab.priming.traces import CONDITIONS

    pu = priming_units(recipe)  # a priming stage weighs more than an RL run in the ETA
    units = 2 * n_bases + sum(1 for c in recipe.conditions if c in CURATED) + \
        len(recipe.seeds) * sum(1 + pu if c in CONDITIONS else 1 for c in recipe.conditions)
    prog = Progress(units)  # stage lines always (--quiet drops the bars only, as the CLI says)
    known = stages_done(recipe, out)
    prog.skip_known({k for k in known if k[2] == "rl"})
    prog.skip_known({k for k in known if k[2] == "sft"}, units_each=pu)
    timings: dict[str, float] = {}
    timings_file = out / "timings.json"
    earlier = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    def record(stage: str, seconds: float, cached: bool | None = None) -> None:
        """Note a stage's time and write timings.json at once, so a run interrupted later keeps it. A
        stage found done (``cached``; unknown: it took ≤ 5 s) keeps the time it took the first time."""
        cached = seconds <= 5 if cached is None else cached
        timings[stage] = earlier.get(stage, seconds) if cached else seconds
        tmp = timings_file.with_suffix(".partial")
        tmp.write_text(json.dumps({**earlier, **timings}, indent=1))
        tmp.replace(timings_file)

    t0 = time.time()
    bases = ensure_bases(recipe, out, prog)
    record("bases (pretraining + competence; 0 when cached)", time.time() - t0)
    t0 = time.time()
    curated = ensure_curated(recipe, out, bases.get("poor", ""), prog)
    if curated:
        record("curated continued pretraining", time.time() - t0)
    rows: list[dict[str, Any]] = []
    jobs = [(c, seed) for seed in recipe.seeds for c in recipe.conditions]

    def finished(c: str, seed: int, rl_dir: Path, seconds: float) -> None:
        nonlocal rows
        if recipe.judge:
            judge_run(recipe.judge, rl_dir, Path(recipe.judge.cache or out / "judge-cache.sqlite"), prog,
                      f"{c} seed {seed}")
        record(f"{c} seed {seed}", seconds, cached=(c, seed, "rl") in known)
        rows = collect_results(out, recipe.conditions, recipe.seeds)  # results so far, after every run
        write_results(out, rows)

    if recipe.workers == 1:
        for c, seed in jobs:
            t0 = time.time()
            start = curated.get(c) or bases[base_of(c)]
            finished(c, seed, run_condition(recipe, out, c, seed, start, prog, show_progress=False), time.time() - t0)
    else:
        run_parallel(recipe, out, jobs, {c: curated.get(c) or bases[base_of(c)] for c in recipe.conditions}, prog, finished,
                     primed=lambda c, seconds: record(f"{c} priming (SFT + competence; 0 when cached)", seconds,
                                                      cached=any(k[0] == c and k[2] == "sft" for k in known)))
    plots = plot_results(out, rows)
    write_report(out, recipe, rows, plots, timings)
    return out
