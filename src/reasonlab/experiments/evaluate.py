"""`reasonlab eval`: sample n responses per problem, score them, write a run directory.

Run directory (``runs/eval-<task>-<model>`` unless ``out`` is given)::

    config.yaml            the resolved config
    episodes/eval.jsonl    every sample as an Episode (appended problem-chunk by problem-chunk)
    summary.json           accuracy, pass@k, maj@k, format rate, lengths, generation speed
    report.md              the short report, with pass_at_k.png

Resume: episodes are appended and fsynced a chunk of problems at a time; a re-run with the same
config skips every problem that already has its n samples, so an interrupted evaluation loses at
most the chunk in flight. ``limit`` may grow between runs (the new problems are added).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import yaml

from reasonlab.analysis.metrics import summarize
from reasonlab.config import ConfigError, EvalConfig, dump_yaml
from reasonlab.episode import Episode, append_jsonl, read_episodes, write_json_atomic
from reasonlab.rollout.agent import AgentConfig, run_agent
from reasonlab.rollout.base import SamplingParams
from reasonlab.tasks import get_task
from reasonlab.tasks.base import stable_hash

# Fields that must not change when resuming into an existing run directory.
RESUME_KEYS = ("task", "task_args", "model", "split", "n", "seed", "sampling", "tools", "protocol")


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s.strip("/")).strip("-")[-60:]


def default_out(cfg: EvalConfig) -> Path:
    return Path("runs") / f"eval-{slug(cfg.task.replace(':', '-'))}-{slug(Path(cfg.model).name or cfg.model)}"


def check_resume(out: Path, cfg: EvalConfig) -> None:
    old_path = out / "config.yaml"
    if not old_path.exists():
        return
    old = {**EvalConfig().model_dump(mode="json"), **(yaml.safe_load(old_path.read_text()) or {})}
    new = cfg.model_dump(mode="json")
    diff = [k for k in RESUME_KEYS if old.get(k) != new.get(k)]
    if diff:
        raise ConfigError(
            f"{out} holds a run with a different {', '.join(diff)} "
            f"(was {', '.join(f'{k}={old.get(k)!r}' for k in diff)}). "
            "Choose another --out, or delete that directory to start over."
        )


def load_done(path: Path, n: int) -> dict[str, list[Episode]]:
    """Episodes already on disk, by problem, keeping only problems with all n samples."""
    if not path.exists():
        return {}
    by: dict[str, dict[int, Episode]] = {}
    for e in read_episodes(path):
        by.setdefault(e.problem_id, {})[e.sample_index] = e  # a redone sample replaces the old
    return {pid: [d[j] for j in range(n)] for pid, d in by.items() if all(j in d for j in range(n))}


def run_eval(cfg: EvalConfig, *, show_progress: bool = True, backend: Any = None) -> dict:
    """Evaluate ``cfg.model`` on ``cfg.task``; returns the summary (also written to disk)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    task = get_task(cfg.task, protocol=cfg.protocol, **cfg.task_args)  # bad names fail before anything is written
    problems = task.problems(cfg.split, cfg.limit, seed=cfg.seed)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    check_resume(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_yaml(cfg))
    ep_path = out / "episodes" / "eval.jsonl"
    done = load_done(ep_path, cfg.n)
    todo = [p for p in problems if p.id not in done]
    gen_tokens, gen_seconds = 0, 0.0

    if todo:
        if backend is None and cfg.backend == "vllm":
            from reasonlab.rollout.vllm_backend import VLLMBackend

            backend = VLLMBackend(cfg.model, dtype=cfg.dtype, seed=cfg.seed, gpu_memory_utilization=0.85)
        elif backend is None:
            from reasonlab.rollout.hf import HFBackend

            backend = HFBackend(cfg.model, dtype=cfg.dtype, device=cfg.device, batch_size=cfg.batch_size,
                                compile=cfg.compile)
        sandbox = None
        if cfg.tools:
            from reasonlab.sandbox import Sandbox, SandboxConfig

            sandbox = Sandbox(SandboxConfig(timeout_s=cfg.agent.code_timeout_s, memory_mb=cfg.agent.code_memory_mb))
            agent = AgentConfig(cfg.agent.max_turns, cfg.agent.max_code_calls, cfg.agent.max_total_tokens,
                                cfg.agent.max_output_chars)
        else:  # single turn: the token budget is the sampling budget
            agent = AgentConfig(max_turns=1, max_code_calls=0, max_total_tokens=cfg.sampling.max_new_tokens)
        per_chunk = max(1, (2 * cfg.batch_size) // cfg.n)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not show_progress) as progress:
            bar = progress.add_task(f"eval {cfg.task}", total=len(todo) * cfg.n, rate="")
            for c in range(0, len(todo), per_chunk):
                chunk = todo[c : c + per_chunk]
                params = SamplingParams(
                    n=cfg.n,
                    temperature=cfg.sampling.temperature,
                    top_p=cfg.sampling.top_p,
                    top_k=cfg.sampling.top_k,
                    max_new_tokens=cfg.sampling.max_new_tokens,
                    stop=list(cfg.sampling.stop),
                    seed=stable_hash(cfg.seed, chunk[0].id) % (2**31),
                )
                t0 = time.perf_counter()

                def advance(k: int) -> None:
                    progress.advance(bar, k)

                try:
                    groups = run_agent(backend, task, chunk, params, sandbox=sandbox, config=agent,
                                       tools=cfg.tools, progress=advance)
                except BaseException:
                    if sandbox is not None:
                        sandbox.close()
                    raise
                gen_seconds += time.perf_counter() - t0
                eps = [e for g in groups for e in g]
                gen_tokens += sum(e.stats["generated_tokens"] for e in eps)
                append_jsonl(ep_path, eps)
                progress.update(bar, rate=f"{gen_tokens / max(gen_seconds, 1e-9):.0f} tok/s")
        if sandbox is not None:
            sandbox.close()

    wanted = {p.id for p in problems}
    done = load_done(ep_path, cfg.n)
    episodes = [e for pid, eps in done.items() if pid in wanted for e in eps]
    summary = summarize(episodes)
    summary.update({"task": cfg.task, "model": cfg.model, "split": cfg.split, "run_dir": str(out)})
    if gen_tokens:
        summary["generation"] = {"tokens": gen_tokens, "seconds": round(gen_seconds, 2), "tokens_per_s": gen_tokens / gen_seconds}
    write_json_atomic(out / "summary.json", summary)
    write_report(out, summary, cfg, episodes)
    return summary


def write_report(out: Path, summary: dict, cfg: EvalConfig, episodes: list[Episode]) -> None:
    from reasonlab.experiments.report import eval_report, plot_pass_at_k

    if not summary.get("problems"):
        return
    plot_pass_at_k(summary, out / "pass_at_k.png", title=f"{cfg.task} · {cfg.model} · n={cfg.n}")
    good = next((e for e in episodes if e.correct), None)
    bad = next((e for e in episodes if not e.correct), None)
    (out / "report.md").write_text(eval_report(summary, cfg.model_dump(mode="json"), [good, bad]))
