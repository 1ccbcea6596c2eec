"""`reasonlab run entropo`: DPO, EntroPO-DPO, KTO and EntroPO-KTO from one starting checkpoint.

    starting model ─► (SFT on teacher trajectories) ─► sample trajectories per train problem from
    that policy (the "collected" data; teacher trajectories join it) ─► pairs / labels
    ─► for every loss × α × seed: train from the same checkpoint on the same data for the same
       steps ─► evaluate every run on the test problems: pass@k (k = 1…n), diversity, policy token
       entropy, selected accuracy against N for majority / verifier / hybrid / random / oracle

The starting checkpoint is ``start_model`` when given (a local HF folder, e.g. an organism already
fine-tuned on teacher data: the SFT stage is skipped), else ``base_model`` after SFT. ``base_model`` is
a pretrained organism spec (a mapping of :class:`reasonlab.organisms.OrganismSpec` fields, as the
cognitive-behaviors recipe's ``bases``: the same fields give the same content hash, so the organism is
reused from the cache, never pretrained twice), "tiny" (random init, plumbing only), an embedded name
or an HF folder. SFT data (correct trajectories only):

- ``rejection``: rejection sampling from the base itself: ``n`` samples on each of ``problems`` train
  problems, scored, the correct ones kept (the organism's own phrasing, which it can imitate);
- ``teacher_traces`` synthetic teacher trajectories (with ``teacher_in_sft``): ``teacher: solver``,
  an exact Countdown solver answering directly with a solution drawn uniformly from all solutions in
  the prompt's order of numbers (any order when none exists), or ``teacher: search``, the
  ``all_strategies`` search traces of :mod:`reasonlab.priming` (too long for a 1M-parameter organism:
  it loses track of the numbers in them);
- the correct trajectories of ``teacher_episodes`` (Episode JSONL, e.g. from ``reasonlab collect``
  against a strong model).

Preference data: the starting policy's samples on ``collect_problems`` train problems (``collect_n``
each) and the teacher's trajectories of the same problems (``teacher_in_preference``): DPO pairs a
correct against an incorrect trajectory of one problem (``preference.pairing``), KTO labels each
trajectory desirable (correct) or not; ``data_stats.json`` counts them by source. The α sweep is ``alphas`` (ours, α = α_p − β_p) or ``entro_alphas`` (the paper's α_p, with
``preference.pref_beta``); α = 0 is plain DPO/KTO and must be in the sweep: every α > 0 is compared
with it. ``losses`` picks the families: ``dpo``, ``kto`` (our derivation) and ``kto-released``
(the authors' released EntroPO-KTO, entropy only in the reference point; its α = 0 is KTO).

Seeds vary preference training (pair sampling, data order) and evaluation (test problems and
sampling); the data and the starting checkpoint are the same for all. Outputs: ``results.csv`` (a
row per method, α and seed, SFT included), ``summary.csv`` (mean and sd over seeds), ``passk.json``
and ``tts_curves.json`` (full curves), ``report.md``/``report.html`` (comparisons as paired
differences over seeds, mean ± sd) and plots: ``pass_at_k.png``, ``tts.png`` (selectors per method),
``tts_alpha.png`` (selectors per loss and α) and ``alpha.png`` (pass@k, entropy and diversity vs α).
Every stage is skipped when its output is complete, so an interrupted run resumes where it stopped.
The console prints one line per stage with the elapsed time and an ETA.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from reasonlab.config import Strict, dump_yaml
from reasonlab.episode import append_jsonl, read_episodes
from reasonlab.config import Strict as _Strict
from reasonlab.experiments.behaviors import Progress, _fmt as _fmt_time, _html

LOSSES = ("dpo", "kto", "kto-released")
SELECTOR_NAMES = ("majority", "verifier", "hybrid", "random", "oracle")
# set by the experiment for every run; a recipe's `preference` may not set them
_RUN_FIELDS = ("model", "data", "out", "method", "alpha", "entro_alpha", "kto_form", "seed")


class TinyModelSpec(_Strict):
    """``base_model: tiny``: an untrained from-scratch Llama (plumbing only; a pretrained organism
    from ``reasonlab models pretrain`` or any HF folder is the scientific start)."""

    layers: int = 4
    width: int = 128
    heads: int = 4
    vocab_size: int = 1024


def organism_spec(recipe) -> Any:
    """The OrganismSpec of a ``base_model`` mapping (``task_args`` default to the recipe's)."""
    from reasonlab.organisms import OrganismSpec

    return OrganismSpec(**{"task_args": recipe.task_args, "name": "organism", **recipe.base_model})


def ensure_base_model(recipe, out: Path, log: Any = print) -> str:
    if isinstance(recipe.base_model, dict):
        from reasonlab.organisms import ensure_organism, organism_status

        spec = organism_spec(recipe)
        log(f"base: {organism_status(spec)}")
        return str(ensure_organism(spec, log=log))
    if recipe.base_model != "tiny":
        return recipe.base_model
    path = out / "base-model"
    if not (path / "config.json").exists():
        from reasonlab.models import create_tiny
        from reasonlab.priming.traces import generate_traces

        t = recipe.tiny
        seed = recipe.seed
        # the tokenizer also learns the phrasing of the reasoning traces (any condition's words)
        texts = [e.completion for e in generate_traces("all_strategies", 200, seed=seed + 1, task_args=recipe.task_args)]
        create_tiny(path, layers=t.layers, width=t.width, heads=t.heads, vocab_size=t.vocab_size,
                    tasks=("countdown",), seed=seed, extra_texts=texts)
    return str(path)


def countdown_solutions(numbers: list[int], target: int) -> list[str]:
    """Every distinct solution of a three- or four-number Countdown problem (each number once, the
    two bracketings of three numbers and the five of four), as written expressions."""
    from fractions import Fraction
    from itertools import permutations, product

    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
           "/": lambda a, b: a / b if b else None}

    def combos(xs):  # (text, value) of every bracketing of xs in this order
        if len(xs) == 1:
            yield str(xs[0]), Fraction(xs[0])
            return
        for i in range(1, len(xs)):
            for (lt, lv), (rt, rv) in product(list(combos(xs[:i])), list(combos(xs[i:]))):
                for o, f in ops.items():
                    if lv is None or rv is None or (v := f(lv, rv)) is None:
                        continue
                    lt2 = lt if i == 1 else f"({lt})"
                    rt2 = rt if len(xs) - i == 1 else f"({rt})"
                    yield f"{lt2} {o} {rt2}", v

    out = []
    for order in dict.fromkeys(permutations(numbers)):
        out += [t for t, v in combos(order) if v == target]
    return list(dict.fromkeys(out))


def solver_episodes(task_args: dict[str, Any], n: int, *, seed: int = 0, split: str = "train") -> list:
    """The ``solver`` teacher: a direct answer to each of the first ``n`` problems of ``split`` (those
    of the collect stage for the same seed), drawn uniformly from the solutions that keep the prompt's
    order of numbers (all solutions when none does), with a short restating thought in the phrasing of
    the organisms' pretraining corpus. Scored Episodes, all correct."""
    from reasonlab.episode import Episode
    from reasonlab.organisms import _DIRECT_THINK
    from reasonlab.tasks import get_task
    from reasonlab.tasks.countdown import evaluate_expression

    task = get_task("countdown", **task_args)
    rng = random.Random(f"solver-teacher|{seed}")
    out = []
    for p in task.problems(split, n, seed=seed):
        numbers, target = p.metadata["numbers"], p.metadata["target"]
        sols = countdown_solutions(numbers, target)
        in_order = [x for x in sols if evaluate_expression(x).numbers == list(numbers)]
        answer = rng.choice(in_order or sols or [p.metadata["solution"]])
        think = rng.choice(_DIRECT_THINK).format(numbers=numbers, target=target)
        text = f"<think>{think}</think>\n<answer>{answer}</answer>"
        sc = task.score(p, text)
        out.append(Episode(task=p.task, problem_id=p.id, sample_index=0,
                           messages=task.messages(p) + [{"role": "assistant", "content": text}],
                           reward=sc.reward, correct=sc.correct, format_ok=sc.format_ok, answer=sc.answer,
                           score_details=sc.details, stats={"chars": len(text)},
                           meta={"source": "solver-teacher", "solutions": len(sols)}))
    return out


class RejectionSpec(Strict):
    """Rejection sampling from the base: its correct samples are SFT data."""

    problems: int = Field(0, ge=0, description="train problems to sample; 0 = no rejection sampling")
    n: int = Field(8, ge=1, description="samples per problem")
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int | None = Field(None, ge=1, description="default: sampling.max_new_tokens")
    seed: int = Field(1, description="problem and sampling seed (the collect stage uses the recipe's seed)")


class VerifierSpec(Strict):
    steps: int = Field(100, ge=0, description="TRL RewardTrainer steps; 0 = no verifier")
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(512, ge=16)


class TTSSpec(Strict):
    Ns: list[int] | None = Field(None, description="N values; default 1, 2, 4, … up to eval_n (and eval_n)")
    selectors: list[Literal["majority", "verifier", "hybrid", "random", "oracle", "weighted"]] = Field(
        default_factory=lambda: list(SELECTOR_NAMES))
    draws: int = Field(3, ge=1, description="random candidate subsets per N (within a run)")
    verifier_threshold: float = Field(0.05, ge=0, lt=1, description="hybrid: verifier p(YES) filter")
    tie_break: Literal["longest", "shortest"] = Field("longest", description="hybrid: length tie-break")


class EntroPORecipe(Strict):
    name: str = "entropo"
    base_model: str | dict[str, Any] = Field(
        "tiny", description="model the SFT stage starts from: a mapping of OrganismSpec fields (a pretrained "
                            "organism, reused from the cache), 'tiny' (random init, from `tiny`), an embedded name "
                            "or a local HF folder")
    start_model: str | None = Field(None, description="a ready starting checkpoint (local HF folder, e.g. an "
                                                      "organism fine-tuned on teacher data): skips the SFT stage")
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec)
    task_args: dict[str, Any] = Field(default_factory=lambda: {"min_numbers": 3, "max_numbers": 3})
    teacher: Literal["search", "solver"] = Field("search", description="synthetic teacher: all_strategies search "
                                                 "traces, or the exact solver's direct answers")
    teacher_traces: int = Field(256, ge=0, description="synthetic correct teacher trajectories (the first "
                                "teacher_traces train problems): SFT data, and 'chosen' data")
    teacher_in_sft: bool = Field(True, description="the synthetic teacher trajectories are SFT data")
    rejection: RejectionSpec = Field(default_factory=RejectionSpec)
    teacher_episodes: list[str] = Field(default_factory=list, description="Episode JSONL files of teacher "
                                        "trajectories: their correct ones are SFT data; all join the preference data")
    teacher_in_preference: bool = Field(True, description="teacher trajectories join the preference data")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTSettings fields")
    collect_problems: int = Field(64, ge=1)
    collect_n: int = Field(4, ge=1)
    sampling: dict[str, Any] = Field(default_factory=lambda: {"temperature": 1.0, "max_new_tokens": 256})
    losses: list[Literal["dpo", "kto", "kto-released"]] = Field(default_factory=lambda: ["dpo", "kto"],
                                                               min_length=1)
    alphas: list[float] | None = Field(None, description="α sweep, ours (α = entro_alpha − pref_beta); 0 = DPO/KTO")
    entro_alphas: list[float] | None = Field(None, description="α sweep in the paper's α_p, with preference.pref_beta")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    preference: dict[str, Any] = Field(default_factory=dict, description="PreferenceSettings fields shared by all "
                                       "(sft_weight, the RPO term, goes to the DPO runs only)")
    verifier: VerifierSpec = Field(default_factory=VerifierSpec)
    tts: TTSSpec = Field(default_factory=TTSSpec)
    eval_limit: int = Field(32, ge=1)
    eval_n: int = Field(8, ge=1)
    report_alpha: float | None = Field(None, description="α shown in tts.png (default: the largest)")
    keep_checkpoints: bool = Field(False, description="keep each run's intermediate checkpoints")
    workers: int = Field(1, ge=1, description="preference runs at once, each in its own process")
    threads: int = Field(0, ge=0, description="torch threads per worker (0 = cores / workers)")
    seed: int = 0
    out: str | None = None

    @model_validator(mode="after")
    def _check(self):
        clash = [k for k in _RUN_FIELDS if k in self.preference]
        if clash:
            raise ValueError(f"preference.{clash[0]}: set by the experiment for every run; use `losses`, "
                             "`alphas` (or `entro_alphas`) and `seeds` instead")
        if isinstance(self.base_model, dict):
            from reasonlab.config import validate
            from reasonlab.organisms import OrganismSpec

            validate(OrganismSpec, {"task_args": self.task_args, **self.base_model}, "base_model (organism fields)")
        if self.start_model is not None and not (Path(self.start_model).expanduser() / "config.json").exists():
            raise ValueError(f"start_model: no Hugging Face model folder at {self.start_model} (config.json "
                             "missing); give a trained model's folder, or leave it empty to run the SFT stage")
        for i, path in enumerate(self.teacher_episodes):
            if not Path(path).exists():
                raise ValueError(f"teacher_episodes[{i}]: {path} does not exist")
        if self.tts.Ns and max(self.tts.Ns) > self.eval_n:
            raise ValueError(f"tts.Ns: N = {max(self.tts.Ns)} needs eval_n >= {max(self.tts.Ns)} samples per problem")
        self.resolved_alphas()  # raises on a bad sweep
        return self

    def resolved_alphas(self) -> tuple[list[float], float]:
        """The sweep in our parameterisation, and β (module docstring of reasonlab.train.preference)."""
        from reasonlab.train.preference import resolve_entropy

        beta, pref_beta = self.preference.get("beta"), self.preference.get("pref_beta")
        if self.alphas is not None and self.entro_alphas is not None:
            raise ValueError("alphas and entro_alphas: give the sweep in one parameterisation (alphas: ours, "
                             "α = entro_alpha − pref_beta; entro_alphas: the paper's, with preference.pref_beta)")
        if self.entro_alphas is not None:
            if pref_beta is None:
                raise ValueError("entro_alphas: the paper's parameterisation needs preference.pref_beta (β_p)")
            pairs = [resolve_entropy(None, beta, ea, pref_beta, where=f"entro_alphas[{i}]")
                     for i, ea in enumerate(self.entro_alphas)]
        else:
            if pref_beta is not None:
                raise ValueError("preference.pref_beta is the paper's β_p: use it with entro_alphas, or give "
                                 "alphas with preference.beta")
            pairs = [resolve_entropy(a, beta, where=f"alphas[{i}]", warn=False) for i, a in enumerate(self.alphas or [0.0])]
        alphas = sorted({a for a, _ in pairs})
        if 0.0 not in alphas:
            raise ValueError(f"{'entro_alphas' if self.entro_alphas is not None else 'alphas'}: the sweep must "
                             "include α = 0 (entro_alpha = pref_beta), plain DPO/KTO, the baseline every α is "
                             "compared with")
        return alphas, pairs[0][1]


class Run(Strict):
    name: str  # directory name
    method: str  # sft, dpo, entropo-dpo, kto, entropo-kto, entropo-kto-released
    loss: str  # sft, dpo, kto, kto-released
    alpha: float
    seed: int


def plan_runs(r: EntroPORecipe) -> list[Run]:
    """Every (loss, α, seed) to train, SFT evaluations first. ``kto-released`` at α = 0 is KTO and is
    not run twice (its α = 0 baseline is the ``kto`` run)."""
    alphas, _ = r.resolved_alphas()
    runs = [Run(name=f"sft-s{s}", method="sft", loss="sft", alpha=0.0, seed=s) for s in r.seeds]
    losses = list(r.losses)
    baseline_only = "kto-released" in losses and "kto" not in losses
    if baseline_only:  # KTO at α = 0: the baseline the released form is compared with
        losses.insert(losses.index("kto-released"), "kto")
    for loss in losses:
        for a in alphas:
            if (loss == "kto-released" and a == 0) or (loss == "kto" and baseline_only and a > 0):
                continue
            base = loss.split("-")[0]
            method = base if a == 0 else f"entropo-{loss}"
            for s in r.seeds:
                runs.append(Run(name=f"{method}-a{a:g}-s{s}", method=method, loss=loss, alpha=a, seed=s))
    return runs


# ----------------------------------------------------------------------------- stages


def _write_once(path: Path, make) -> None:
    """Write ``make()``'s Episodes to ``path`` unless it exists (complete or absent, never half)."""
    if path.exists():
        return
    tmp = path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    append_jsonl(tmp, make())
    tmp.rename(path)


def _stage_teacher(r: EntroPORecipe, out: Path) -> list[str]:
    """The teacher trajectory files: the synthetic teacher's, then ``teacher_episodes``."""
    from reasonlab.priming.traces import generate_traces

    teacher = list(r.teacher_episodes)
    if r.teacher_traces:
        traces = out / "teacher.jsonl"
        if r.teacher == "solver":
            _write_once(traces, lambda: solver_episodes(r.task_args, r.teacher_traces, seed=r.seed))
        else:
            _write_once(traces, lambda: generate_traces("all_strategies", r.teacher_traces, seed=r.seed,
                                                        task_args=r.task_args))
        teacher.insert(0, str(traces))
    return teacher


def _stage_sft(r: EntroPORecipe, out: Path, base: str, teacher: list[str], quiet: bool, log: Any) -> Path:
    """The starting checkpoint: ``start_model``, or ``base`` after SFT on correct trajectories
    (rejection samples of the base, and the teacher's)."""
    from reasonlab.config import validate
    from reasonlab.train.sft import SFTSettings, train_sft

    if r.start_model is not None:
        return Path(r.start_model).expanduser()
    final = out / "sft" / "final"
    if (final / "config.json").exists():
        return final
    data = list(teacher) if r.teacher_in_sft else list(r.teacher_episodes)
    rj = r.rejection
    if rj.problems:
        t0 = time.time()
        sampling = {**r.sampling, "temperature": rj.temperature}
        if rj.max_new_tokens:
            sampling["max_new_tokens"] = rj.max_new_tokens
        s = _evaluate(r, base, out / "rejection", "train", rj.problems, rj.n, rj.seed, quiet, sampling=sampling)
        eps = read_episodes(out / "rejection" / "episodes" / "eval.jsonl")
        good = [e for e in eps if e.correct]
        log(f"rejection sampling: {len(good)} correct of {len(eps)} samples of the base (accuracy "
            f"{s['accuracy']:.3f}) on {len({e.problem_id for e in good})}/{rj.problems} problems · "
            f"{_fmt_time(time.time() - t0)}")
        data.insert(0, str(out / "rejection" / "episodes" / "eval.jsonl"))
    if not data:
        raise ValueError("no SFT data: set rejection.problems, teacher_traces (with teacher_in_sft) or "
                         "teacher_episodes, or give start_model")
    sft = {"only_correct": bool(r.teacher_episodes or rj.problems), **r.sft}  # rejection sampling
    cfg = validate(SFTSettings, {**sft, "model": base, "data": data, "out": str(out / "sft"), "seed": r.seed}, "sft")
    t0 = time.time()
    train_sft(cfg, show_progress=False)  # the stage line below reports it; no per-step dicts or bars
    hist = json.loads((out / "sft" / "log_history.json").read_text()) if (out / "sft" / "log_history.json").exists() else []
    loss = [h["loss"] for h in hist if "loss" in h]
    log(f"SFT: {cfg.max_steps if cfg.max_steps > 0 else cfg.epochs} {'steps' if cfg.max_steps > 0 else 'epochs'} on "
        f"{', '.join(Path(d).parent.parent.name if d.endswith('eval.jsonl') else Path(d).name for d in data)}"
        + (f", loss {loss[0]:.3f} → {loss[-1]:.3f}" if loss else "") + f" · {_fmt_time(time.time() - t0)}")
    if not r.keep_checkpoints:
        shutil.rmtree(out / "sft" / "checkpoints", ignore_errors=True)
    return final


def _evaluate(r: EntroPORecipe, model: str, out: Path, split: str, limit: int, n: int, seed: int,
              quiet: bool, sampling: dict | None = None) -> dict:
    from reasonlab.config import EvalConfig
    from reasonlab.experiments.evaluate import run_eval

    cfg = EvalConfig(task="countdown", task_args=r.task_args, model=model, split=split, limit=limit, n=n,
                     seed=seed, sampling=sampling or r.sampling, dtype="fp32", out=str(out))
    return run_eval(cfg, show_progress=not quiet)


def _stage_verifier(r: EntroPORecipe, out: Path, start: Path, data: list[str], log: Any) -> Path | None:
    """A learned outcome verifier (TRL RewardTrainer from the starting checkpoint) on the collected
    trajectories; None when it is switched off or the data has no problem with both outcomes."""
    from reasonlab.analysis.tts import preference_pairs, train_verifier

    path = out / "verifier"
    if r.verifier.steps == 0:
        return None
    if (path / "reasonlab.json").exists():
        return path
    eps = [e for f in data for e in read_episodes(f)]
    if not preference_pairs(eps):
        log("no problem has both a correct and an incorrect trajectory: no verifier; the verifier selector "
            "is left out and the hybrid runs without its verifier stage")
        return None
    v = r.verifier
    train_verifier(eps, str(start), path, steps=v.steps, lr=v.lr, batch_size=v.batch_size,
                   max_length=v.max_length, seed=r.seed)
    return path


def _measure(r: EntroPORecipe, run: Run, model: str, out: Path, scorer: Any, quiet: bool) -> dict:
    """Evaluate one run and measure everything; cached in ``eval/<run>/metrics.json``."""
    from functools import partial

    from reasonlab.analysis.diversity import diversity_summary
    from reasonlab.analysis.metrics import group_by_problem, pass_at_k
    from reasonlab.analysis.tts import SELECTORS, tts_curves

    d = out / "eval" / run.name
    cached = d / "metrics.json"
    if cached.exists():
        return json.loads(cached.read_text())
    s = _evaluate(r, model, d, "test", r.eval_limit, r.eval_n, run.seed, quiet)
    eps = read_episodes(d / "episodes" / "eval.jsonl")
    _add_token_entropy(model, eps, r.sampling.get("temperature", 1.0))
    groups = group_by_problem(eps)
    n = min(len(g) for g in groups.values())
    passk = [sum(pass_at_k(len(g), sum(e.correct for e in g), k) for g in groups.values()) / len(groups)
             for k in range(1, n + 1)]
    div = diversity_summary(eps)
    sels = {}
    for name in r.tts.selectors:
        if name in ("verifier",) and scorer is None:
            continue
        fn = SELECTORS[name]
        if name == "hybrid":
            fn = partial(fn, verifier_threshold=r.tts.verifier_threshold, tie_break=r.tts.tie_break)
        sels[name] = fn
    Ns = r.tts.Ns or sorted({*(2**i for i in range(int(math.log2(n)) + 1)), n})
    curves = tts_curves(groups, sels, Ns=[N for N in Ns if N <= n], seeds=tuple(range(r.tts.draws)),
                        scorer=scorer)
    row: dict[str, Any] = {"run": run.name, "method": run.method, "loss": run.loss, "alpha": run.alpha,
                           "seed": run.seed, "accuracy": s["accuracy"], "format_rate": s["format_rate"],
                           "mean_length": s["mean_generated_tokens"]}
    row.update({f"pass@{k}": passk[k - 1] for k in sorted({*(2**i for i in range(int(math.log2(n)) + 1)), n})})
    for k, v in div.items():  # None (e.g. distinct correct when nothing is solved) stays an empty cell
        if k not in ("problems", "samples", "mode", "episodes_with_entropy"):
            row[f"div/{k}"] = v
    for name, ys in curves["accuracy"].items():
        row[f"tts/{name}@{curves['Ns'][-1]}"] = ys[-1]
    result = {"row": row, "passk": passk, "curves": curves}
    tmp = cached.with_suffix(".partial")
    tmp.write_text(json.dumps(result, default=str))
    tmp.rename(cached)  # complete or absent: an interrupted run measures again
    return result


def _plan_units(r: EntroPORecipe, runs: list[Run]) -> dict[str, float]:
    """Rough cost of each stage (≈ seconds of a 1M-parameter organism on one core); the ETA
    rescales them by the stages that ran."""
    tok = r.sampling.get("max_new_tokens", 256) / 48
    sample = 0.02 * tok  # per sampled trajectory
    steps = r.preference.get("max_steps", -1)
    par = max(1, min(r.workers, len(runs)))  # runs in parallel: wall time per run / workers
    return {"rejection": r.rejection.problems * r.rejection.n * sample,
            "sft": max(1, r.sft.get("max_steps", 100)) * 0.8 if r.start_model is None else 0.0,
            "collect": r.collect_problems * r.collect_n * sample,
            "verifier": r.verifier.steps * 0.5,
            "train": (steps if steps > 0 else 100) * 1.0 / par,
            "eval": r.eval_limit * r.eval_n * sample * 1.5 / par}


def run_entropo(r: EntroPORecipe, *, show_progress: bool = True) -> Path:
    from reasonlab.train.preference import describe_entropy

    quiet = not show_progress
    out = Path(r.out or f"runs/{r.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(dump_yaml(r))
    alphas, beta = r.resolved_alphas()
    runs = plan_runs(r)
    u = _plan_units(r, runs)
    total = u["rejection"] + u["sft"] + u["collect"] + u["verifier"] + sum(
        u["eval"] + (u["train"] if run.loss != "sft" else 0) for run in runs)
    prog = Progress(total)  # stage lines always; show_progress is about bars
    log = prog.line
    log(f"{r.name}: {len(runs) - len(r.seeds)} preference runs ({', '.join(r.losses)}) × α {alphas} × seeds "
        f"{r.seeds}, same data and {r.preference.get('max_steps', 'epochs')} steps each → {out}")
    for a in alphas:
        log(f"  α sweep: {describe_entropy(a, beta)}")
    base = ensure_base_model(r, out, log=log) if r.start_model is None else r.start_model  # type: ignore[arg-type]
    teacher = _stage_teacher(r, out)
    done = (out / "sft" / "final" / "config.json").exists() or r.start_model is not None
    start = _stage_sft(r, out, str(base), teacher, quiet, log)
    prog.advance(u["rejection"] + u["sft"], worked=not done)
    log(f"starting checkpoint: {start}")
    done = (out / "collect" / "summary.json").exists()
    s = _evaluate(r, str(start), out / "collect", "train", r.collect_problems, r.collect_n, r.seed, quiet)
    prog.advance(u["collect"], worked=not done)
    log(f"collected {s['samples']} trajectories of the starting policy on {r.collect_problems} train problems: "
        f"accuracy {s['accuracy']:.3f}")
    data = preference_data(r, out)
    done = (out / "verifier" / "reasonlab.json").exists() or r.verifier.steps == 0
    vpath = _stage_verifier(r, out, start, data[:1], log)
    prog.advance(u["verifier"], worked=not done)
    if vpath is not None:
        log(f"verifier: {vpath}")
    todo = [run for run in runs if not (out / "eval" / run.name / "metrics.json").exists()]
    results: dict[str, dict] = {}

    def finished(i: int, run: Run, res: dict, seconds: float) -> None:
        prog.advance(u["eval"] + (u["train"] if run.loss != "sft" else 0), worked=run in todo)
        row = res["row"]
        nmax = res["curves"]["Ns"][-1]
        log(f"[{i}/{len(runs)}] {run.method} α={run.alpha:g} seed {run.seed}: pass@1 {row['pass@1']:.3f}, "
            f"pass@{len(res['passk'])} {res['passk'][-1]:.3f}, entropy {row.get('div/mean_token_entropy') or 0:.3f}, "
            f"distinct answers {row.get('div/distinct_answers') or 0:.2f}, hybrid@{nmax} "
            f"{row.get(f'tts/hybrid@{nmax}', float('nan')):.3f}"
            + (f" · {_fmt_time(seconds)}" if run in todo else " (done before)"))
        results[run.name] = res

    args = (str(start), str(out), str(vpath) if vpath is not None else None, beta)
    if r.workers == 1 or len(todo) <= 1:
        for i, run in enumerate(runs, 1):
            t0 = time.time()
            finished(i, run, train_and_measure(r, run, *args, quiet), time.time() - t0)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp
        import os

        for i, run in enumerate(runs, 1):
            if run not in todo:
                finished(i, run, train_and_measure(r, run, *args, quiet), 0.0)
        threads = r.threads or max(1, (os.cpu_count() or 1) // r.workers)
        log(f"{len(todo)} runs on {r.workers} worker processes × {threads} torch thread(s)")
        with cf.ProcessPoolExecutor(r.workers, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_worker, r.model_dump_json(), run.model_dump_json(), *args, threads): run
                    for run in todo}
            for fut in cf.as_completed(futs):
                run = futs[fut]
                res, seconds = fut.result()
                finished(runs.index(run) + 1, run, res, seconds)
    results = [results[run.name] for run in runs]  # type: ignore[assignment]
    _data_report(out, runs)
    path = write_outputs(out, r, results, beta)
    log(f"done: {out / 'report.md'}")
    return path


_SCORERS: dict[str, Any] = {}


def train_and_measure(r: EntroPORecipe, run: Run, start: str, out_dir: str, vpath: str | None, beta: float,
                      quiet: bool) -> dict:
    """Train one (loss, α, seed) run from ``start`` unless its final model exists, then measure it
    (cached in ``eval/<run>/metrics.json``). The SFT "runs" are the starting checkpoint, measured."""
    from reasonlab.analysis.tts import VerifierScorer
    from reasonlab.config import validate
    from reasonlab.train.preference import PreferenceSettings, train_preference

    out = Path(out_dir)
    model = start
    if run.loss != "sft":
        final = out / run.name / "final"
        if not (final / "config.json").exists():
            shared = {k: v for k, v in r.preference.items() if k != "sft_weight" or run.loss == "dpo"}
            cfg = validate(PreferenceSettings, {
                **shared, "model": start, "data": preference_data(r, out), "method": run.loss.split("-")[0],
                "alpha": run.alpha, "beta": beta, "pref_beta": None,
                "kto_form": "released" if run.loss == "kto-released" else "derived",
                "out": str(out / run.name), "seed": run.seed}, run.name)
            train_preference(cfg, show_progress=False)  # one stage line per run (run_entropo)
        if not r.keep_checkpoints:
            shutil.rmtree(out / run.name / "checkpoints", ignore_errors=True)
        model = str(final)
    if vpath is not None and vpath not in _SCORERS:
        _SCORERS[vpath] = VerifierScorer(vpath)
    return _measure(r, run, model, out, _SCORERS.get(vpath) if vpath else None, quiet)


def _worker(recipe_json: str, run_json: str, start: str, out_dir: str, vpath: str | None, beta: float,
            threads: int) -> tuple[dict, float]:
    """One run in a spawned worker process with its own torch thread count."""
    from reasonlab.experiments.behaviors import worker_progress

    t0 = time.time()
    worker_progress(threads)
    r = EntroPORecipe.model_validate_json(recipe_json)
    res = train_and_measure(r, Run.model_validate_json(run_json), start, out_dir, vpath, beta, True)
    return res, time.time() - t0


def preference_data(r: EntroPORecipe, out: Path) -> list[str]:
    """The preference data files: the starting policy's collected samples, then the teacher's."""
    data = [str(out / "collect" / "episodes" / "eval.jsonl")]
    if r.teacher_in_preference:
        data += [str(out / "teacher.jsonl")] * bool(r.teacher_traces) + list(r.teacher_episodes)
    return data


def _data_report(out: Path, runs: list[Run]) -> None:
    """Pair and label counts by source, from the first DPO and KTO runs' preference_state.json."""
    seen = {}
    for run in runs:
        state = out / run.name / "preference_state.json"
        kind = run.loss.split("-")[0]
        if kind in ("dpo", "kto") and kind not in seen and state.exists():
            s = json.loads(state.read_text())
            seen[kind] = {k: s.get(k) for k in ("episodes", "correct", "pairs", "pairs_by_source", "desirable",
                                                "undesirable", "labels_by_source", "examples") if k in s}
    (out / "data_stats.json").write_text(json.dumps(seen, indent=1))


def _add_token_entropy(model_path: str, eps: list, temperature: float) -> None:
    """The policy's mean token entropy on its own samples, into ``stats["mean_token_entropy"]`` (the
    diversity summary's entropy column: EntroPO's point is to keep it from collapsing)."""
    import torch
    from transformers import AutoModelForCausalLM

    from reasonlab.analysis.diversity import token_entropy

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    res = token_entropy(model, eps, temperature=temperature if temperature > 0 else 1.0)
    for e, h in zip(eps, res["per_episode"]):
        if h is not None:
            e.stats["mean_token_entropy"] = h


# ----------------------------------------------------------------------------- aggregation and report

KEY_METRICS = ("pass@1", "div/mean_token_entropy", "div/distinct_answers", "div/distinct_correct",
               "div/mean_pairwise_distance")


def mean_sd(xs: list[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample sd (0 for one value) and count of the values that are not None/NaN."""
    v = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None, 0
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, sd, len(v)


def _fmt(m: float | None, sd: float | None, signed: bool = False) -> str:
    if m is None:
        return "–"
    return f"{m:+.3f} ± {sd:.3f}" if signed else f"{m:.3f} ± {sd:.3f}"


def _groups(results: list[dict]) -> dict[tuple[str, str, float], list[dict]]:
    """Results grouped by (method, loss, α), in run order."""
    out: dict[tuple[str, str, float], list[dict]] = {}
    for res in results:
        row = res["row"]
        out.setdefault((row["method"], row["loss"], row["alpha"]), []).append(res)
    return out


def paired_differences(results: list[dict], metric: str) -> list[dict]:
    """Every (method, α) against its baseline, paired by seed: α > 0 against the same loss at α = 0
    (``kto-released`` against ``kto``), α = 0 against SFT. Mean ± sd of the per-seed differences."""
    by = {(res["row"]["loss"], res["row"]["alpha"], res["row"]["seed"]): res["row"] for res in results}
    rows = []
    for (method, loss, alpha), group in _groups(results).items():
        if loss == "sft":
            continue
        base_key = ("sft", 0.0) if alpha == 0 else ("kto" if loss == "kto-released" else loss, 0.0)
        diffs = []
        for res in group:
            b = by.get((*base_key, res["row"]["seed"]))
            x, y = res["row"].get(metric), b.get(metric) if b else None
            if x is not None and y is not None:
                diffs.append(x - y)
        m, sd, n = mean_sd(diffs)
        rows.append({"method": method, "alpha": alpha, "baseline": "sft" if alpha == 0 else f"{base_key[0]} α=0",
                     "metric": metric, "mean": m, "sd": sd, "seeds": n})
    return rows


def write_outputs(out: Path, r: EntroPORecipe, results: list[dict], beta: float) -> Path:
    rows = [res["row"] for res in results]
    for row in rows:
        row["beta"] = beta
        row["entro_alpha"] = round(row["alpha"] + beta, 12) if row["loss"] != "sft" else None
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    first = ["run", "method", "loss", "alpha", "entro_alpha", "beta", "seed"]
    cols = first + [c for c in cols if c not in first]
    _write_csv(out / "results.csv", cols, rows)
    metrics = [c for c in cols if c not in first]
    summary = []
    for (method, loss, alpha), group in _groups(results).items():
        s = {"method": method, "loss": loss, "alpha": alpha, "seeds": len(group)}
        for c in metrics:
            m, sd, _ = mean_sd([g["row"].get(c) for g in group])
            s[f"{c} mean"], s[f"{c} sd"] = m, sd
        summary.append(s)
    _write_csv(out / "summary.csv", list(summary[0]), summary)
    (out / "passk.json").write_text(json.dumps({res["row"]["run"]: res["passk"] for res in results}))
    (out / "tts_curves.json").write_text(json.dumps({res["row"]["run"]: res["curves"] for res in results},
                                                    default=str))
    plots = plot_all(out, r, results)
    (out / "report.md").write_text(_report(out, r, results, summary, beta, plots))
    md = (out / "report.md").read_text()
    for p in plots:
        data = base64.b64encode(p.read_bytes()).decode()
        md = md.replace(f"![{p.stem}]({p.name})", f'<img alt="{p.stem}" src="data:image/png;base64,{data}">')
    (out / "report.html").write_text(_html(r.name, md))
    return out


def _write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else ("" if v is None else v))
                        for k, v in row.items() if k in cols})


def _describe_base(r: EntroPORecipe) -> str:
    if isinstance(r.base_model, dict):
        from reasonlab.organisms import organism_path

        return f"the organism {organism_path(organism_spec(r)).name}"
    return str(r.base_model)


def _report(out: Path, r: EntroPORecipe, results: list[dict], summary: list[dict], beta: float,
            plots: list[Path]) -> str:
    from reasonlab.train.preference import describe_entropy

    nmax = results[0]["curves"]["Ns"][-1]
    alphas, _ = r.resolved_alphas()
    lines = [f"# {r.name}", "",
             f"From one starting checkpoint ({r.start_model or 'SFT of ' + _describe_base(r)}), {', '.join(r.losses)} "
             f"with α ∈ {alphas} (β = {beta:g}) on the same data for the same steps, seeds {r.seeds}; each run "
             f"evaluated on {r.eval_limit} test problems × {r.eval_n} samples. Values are mean ± sd over seeds.", ""]
    lines += [f"- α = {a:g}: {describe_entropy(a, beta)}" for a in alphas]
    vmeta = out / "verifier" / "reasonlab.json"
    if vmeta.exists():
        vline = (f"Learned verifier: trained from the starting checkpoint on {json.loads(vmeta.read_text())['pairs']}"
                 " (correct, incorrect) pairs of the collected trajectories.")
    else:
        vline = ("Learned verifier: none (switched off, or no collected problem had both a correct and an "
                 "incorrect trajectory): no verifier curve, and the hybrid runs without its verifier stage.")
    lines += ["", vline]
    stats = out / "data_stats.json"
    if stats.exists():
        lines += ["", f"Preference data: `{stats.read_text().strip()}`".replace("\n", " ")]
    show = ["pass@1", f"pass@{r.eval_n}", "div/mean_token_entropy", "div/distinct_answers", "div/distinct_correct",
            "div/mean_pairwise_distance"] + [f"tts/{s}@{nmax}" for s in r.tts.selectors]
    show = [c for c in show if f"{c} mean" in summary[0]]
    lines += ["", "## Results", "", "| method | α | " + " | ".join(show) + " |", "|---|---|" + "---|" * len(show)]
    for s in summary:
        cells = [_fmt(s[f"{c} mean"], s[f"{c} sd"]) for c in show]
        lines.append(f"| {s['method']} | {s['alpha']:g} | " + " | ".join(cells) + " |")
    lines += ["", "## Differences, paired by seed", "",
              "Each method against its baseline (α > 0: the same loss at α = 0, the released KTO against KTO; "
              "α = 0: the starting checkpoint), per-seed difference mean ± sd.", "",
              "| method | α | baseline | " + " | ".join(show) + " |", "|---|---|---|" + "---|" * len(show)]
    diffs = {c: paired_differences(results, c) for c in show}
    for i, d in enumerate(diffs[show[0]]):
        cells = [_fmt(diffs[c][i]["mean"], diffs[c][i]["sd"], signed=True) for c in show]
        lines.append(f"| {d['method']} | {d['alpha']:g} | {d['baseline']} | " + " | ".join(cells) + " |")
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "Data: results.csv (a row per run), summary.csv, passk.json (k = 1…n), tts_curves.json."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


def _band(ax, x, runs: list[list[float | None]], label: str, **kw) -> None:
    """Mean line and ± sd band over seeds of equally long curves."""
    stats = [mean_sd([c[i] for c in runs]) for i in range(len(x))]
    m = [s[0] if s[0] is not None else math.nan for s in stats]
    sd = [s[1] if s[1] is not None else 0.0 for s in stats]
    line, = ax.plot(x, m, label=label, **kw)
    ax.fill_between(x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)], alpha=0.15,
                    color=line.get_color())


def plot_all(out: Path, r: EntroPORecipe, results: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(results)
    alphas, _ = r.resolved_alphas()
    losses = [loss for loss in ("dpo", "kto", "kto-released") if any(k[1] == loss for k in groups)]
    cmap = plt.get_cmap("viridis")
    color = {a: cmap(i / max(1, len(alphas) - 1)) for i, a in enumerate(alphas)}
    sft = next((g for k, g in groups.items() if k[1] == "sft"), [])
    paths = []

    # pass@k: a panel per loss, a line per α, SFT dashed
    fig, axes = plt.subplots(1, len(losses), figsize=(4.6 * len(losses), 3.8), squeeze=False, sharey=True)
    for ax, loss in zip(axes[0], losses):
        if sft:
            _band(ax, range(1, len(sft[0]["passk"]) + 1), [g["passk"] for g in sft], "SFT", color="k", ls="--")
        for (method, lo, a), g in groups.items():
            if lo == loss or (loss == "kto-released" and lo == "kto" and a == 0):
                _band(ax, range(1, len(g[0]["passk"]) + 1), [x["passk"] for x in g], f"α={a:g}", color=color[a])
        ax.set(title=loss, xlabel="k", ylim=(0, 1.02))
        ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= len(results[0]["passk"])]
        if len(ks) > 1:
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("pass@k (unbiased; ± sd over seeds)")
    fig.tight_layout()
    paths.append(_save(fig, out / "pass_at_k.png"))

    # TTS: a panel per method (EntroPO at report_alpha), a line per selector
    show_a = r.report_alpha if r.report_alpha is not None else alphas[-1]
    panels = [(f"{k[0]}" + (f" α={k[2]:g}" if k[2] else ""), g) for k, g in groups.items()
              if k[2] in (0.0, show_a)]
    paths.append(_tts_grid(plt, out / "tts.png", panels, ncols=min(3, len(panels))))
    # TTS for every loss and α
    grid = [(f"{k[0]} α={k[2]:g}", g) for k, g in groups.items() if k[1] != "sft"]
    paths.append(_tts_grid(plt, out / "tts_alpha.png", grid, ncols=len(alphas)))

    # metrics vs α
    nmax = results[0]["curves"]["Ns"][-1]
    mets = ["pass@1", f"pass@{r.eval_n}", "div/mean_token_entropy", "div/distinct_answers",
            "div/distinct_correct", "div/mean_pairwise_distance", f"tts/hybrid@{nmax}", f"tts/majority@{nmax}"]
    mets = [m for m in mets if m in results[0]["row"]]
    fig, axes = plt.subplots(2, math.ceil(len(mets) / 2), figsize=(3.6 * math.ceil(len(mets) / 2), 6.4),
                             squeeze=False)
    for ax, met in zip(axes.flat, mets):
        for loss in losses:
            pts = [(k[2], mean_sd([x["row"].get(met) for x in g])) for k, g in groups.items()
                   if k[1] == loss or (loss == "kto-released" and k[1] == "kto" and k[2] == 0)]
            pts = [(a, s) for a, s in sorted(pts, key=lambda p: p[0]) if s[0] is not None]
            if pts:
                ax.errorbar([a for a, _ in pts], [s[0] for _, s in pts], yerr=[s[1] for _, s in pts],
                            marker="o", capsize=3, label=loss)
        if sft:
            m, _, _ = mean_sd([x["row"].get(met) for x in sft])
            if m is not None:
                ax.axhline(m, color="k", ls="--", lw=1, label="SFT")
        positive = [a for a in alphas if a > 0]
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        ax.set(title=met.replace("div/", ""), xlabel="α")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(mets):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out / "alpha.png"))
    return paths


def _tts_grid(plt, path: Path, panels: list[tuple[str, list[dict]]], ncols: int) -> Path:
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    for ax, (title, group) in zip(axes.flat, panels):
        Ns = group[0]["curves"]["Ns"]
        for name in group[0]["curves"]["accuracy"]:
            _band(ax, Ns, [g["curves"]["accuracy"][name] for g in group], name, marker="o", markersize=3)
        ax.set(title=title, xlabel="N", ylim=(0, 1.02))
        if max(Ns) > 1:
            ax.set_xscale("log", base=2)
            ax.set_xticks(Ns, [str(n) for n in Ns])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("selected accuracy (± sd over seeds)")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
