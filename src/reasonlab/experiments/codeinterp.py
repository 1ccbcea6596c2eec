"""`reasonlab run code-interpreter`: R1-Code-Interpreter's study (arXiv 2505.21668) in one command.

The paper's three findings, as arms of one experiment that share a base model and a task set:

    text              text-only SFT (direct answers) → GRPO without the interpreter
    code              tool-use SFT (trajectories that write, run and read a program) → GRPO with it
    code_curriculum   the same SFT model → GRPO with the improvement-potential curriculum
                      (p per problem from the SFT model's samples, Π = 4·p·(1−p), 4 staged groups)
    code_rl_only      the base model → GRPO with the interpreter, no SFT
    text_rl_only      the base model → GRPO without the interpreter, no SFT

    code − text                    code beats text on symbolic tasks
    code − code_rl_only            SFT before GRPO beats GRPO alone
    code_curriculum − code         the curriculum beats uniform sampling

On a CPU the base is a pretrained model organism (:mod:`reasonlab.organisms`) whose corpus is built
from the *train* tasks only (:mod:`reasonlab.experiments.codeinterp_corpus`: problems with direct
answers, and the tasks' solver programs as a code corpus); SFT data come from the programmatic code
teacher and a text teacher. On GPUs the base is any HF model and the SFT data any teacher's
trajectories (``teacher.code_data`` / ``teacher.text_data``, e.g. from ``reasonlab collect``).
Held-out *test tasks* never reach the corpus, SFT or RL; they are only evaluated.

Writes (every stage is skipped when its output is complete; RL resumes from its last checkpoint):

    base/                         the corpus and the base model's path (organism: cached by hash)
    data/{code,text}.jsonl        the SFT data (correct trajectories only)
    starts/<start>/               sft-code and sft-text models; competence of every start
                                  (train tasks' test instances and the held-out tasks, text and code)
    arms/<arm>/seed-<s>/rl/       one GRPO run per arm and seed (eval every K steps, episodes kept)
    arms/<arm>/seed-<s>/heldout/  the final model on the held-out test tasks
    arms/code_curriculum/seed-<s>/p-estimate/   the SFT model's samples on that seed's RL pool
    results.csv                   a row per arm, seed, eval step and task set: accuracy, per-task
                                  accuracy, code-use rate, accuracy with and without code, code-based
                                  self-checks, code calls, response length, train reward
    report.md / report.html, accuracy.png, per_task.png
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from reasonlab.config import Strict, dump_yaml
from reasonlab.episode import Episode, append_jsonl, read_episodes
from reasonlab.experiments.behaviors import (Progress, _fmt, _html, _mean_sd, final_by_seed, plot_band, worker_progress,
                                             write_results)

# arm → (starting model, interpreter on, curriculum)
ARMS: dict[str, tuple[str, bool, str]] = {
    "text": ("sft-text", False, "uniform"),
    "code": ("sft-code", True, "uniform"),
    "code_curriculum": ("sft-code", True, "potential"),
    "code_rl_only": ("base", True, "uniform"),
    "text_rl_only": ("base", False, "uniform"),
}
COMPARISONS = [("code", "text", "code beats text"), ("code", "code_rl_only", "SFT before GRPO beats GRPO alone"),
               ("code_curriculum", "code", "the curriculum beats uniform sampling"),
               ("text", "text_rl_only", "text SFT before GRPO beats GRPO alone")]


class CorpusSettings(Strict):
    per_task: int = Field(2500, ge=1, description="pretraining documents per train task")
    code_share: float = Field(0.5, ge=0, le=1, description="share of them that are notebooks: question, solver program, "
                              "its output, the answer")
    copy_share: float = Field(0.0, ge=0, le=1, description="share of them that are a question written twice (copying)")
    seed: int = 0


class TeacherSettings(Strict):
    problems: int = Field(1600, ge=1, description="train problems (spread over the train tasks) the teachers answer")
    seed: int = 1
    code_data: list[str] = Field(default_factory=list, description="tool-use SFT episodes (e.g. `reasonlab collect` "
                                 "with --tools python) instead of the programmatic code teacher")
    text_data: list[str] = Field(default_factory=list, description="text SFT episodes instead of the text teacher")


class CurriculumSpec(Strict):
    n: int = Field(8, ge=2, description="samples per pool problem to estimate p (R1-CI: 20)")
    groups: int = Field(4, ge=1)


class EvalSpec(Strict):
    per_task: int = Field(16, ge=1, description="test instances per task (train tasks in RL evals; held-out tasks at the end)")
    n: int = Field(4, ge=1, description="samples per problem")


class CodeInterpreterRecipe(Strict):
    name: str = "code-interpreter"
    out: str | None = None
    base: dict[str, Any] | str = Field(default_factory=dict, description="organism fields (pretrained on the corpus "
                                       "of the train tasks) or a model name / HF folder")
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    train_tasks: list[str] = Field(..., min_length=1)
    test_tasks: list[str] = Field(default_factory=list, description="held-out tasks: evaluated only")
    arms: list[str] = Field(default_factory=lambda: ["text", "code", "code_curriculum", "code_rl_only"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTSettings fields (model, data, out are set here)")
    rl: dict[str, Any] = Field(default_factory=dict, description="RLConfig fields (model, task, tools, out, seed are set here)")
    agent: dict[str, Any] = Field(default_factory=dict, description="AgentSettings of the interpreter arms")
    curriculum: CurriculumSpec = Field(default_factory=CurriculumSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    workers: int = Field(1, ge=1, description="RL runs at once, each in its own process")
    threads: int = Field(0, ge=0, description="torch threads per worker (0 = cores / workers)")

    @field_validator("train_tasks", "test_tasks")
    @classmethod
    def _expand_suites(cls, v: list[str]) -> list[str]:
        """``suite:NAME/PART`` entries stand for that suite part's tasks (e.g. suite:r1ci/train)."""
        from reasonlab.tasks.suites import parse_suite, suite_tasks

        out: list[str] = []
        for t in v:
            out += suite_tasks(*parse_suite(t.removeprefix("suite:"), "all")) if t.startswith("suite:") else [t]
        return list(dict.fromkeys(out))

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ARMS]
        if bad:
            raise ValueError(f"unknown arm(s) {bad}; allowed: {', '.join(ARMS)}")
        return v

    @model_validator(mode="after")
    def _tasks(self):
        from reasonlab.tasks import get_task
        from reasonlab.tasks.suites import check_trainable

        for t in self.train_tasks + self.test_tasks:
            get_task(t)  # unknown names fail here, with suggestions
        both = sorted(set(self.train_tasks) & set(self.test_tasks))
        if both:
            raise ValueError(f"train_tasks and test_tasks share {both}: a held-out task must never be trained on")
        check_trainable(self.train_tasks, "train_tasks")
        teacher = any(ARMS[a][0] == "sft-code" for a in self.arms) and not self.teacher.code_data
        corpus = isinstance(self.base, dict) and self.corpus.code_share > 0
        if teacher or corpus:
            from reasonlab.experiments.teach import has_solver

            missing = [t for t in self.train_tasks if not has_solver(get_task(t))]
            if missing:
                raise ValueError(f"{missing} have no solver program, which the "
                                 + ("programmatic code teacher" if teacher else "organism's code corpus")
                                 + " needs; drop them from train_tasks" + (" or give teacher.code_data" if teacher else ""))
        return self


def mix(tasks: list[str]) -> str:
    return tasks[0] if len(tasks) == 1 else "mix:" + ",".join(tasks)


# ----------------------------------------------------------------------------- stages


def base_spec(r: CodeInterpreterRecipe, out: Path, prog: Progress | None = None):
    """The organism spec of a recipe's ``base`` mapping; writes its corpus (``out/base/corpus.jsonl``,
    deterministic: its content names the organism) first when it is missing."""
    from reasonlab.experiments.codeinterp_corpus import corpus_documents
    from reasonlab.organisms import OrganismSpec
    from reasonlab.sandbox import Sandbox, SandboxConfig

    corpus = out / "base" / "corpus.jsonl"
    if not corpus.exists():
        if prog is not None:
            prog.line(f"base: writing the corpus ({r.corpus.per_task} documents × {len(r.train_tasks)} train tasks, "
                      f"{r.corpus.code_share:.0%} notebooks, {r.corpus.copy_share:.0%} copy documents)")
        with Sandbox(SandboxConfig(timeout_s=10.0, memory_mb=512)) as sb:
            docs = corpus_documents(r.train_tasks, r.corpus.per_task, code_share=r.corpus.code_share,
                                    seed=r.corpus.seed, sandbox=sb, copy_share=r.corpus.copy_share)
        corpus.parent.mkdir(parents=True, exist_ok=True)
        tmp = corpus.with_suffix(".partial")
        tmp.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        tmp.replace(corpus)
    return OrganismSpec(**{"name": "code", **r.base, "corpus": str(corpus)})


def ensure_base(r: CodeInterpreterRecipe, out: Path, prog: Progress) -> str:
    from reasonlab.models import resolve_model

    if isinstance(r.base, str):
        return str(resolve_model(r.base))
    from reasonlab.organisms import ensure_organism, organism_source, organism_status

    spec = base_spec(r, out, prog)
    worked = organism_source(spec) == "pretrain"
    prog.line(f"base: {organism_status(spec)}")
    path = str(ensure_organism(spec, log=prog.line))
    prog.advance(3, worked, key="base")
    return path


def ensure_data(r: CodeInterpreterRecipe, out: Path, kind: str, prog: Progress) -> list[str]:
    if kind == "code" and r.teacher.code_data:
        return list(r.teacher.code_data)
    if kind == "text" and r.teacher.text_data:
        return list(r.teacher.text_data)
    from reasonlab.tasks import get_task

    path = out / "data" / f"{kind}.jsonl"
    if not path.exists():
        task = get_task(mix(r.train_tasks))
        problems = task.problems("train", r.teacher.problems, seed=r.teacher.seed)
        if kind == "code":
            from reasonlab.experiments.teach import teach_episodes
            from reasonlab.sandbox import Sandbox, SandboxConfig

            with Sandbox(SandboxConfig(timeout_s=10.0, memory_mb=512)) as sb:
                eps, counts = teach_episodes(task, problems, sandbox=sb)
        else:
            from reasonlab.experiments.codeinterp_corpus import text_episodes

            eps = text_episodes(task, problems)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        append_jsonl(tmp, eps)
        tmp.replace(path)
        prog.line(f"data: {len(eps)} correct {kind} trajectories of {len(problems)} problems")
    return [str(path)]


def ensure_sft(r: CodeInterpreterRecipe, out: Path, kind: str, base: str, prog: Progress) -> str:
    from reasonlab.config import validate
    from reasonlab.train.sft import SFTSettings, train_sft

    d = out / "starts" / f"sft-{kind}"
    final = d / "sft" / "final"
    worked = not (final / "config.json").exists()
    if worked:
        data = ensure_data(r, out, kind, prog)
        cfg = validate(SFTSettings, {**r.sft, "model": base, "data": data, "out": str(d / "sft"), "seed": r.teacher.seed},
                       f"sft-{kind}")
        t0 = time.time()
        prog.line(f"sft-{kind}: SFT on {', '.join(Path(p).name for p in data)}")
        train_sft(cfg, show_progress=False)
        hist = json.loads((d / "sft" / "log_history.json").read_text())
        loss = [h["loss"] for h in hist if "loss" in h]
        prog.line(f"sft-{kind}: done in {_fmt(time.time() - t0)}" + (f", loss {loss[0]:.2f} → {loss[-1]:.2f}" if loss else ""))
    prog.advance(2, worked, key=f"sft-{kind}")
    return str(final)


def _agent(r: CodeInterpreterRecipe) -> dict[str, Any]:
    from reasonlab.config import AgentSettings

    return AgentSettings(**r.agent).model_dump()


def evaluate(r: CodeInterpreterRecipe, model: str, tasks: list[str], tools: bool, out: Path, *, split: str = "test",
             limit: int | None = None, n: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Sample and score ``model`` on ``tasks`` (resumable: an eval run directory)."""
    from reasonlab.config import EvalConfig, validate
    from reasonlab.experiments.evaluate import run_eval

    rl_roll = r.rl.get("rollout", {})
    cfg = validate(EvalConfig, {
        "task": mix(tasks), "model": model, "split": split, "limit": limit or r.eval.per_task * len(tasks),
        "n": n or r.eval.n, "seed": seed, "out": str(out), "tools": ["python"] if tools else [],
        "agent": _agent(r), "protocol": r.rl.get("protocol", "answer"),
        "sampling": {"temperature": rl_roll.get("temperature", 1.0), "max_new_tokens": rl_roll.get("max_new_tokens", 256)},
        "batch_size": rl_roll.get("batch_size", 64),
    }, "eval")
    if (out / "summary.json").exists() and (out / "config.yaml").exists():
        s = json.loads((out / "summary.json").read_text())
        if s.get("samples") == cfg.limit * cfg.n or s.get("problems", 0) >= cfg.limit:
            return s
    return run_eval(cfg, show_progress=False)


def ensure_competence(r: CodeInterpreterRecipe, out: Path, starts: dict[str, str], prog: Progress) -> None:
    """What each starting model does before RL: train tasks' test instances and the held-out tasks,
    with the interpreter (code) and without (text) where an arm starts that way."""
    modes: dict[str, set[bool]] = {}
    for a in r.arms:
        start, tools, _ = ARMS[a]
        modes.setdefault(start, set()).add(tools)
    for start, ms in modes.items():
        for tools in sorted(ms):
            for which, tasks in (("train-tasks", r.train_tasks), ("test-tasks", r.test_tasks)):
                if not tasks:
                    continue
                d = out / "starts" / start / f"eval-{which}-{'code' if tools else 'text'}"
                s = evaluate(r, starts[start], tasks, tools, d)
                m = episode_metrics(load_episodes(d / "episodes" / "eval.jsonl"))
                prog.line(f"{start} before RL, {which}, {'with' if tools else 'without'} the interpreter: "
                          f"{describe(m)}")
                (d / "metrics.json").write_text(json.dumps({**m, "pass@k": s.get("pass@k", {})}, indent=1))


# ----------------------------------------------------------------------------- metrics

_ASSERT = re.compile(r"^\s*assert\b", re.M)
_CODE = re.compile(r"```python\n(.*?)```", re.S)


def self_checks(e: Episode) -> int:
    """Code-based self-checks in an episode: a program that asserts a result (``assert``), or one that
    runs after an earlier program already printed a result without error (a re-check). A comparison
    inside a solver (``if sum(s) == t``) is computation, not a check, so ``==`` alone does not count."""
    n, ran_ok = 0, False
    msgs = e.messages or []
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant":
            continue
        for code in _CODE.findall(m.get("content", "")):
            if _ASSERT.search(code) or ran_ok:
                n += 1
        nxt = msgs[i + 1] if i + 1 < len(msgs) else None
        if nxt and nxt.get("role") == "tool" and "Traceback" not in nxt.get("content", "") and nxt["content"].strip("`\noutput "):
            ran_ok = True
    return n


def load_episodes(path: Path) -> list[Episode]:
    return read_episodes(path) if path.exists() else []


def episode_metrics(eps: list[Episode]) -> dict[str, Any]:
    if not eps:
        return {}
    acc = lambda es: sum(e.correct for e in es) / len(es) if es else None  # noqa: E731
    coded = [e for e in eps if e.stats.get("code_calls", 0) > 0]
    plain = [e for e in eps if e.stats.get("code_calls", 0) == 0]
    by_task: dict[str, list[Episode]] = {}
    for e in eps:
        by_task.setdefault(e.task, []).append(e)
    return {
        "accuracy": acc(eps), "code_use_rate": len(coded) / len(eps),
        "accuracy_with_code": acc(coded), "accuracy_without_code": acc(plain),
        "self_check_rate": sum(self_checks(e) > 0 for e in eps) / len(eps),
        "code_calls": sum(e.stats.get("code_calls", 0) for e in eps) / len(eps),
        "response_length": sum(e.stats.get("generated_tokens", 0) for e in eps) / len(eps),
        "episodes": len(eps), **{f"acc:{t}": acc(es) for t, es in sorted(by_task.items())},
    }


def describe(m: dict[str, Any]) -> str:
    if not m:
        return "no episodes"
    f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    tasks = ", ".join(f"{k[4:].split('/')[-1]} {f(v)}" for k, v in m.items() if k.startswith("acc:"))
    return (f"accuracy {f(m['accuracy'])} ({tasks}); code use {m['code_use_rate']:.0%}, accuracy with code "
            f"{f(m['accuracy_with_code'])} / without {f(m['accuracy_without_code'])}")


# ----------------------------------------------------------------------------- RL


def run_arm(r: CodeInterpreterRecipe, out: Path, arm: str, seed: int, start: str, prog: Progress) -> Path:
    """GRPO for one arm and seed (with the curriculum's p estimate first), then the held-out eval."""
    from reasonlab.config import validate
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import train_rl

    _, tools, kind = ARMS[arm]
    d = out / "arms" / arm / f"seed-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    tag = f"{arm} seed {seed}"
    cfg_d = {**r.rl, "model": start, "task": mix(r.train_tasks), "seed": seed, "out": str(d / "rl"),
             "eval_at_start": True, "tensorboard": False, "eval_limit": r.eval.per_task * len(r.train_tasks),
             "eval_n": r.eval.n}
    roll = dict(r.rl.get("rollout", {}))
    roll["tools"] = ["python"] if tools else []
    roll["agent"] = _agent(r)
    cfg_d["rollout"] = roll
    if kind == "potential":
        pool = int(r.rl.get("train_pool", RLConfig.model_fields["train_pool"].default))
        est = d / "p-estimate"
        t0 = time.time()
        evaluate(r, start, r.train_tasks, True, est, split="train", limit=pool, n=r.curriculum.n, seed=seed)
        prog.line(f"{tag}: p estimated on the {pool}-problem RL pool ({r.curriculum.n} samples each) in {_fmt(time.time() - t0)}")
        cfg_d["curriculum"] = {"kind": "potential", "episodes": [str(est / "episodes" / "eval.jsonl")],
                               "groups": r.curriculum.groups}
    cfg = validate(RLConfig, cfg_d, f"{arm}: rl")
    done = d / "rl" / "checkpoints" / f"step-{cfg.steps:06d}"
    if not done.exists():
        t0 = time.time()

        def on_step(row: dict[str, Any]) -> None:
            if "eval/accuracy" in row or row["step"] == cfg.steps:
                acc = f" · eval accuracy {row['eval/accuracy']:.3f}" if "eval/accuracy" in row else ""
                code = f" code calls {row['code_calls']:.2f}" if "code_calls" in row else ""
                prog.line(f"{tag}: GRPO step {row['step']}/{cfg.steps} reward {row.get('reward', float('nan')):.3f}"
                          f" train accuracy {row.get('accuracy', float('nan')):.3f}{code}{acc} · {_fmt(time.time() - t0)}")

        train_rl(cfg, resume=(d / "rl").exists(), show_progress=False, on_step=on_step)
    if r.test_tasks:
        evaluate(r, str(done), r.test_tasks, tools, d / "heldout", seed=seed)
    return d


def _worker(recipe_json: str, out: str, arm: str, seed: int, start: str, threads: int) -> tuple[str, float]:
    """One (arm, seed) in a worker process with its own torch thread count."""
    t0 = time.time()
    prog = worker_progress(threads)
    r = CodeInterpreterRecipe.model_validate_json(recipe_json)
    d = run_arm(r, Path(out), arm, seed, start, prog)
    return str(d), time.time() - t0


def arm_done(r: CodeInterpreterRecipe, out: Path, arm: str, seed: int) -> bool:
    steps = int(r.rl.get("steps", 100))
    d = out / "arms" / arm / f"seed-{seed}"
    return (d / "rl" / "checkpoints" / f"step-{steps:06d}").exists() and \
        (not r.test_tasks or (d / "heldout" / "summary.json").exists())


# ----------------------------------------------------------------------------- results


def collect_results(r: CodeInterpreterRecipe, out: Path) -> list[dict[str, Any]]:
    rows = []
    for arm in r.arms:
        for seed in r.seeds:
            d = out / "arms" / arm / f"seed-{seed}"
            reward = {}
            mpath = d / "rl" / "metrics.jsonl"
            if mpath.exists():
                for line in mpath.read_text().splitlines():
                    try:
                        m = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if "reward" in m:
                        reward[m["step"]] = m["reward"]
            for f in sorted((d / "rl" / "episodes").glob("eval-step-*.jsonl")):
                step = int(f.stem.split("-")[-1])
                m = episode_metrics(load_episodes(f))
                if m:
                    rows.append({"condition": arm, "seed": seed, "step": step, "tasks": "train", **m,
                                 "train_reward": reward.get(step)})
            h = d / "heldout" / "episodes" / "eval.jsonl"
            if h.exists() and (d / "heldout" / "summary.json").exists():
                steps = int(r.rl.get("steps", 100))
                rows.append({"condition": arm, "seed": seed, "step": steps, "tasks": "held-out",
                             **episode_metrics(load_episodes(h))})
    return rows


def comparisons(rows: list[dict[str, Any]], arms: list[str], tasks: str) -> list[dict[str, Any]]:
    sel = [x for x in rows if x["tasks"] == tasks]
    out = []
    for a, b, claim in COMPARISONS:
        if a in arms and b in arms:
            fa, fb = final_by_seed(sel, a), final_by_seed(sel, b)
            if fa and fb:
                ma, sa = _mean_sd(list(fa.values()))
                mb, sb = _mean_sd(list(fb.values()))
                se = (sa ** 2 / len(fa) + sb ** 2 / len(fb)) ** 0.5
                out.append({"a": a, "b": b, "claim": claim, "diff": ma - mb, "se": se, "seeds": min(len(fa), len(fb)),
                            "clear": abs(ma - mb) > 2 * se and se > 0 or (se == 0 and ma != mb)})
    return out


def plot_results(out: Path, r: CodeInterpreterRecipe, rows: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [x for x in rows if x["tasks"] == "train"]
    arms = [a for a in r.arms if any(x["condition"] == a for x in rows)]
    colors = {a: plt.cm.tab10(i % 10) for i, a in enumerate(ARMS)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=110)
    for ax, col, title in zip(axes, ("accuracy", "code_use_rate", "response_length"),
                              ("accuracy on the train tasks' test instances", "code-use rate", "tokens per episode")):
        for a in arms:
            plot_band(ax, train, a, col, colors[a])
        ax.set(xlabel="GRPO step", title=title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"mean ± sd over {len(r.seeds)} seeds")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths = [out / "accuracy.png"]
    fig.savefig(paths[0])
    plt.close(fig)
    tasks = r.train_tasks + r.test_tasks
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(tasks)), 4), dpi=110)
    width = 0.8 / max(1, len(arms))
    for i, a in enumerate(arms):
        ms, sds = [], []
        for t in tasks:
            sel = [x for x in rows if x["tasks"] == ("train" if t in r.train_tasks else "held-out")]
            vals = [v for v in final_by_seed([x for x in sel if x.get(f"acc:{t}") is not None], a, f"acc:{t}").values()]
            m, s = _mean_sd(vals)
            ms.append(0 if m != m else m)
            sds.append(s)
        ax.bar([j + i * width for j in range(len(tasks))], ms, width, yerr=sds, color=colors[a], label=a, capsize=2)
    ax.set_xticks([j + width * (len(arms) - 1) / 2 for j in range(len(tasks))])
    ax.set_xticklabels([t.split("/")[-1] + (" (held out)" if t in r.test_tasks else "") for t in tasks], fontsize=8)
    ax.set(ylabel="final accuracy (mean ± sd)", title="per task, after GRPO")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    paths.append(out / "per_task.png")
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def write_report(out: Path, r: CodeInterpreterRecipe, rows: list[dict[str, Any]], plots: list[Path],
                 timings: dict[str, float]) -> None:
    f = lambda xs, p=3: "{:.{p}f} ± {:.{p}f}".format(*_mean_sd(xs), p=p) if xs else "–"  # noqa: E731
    base = r.base if isinstance(r.base, str) else "an organism pretrained on the train tasks' corpus"
    lines = [f"# {r.name}", "",
             "R1-Code-Interpreter's study (arXiv 2505.21668): GRPO from text-only SFT, tool-use SFT (uniform and "
             "curriculum) and no SFT, on the same tasks.",
             f"Base: {base}. Train tasks: {', '.join(r.train_tasks)}. Held-out test tasks (never trained on): "
             f"{', '.join(r.test_tasks) or 'none'}. Seeds {r.seeds}; the spread is over RL seeds.", "",
             "## Starting models before RL", ""]
    for d in sorted((out / "starts").glob("*/eval-*")):
        mp = d / "metrics.json"
        if mp.exists():
            lines.append(f"- **{d.parent.name}**, {d.name[5:]}: {describe(json.loads(mp.read_text()))}")
    for tasks, title in (("train", "train tasks' test instances"), ("held-out", "held-out test tasks")):
        sel = [x for x in rows if x["tasks"] == tasks]
        if not sel:
            continue
        lines += ["", f"## Accuracy on the {title} (mean ± sd over seeds)", "",
                  "| arm | step 0 | final | code use (final) | accuracy with code | without code | self-check rate |",
                  "|---|---|---|---|---|---|---|"]
        for a in r.arms:
            fin = lambda col: [v for v in final_by_seed([x for x in sel if x.get(col) is not None], a, col).values()]  # noqa: E731
            a0 = list(final_by_seed(sel, a, step=0).values()) if tasks == "train" else []
            lines.append(f"| {a} | {f(a0) if a0 else '–'} | {f(fin('accuracy'))} | {f(fin('code_use_rate'), 2)} | "
                         f"{f(fin('accuracy_with_code'))} | {f(fin('accuracy_without_code'))} | {f(fin('self_check_rate'), 2)} |")
        comps = comparisons(rows, r.arms, tasks)
        if comps:
            lines += ["", "| the paper's claim | difference of final accuracy (± SE) | seeds | more than 2 SE |",
                      "|---|---|---|---|"]
            lines += [f"| {c['claim']}: {c['a']} − {c['b']} | {c['diff']:+.3f} ± {c['se']:.3f} | {c['seeds']} | "
                      f"{'yes' if c['clear'] else 'no'} |" for c in comps]
    if timings:
        lines += ["", "## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), "",
              "Full table: `results.csv` (a row per arm, seed, eval step and task set; `acc:<task>` per task)."]
    md = "\n".join(lines)
    (out / "report.md").write_text(md + "\n")
    body = md
    for p in plots:
        body = body.replace(f"![{p.stem}]({p.name})",
                            f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">')
    (out / "report.html").write_text(_html(r.name, body))


# ----------------------------------------------------------------------------- driver


def check_stages(r: CodeInterpreterRecipe) -> None:
    """Validate the SFT, RL and organism settings before any stage runs, naming the bad field."""
    from reasonlab.config import AgentSettings, validate
    from reasonlab.organisms import OrganismSpec
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.sft import SFTSettings

    validate(RLConfig, {**r.rl, "model": "-", "task": "countdown"}, "rl")
    validate(SFTSettings, {**r.sft, "model": "-", "data": ["-"], "out": "-"}, "sft")
    validate(AgentSettings, r.agent, "agent")
    if isinstance(r.base, dict):
        validate(OrganismSpec, {**r.base, "corpus": "-"}, "base")


def run_code_interpreter(r: CodeInterpreterRecipe, *, show_progress: bool = True) -> Path:
    import concurrent.futures as cf
    import multiprocessing as mp

    check_stages(r)
    out = Path(r.out or f"runs/{r.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(dump_yaml(r))
    starts_needed = {ARMS[a][0] for a in r.arms}
    sfts = sorted(s for s in starts_needed if s.startswith("sft-"))
    jobs = [(a, s) for s in r.seeds for a in r.arms]
    prog = Progress(3 + 2 * len(sfts) + 2 * len(jobs))  # stage lines always; --quiet drops the bars only
    prog.skip_known({(a, s) for a, s in jobs if arm_done(r, out, a, s)}, 2)
    timings: dict[str, float] = {}
    t0 = time.time()
    base = ensure_base(r, out, prog)
    timings["base (corpus + pretraining; 0 when cached)"] = time.time() - t0
    starts = {"base": base}
    for s in sfts:
        t0 = time.time()
        starts[s] = ensure_sft(r, out, s.removeprefix("sft-"), base, prog)
        timings[f"{s} (teacher data + SFT)"] = time.time() - t0
    t0 = time.time()
    ensure_competence(r, out, starts, prog)
    timings["competence of the starting models"] = time.time() - t0

    def finished(arm: str, seed: int, seconds: float, worked: bool) -> None:
        prog.line(f"{arm} seed {seed}: finished in {_fmt(seconds)}")
        prog.advance(2, worked, key=(arm, seed))
        timings[f"{arm} seed {seed}"] = seconds
        write_results(out, collect_results(r, out))

    if r.workers == 1:
        for arm, seed in jobs:
            t0 = time.time()
            worked = not arm_done(r, out, arm, seed)
            run_arm(r, out, arm, seed, starts[ARMS[arm][0]], prog)
            finished(arm, seed, time.time() - t0, worked)
    else:
        threads = r.threads or max(1, (os.cpu_count() or 1) // r.workers)
        with cf.ProcessPoolExecutor(r.workers, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_worker, r.model_dump_json(), str(out), a, s, starts[ARMS[a][0]], threads): (a, s, arm_done(r, out, a, s))
                    for a, s in jobs}
            for fut in cf.as_completed(futs):
                a, s, was_done = futs[fut]
                _, seconds = fut.result()
                finished(a, s, seconds, not was_done)
    rows = collect_results(r, out)
    write_results(out, rows)
    plots = plot_results(out, r, rows)
    prev = out / "timings.json"
    if prev.exists():
        old = json.loads(prev.read_text())
        timings = {k: (v if v > 5 else old.get(k, v)) for k, v in timings.items()}
    prev.write_text(json.dumps(timings, indent=1))
    write_report(out, r, rows, plots, timings)
    return out

