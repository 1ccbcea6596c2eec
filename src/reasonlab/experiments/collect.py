"""`reasonlab collect`: trajectories from a strong model behind an API (or a local model).

Run directory::

    config.yaml               the resolved config
    episodes/collect.jsonl    every trajectory as an Episode (a problem's n episodes at once)
    cache.sqlite              every API answer; a re-run pays nothing twice
    usage.json                requests, cached answers, retries, failures, tokens, cost
    summary.json              accuracy, pass@k, code use of what was collected

A problem counts as done when all its n episodes finished without an API error; a re-run skips
done problems and replays the cached turns of the others. When the budget is spent the run stops
cleanly (what finished is kept) and says how to continue.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from reasonlab.config import AgentSettings, ConfigError, EvalConfig, SamplingConfig, Strict, dump_yaml
from reasonlab.episode import append_jsonl, read_episodes, write_json_atomic


class CollectConfig(Strict):
    task: str = "countdown"
    task_args: dict[str, Any] = Field(default_factory=dict)
    split: Literal["train", "test"] = "train"
    limit: int = Field(100, ge=1)
    n: int = Field(4, ge=1, description="trajectories per problem")
    seed: int = 0
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; None = local model")
    model: str = Field(..., description="served model name, or a local model with base_url unset")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    concurrency: int = Field(8, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    price_in: float = Field(0.0, ge=0, description="cost per million prompt tokens")
    price_out: float = Field(0.0, ge=0, description="cost per million completion tokens")
    budget: float | None = Field(None, ge=0, description="stop sending requests above this cost")
    tools: list[Literal["python"]] = Field(default_factory=lambda: ["python"])
    agent: AgentSettings = Field(default_factory=AgentSettings)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.8, max_new_tokens=1024))
    protocol: Literal["answer", "r1ci"] = Field("answer", description="prompt/answer style (see EvalConfig.protocol)")
    sft_cap_per_task: int | None = Field(
        None, ge=1, description="also write episodes/sft.jsonl: the correct trajectories (rejection sampling), "
        "at most this many per task (R1-CI: 70)")
    out: str | None = None


def _done(path: Path, n: int) -> set[str]:
    if not path.exists():
        return set()
    by: dict[str, dict[int, Any]] = {}
    for e in read_episodes(path):
        if e.stats.get("finish_reason") not in ("error", "budget"):
            by.setdefault(e.problem_id, {})[e.sample_index] = e
    return {pid for pid, d in by.items() if all(j in d for j in range(n))}


def run_collect(cfg: CollectConfig, *, show_progress: bool = True) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from reasonlab.analysis.metrics import summarize
    from reasonlab.rollout.agent import AgentConfig
    from reasonlab.rollout.api_agent import collect_api
    from reasonlab.rollout.openai_client import OpenAIChat
    from reasonlab.tasks import get_task

    out = Path(cfg.out or f"runs/collect-{cfg.task.replace('/', '-')}-{Path(cfg.model).name}")
    if cfg.base_url is None:  # a local model: the evaluation machinery does exactly this
        from reasonlab.experiments.evaluate import run_eval

        ev = EvalConfig(task=cfg.task, task_args=cfg.task_args, model=cfg.model, split=cfg.split, limit=cfg.limit,
                        n=cfg.n, seed=cfg.seed, sampling=cfg.sampling, tools=cfg.tools, agent=cfg.agent, out=str(out),
                        protocol=cfg.protocol)
        summary = run_eval(ev, show_progress=show_progress)
        if cfg.sft_cap_per_task is not None:
            summary["sft"] = write_sft_data(out / "episodes" / "eval.jsonl", out / "episodes" / "sft.jsonl", cfg)
        return summary

    task = get_task(cfg.task, protocol=cfg.protocol, **cfg.task_args)
    problems = task.problems(cfg.split, cfg.limit, seed=cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_yaml(cfg))
    ep_path = out / "episodes" / "collect.jsonl"
    done = _done(ep_path, cfg.n)
    todo = [p for p in problems if p.id not in done]
    client = OpenAIChat(cfg.base_url, cfg.model, api_key=os.environ.get(cfg.api_key_env, "none"),
                        concurrency=cfg.concurrency, max_retries=cfg.max_retries, timeout_s=cfg.timeout_s,
                        cache=out / "cache.sqlite", price_in=cfg.price_in, price_out=cfg.price_out, budget=cfg.budget)
    sandbox = None
    if cfg.tools:
        from reasonlab.sandbox import Sandbox, SandboxConfig

        sandbox = Sandbox(SandboxConfig(timeout_s=cfg.agent.code_timeout_s, memory_mb=cfg.agent.code_memory_mb))
    agent = AgentConfig(cfg.agent.max_turns, cfg.agent.max_code_calls, cfg.agent.max_total_tokens,
                        cfg.agent.max_output_chars)
    params: dict[str, Any] = {"temperature": cfg.sampling.temperature, "top_p": cfg.sampling.top_p,
                              "max_tokens": cfg.sampling.max_new_tokens}
    stopped_by_budget = False
    cols = (TextColumn("[bold]collect"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn())
    try:
        with Progress(*cols, disable=not show_progress) as progress:
            bar = progress.add_task("collect", total=len(todo), info="")

            def on_problem(eps):
                nonlocal stopped_by_budget
                stopped_by_budget |= any(e.stats.get("finish_reason") == "budget" for e in eps)
                append_jsonl(ep_path, eps)
                u = client.usage
                progress.update(bar, advance=1, info=f"{u.requests} req · {u.cached} cached · ${u.cost:.4f}")

            if todo:
                collect_api(client, task, todo, cfg.n, sandbox=sandbox, config=agent, params=params,
                            on_problem=on_problem)
    finally:
        if sandbox is not None:
            sandbox.close()
        client.close()
    usage = client.usage.as_dict()
    write_json_atomic(out / "usage.json", usage)
    wanted = {p.id for p in problems}
    complete = _done(ep_path, cfg.n)
    eps_all = [e for e in read_episodes(ep_path)] if ep_path.exists() else []
    latest: dict[tuple, Any] = {}
    for e in eps_all:
        latest[(e.problem_id, e.sample_index)] = e
    eps = [e for (pid, _), e in latest.items() if pid in complete and pid in wanted]
    summary = summarize(eps) if eps else {"problems": 0}
    summary.update({"usage": usage, "complete_problems": len(complete & wanted), "asked_problems": len(problems),
                    "stopped_by_budget": stopped_by_budget, "run_dir": str(out)})
    if cfg.sft_cap_per_task is not None:
        summary["sft"] = write_sft_data(ep_path, out / "episodes" / "sft.jsonl", cfg, keep=eps)
    write_json_atomic(out / "summary.json", summary)
    return summary


def write_sft_data(src: Path, dst: Path, cfg: CollectConfig, keep: list | None = None) -> dict[str, int]:
    """SFT data from collected trajectories: correct ones only, at most ``sft_cap_per_task`` per task."""
    from reasonlab.train.sft import select_episodes

    eps = keep if keep is not None else (read_episodes(src) if src.exists() else [])
    chosen, counts = select_episodes(eps, only_correct=True, cap_per_task=cfg.sft_cap_per_task, seed=cfg.seed)
    tmp = dst.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    append_jsonl(tmp, chosen)
    os.replace(tmp, dst)
    counts["path"] = str(dst)
    return counts


def check_endpoint_config(cfg: CollectConfig) -> None:
    if cfg.base_url is not None and not cfg.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url {cfg.base_url!r} must start with http:// or https://")
