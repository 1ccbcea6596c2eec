"""`reasonlab` command line (typer + rich). Every command has --help with an example."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="reasonlab: train and study LLM reasoners on verifiable tasks.\n\n"
    "Quick start: reasonlab eval --task countdown --model smollm2-135m --n 4 --limit 20",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="List and inspect tasks.", no_args_is_help=True)
models_app = typer.Typer(help="Embedded, tiny and local models.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(models_app, name="models")

console = Console()
err = Console(stderr=True)


def fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors():
    from reasonlab.config import ConfigError
    from reasonlab.episode import JSONLError

    return (ConfigError, JSONLError, KeyError, ValueError, FileNotFoundError, ImportError)


# ----------------------------------------------------------------------------- tasks


@tasks_app.command("list")
def tasks_list(
    filter: Optional[str] = typer.Argument(None, help="only names containing this text"),
) -> None:
    """List every task (countdown and each reasoning-gym dataset as gym/<name>).

    Example: reasonlab tasks list gym/arc
    """
    from reasonlab.tasks import list_tasks

    table = Table("task", "description", title="reasonlab tasks")
    for name, desc in list_tasks().items():
        if filter is None or filter in name:
            table.add_row(name, desc)
    console.print(table)


@tasks_app.command("show")
def tasks_show(
    name: str = typer.Argument(..., help="task name, e.g. countdown or gym/leg_counting"),
    n: int = typer.Option(2, "--n", help="number of problems to show"),
    split: str = typer.Option("test", help="train or test"),
    seed: int = typer.Option(0, help="generation seed"),
    as_json: bool = typer.Option(False, "--json", help="print problems as JSON lines"),
) -> None:
    """Show a few problems of a task: prompt messages, reference answer, metadata.

    Example: reasonlab tasks show countdown --n 3 --split train
    """
    from reasonlab.tasks import get_task

    try:
        task = get_task(name)
        problems = task.problems(split, n, seed=seed)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    for p in problems:
        if as_json:
            print(json.dumps(p.to_dict(), default=str))
            continue
        console.rule(f"[bold]{p.id}")
        for m in task.messages(p):
            console.print(f"[cyan]{m['role']}:[/] {m['content']}", highlight=False)
        console.print(f"[green]answer:[/] {p.answer}", highlight=False)
        meta = {k: v for k, v in p.metadata.items() if k != "entry"}
        if meta:
            console.print(f"[dim]metadata: {meta}[/]", highlight=False)


# ----------------------------------------------------------------------------- models


@models_app.command("list")
def models_list() -> None:
    """List embedded models (imported or not) and models created under the models folder.

    Example: reasonlab models list
    """
    from reasonlab.models import list_models, models_dir

    table = Table("name", "status", "path", "description", title=f"models ({models_dir()})")
    for r in list_models():
        table.add_row(r["name"], r["status"], r["path"], r["description"])
    console.print(table)


@models_app.command("import")
def models_import(
    name: str = typer.Argument(..., help="embedded model name: smollm2-135m"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: the models folder)"),
    force: bool = typer.Option(False, help="re-import even if already there"),
) -> None:
    """Turn an embedded GGUF model into a plain Hugging Face folder (fp32, no quantization config).

    Example: reasonlab models import smollm2-135m
    """
    from reasonlab.models import import_model

    try:
        with console.status(f"importing {name} (dequantizing GGUF)…"):
            path = import_model(name, out, force=force)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    console.print(f"[green]imported[/] {name} → {path}")


@models_app.command("create")
def models_create(
    kind: str = typer.Argument(..., help="model kind: tiny"),
    out: Path = typer.Option(..., help="output folder"),
    layers: int = typer.Option(2, help="transformer layers"),
    width: int = typer.Option(64, help="hidden size"),
    heads: int = typer.Option(4, help="attention heads"),
    vocab_size: int = typer.Option(512, help="BPE vocabulary size"),
    tasks: str = typer.Option("countdown", help="comma-separated tasks whose text trains the tokenizer"),
    seed: int = typer.Option(0, help="initialisation seed"),
) -> None:
    """Create a from-scratch Llama-architecture model with a tokenizer trained on task text.

    Example: reasonlab models create tiny --out models/tiny --layers 4 --width 128
    """
    from reasonlab.models import create_tiny

    if kind != "tiny":
        fail(f"unknown model kind {kind!r}; allowed: tiny")
    try:
        path = create_tiny(out, layers=layers, width=width, heads=heads, vocab_size=vocab_size,
                           tasks=tuple(t for t in tasks.split(",") if t), seed=seed)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    meta = json.loads((path / "reasonlab.json").read_text())
    console.print(f"[green]created[/] {meta['description']} → {path}")


# ----------------------------------------------------------------------------- eval


def _parse_task_args(items: list[str]) -> dict:
    import yaml

    out = {}
    for it in items:
        if "=" not in it:
            fail(f"--task-arg {it!r}: expected KEY=VALUE, e.g. --task-arg max_numbers=5")
        k, v = it.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


@app.command("eval")
def eval_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (options below override it)"),
    task: Optional[str] = typer.Option(None, help="task name [default: countdown]"),
    task_arg: list[str] = typer.Option([], help="task keyword argument KEY=VALUE (repeatable)"),
    model: Optional[str] = typer.Option(None, help="model name, HF folder or hub name [default: smollm2-135m]"),
    n: Optional[int] = typer.Option(None, "--n", help="samples per problem [default: 16]"),
    limit: Optional[int] = typer.Option(None, help="number of problems [default: 100]"),
    split: Optional[str] = typer.Option(None, help="train or test [default: test]"),
    seed: Optional[int] = typer.Option(None, help="problem and sampling seed [default: 0]"),
    temperature: Optional[float] = typer.Option(None, help="sampling temperature, 0 = greedy [default: 1.0]"),
    top_p: Optional[float] = typer.Option(None, help="nucleus sampling [default: 1.0]"),
    top_k: Optional[int] = typer.Option(None, help="top-k sampling, 0 = off [default: 0]"),
    max_new_tokens: Optional[int] = typer.Option(None, help="tokens per response [default: 256]"),
    dtype: Optional[str] = typer.Option(None, help="auto, bf16, fp16 or fp32 [default: auto]"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda [default: auto]"),
    batch_size: Optional[int] = typer.Option(None, help="sequences decoded together [default: 64]"),
    compile: Optional[str] = typer.Option(None, help="decoding loop: auto, on (torch.compile) or off [default: auto]"),
    out: Optional[str] = typer.Option(None, help="run directory [default: runs/eval-<task>-<model>]"),
    tools: Optional[str] = typer.Option(None, help="tools the model may call, e.g. python [default: none]"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Evaluate a model on a task: sample n responses per problem, score, report (resumable).

    Writes a run directory with every sample as an Episode (episodes/eval.jsonl), summary.json (accuracy, pass@k, maj@k, format rate, mean length), report.md and pass_at_k.png. Running the same command again resumes where it stopped.

    Example: reasonlab eval --task countdown --model smollm2-135m --n 16 --limit 100

    With the code interpreter: reasonlab eval --task countdown --tools python --n 4 --limit 20
    """
    from reasonlab.config import EvalConfig, load_config
    from reasonlab.experiments.evaluate import default_out, run_eval

    overrides = {
        "task": task, "model": model, "n": n, "limit": limit, "split": split, "seed": seed,
        "sampling.temperature": temperature, "sampling.top_p": top_p, "sampling.top_k": top_k,
        "sampling.max_new_tokens": max_new_tokens, "dtype": dtype, "device": device,
        "batch_size": batch_size, "compile": compile, "out": out,
    }
    if tools is not None:
        overrides["tools"] = [t for t in tools.split(",") if t]
    if task_arg:
        overrides["task_args"] = _parse_task_args(task_arg)
    try:
        cfg = load_config(EvalConfig, config, overrides)
        summary = run_eval(cfg, show_progress=not quiet)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: finished problems are saved; run the same command to resume.")
        raise typer.Exit(130)
    _print_summary(summary, cfg.out or str(default_out(cfg)))


def _print_summary(s: dict, out: str) -> None:
    if not s.get("problems"):
        console.print("no complete problems yet")
        return
    table = Table("metric", "value", title=f"{s['task']} · {s['model']}")
    for k in ("problems", "samples_per_problem", "accuracy", "format_rate", "mean_reward", "mean_generated_tokens"):
        v = s[k]
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    for k, v in s["pass@k"].items():
        table.add_row(f"pass@{k} / maj@{k}", f"{v:.3f} / {s['maj@k'][k]:.3f}")
    for k, v in (s.get("tools") or {}).items():
        table.add_row(k, "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
    if "generation" in s:
        table.add_row("generation tok/s", f"{s['generation']['tokens_per_s']:.0f}")
    console.print(table)
    console.print(f"run directory: [bold]{out}[/] (report.md, summary.json, pass_at_k.png, episodes/)")


# ----------------------------------------------------------------------------- train

train_app = typer.Typer(help="Training: SFT on Episodes; on-policy RL (PPO, GRPO, Dr. GRPO, RLOO).", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("rl")
def train_rl_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="YAML recipe, e.g. recipes/rl-countdown-grpo-cpu.yaml"),
    resume: bool = typer.Option(False, help="continue the run in the output directory from its last checkpoint"),
    out: Optional[str] = typer.Option(None, help="run directory [default: from the config]"),
    model: Optional[str] = typer.Option(None, help="override the policy model"),
    algorithm: Optional[str] = typer.Option(None, help="override: ppo, grpo, dr_grpo or rloo"),
    steps: Optional[int] = typer.Option(None, help="override the number of RL steps"),
    stop_after: Optional[int] = typer.Option(None, help="stop after this many steps of this call (resume later)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Train a policy with on-policy RL on a task, with or without the code interpreter.

    Each step samples problems, rolls out n responses each through the agent loop, scores them, computes advantages (GAE with a critic for PPO; group-relative for GRPO/RLOO) and runs clipped minibatch updates. Writes metrics.jsonl, TensorBoard logs, periodic eval and atomic HF-format checkpoints to the run directory; --resume continues exactly where a killed run stopped.

    Example: reasonlab train rl --config recipes/rl-toy-grpo-cpu.yaml
    """
    from reasonlab.config import load_config
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import train_rl

    try:
        cfg = load_config(RLConfig, config, {"out": out, "model": model, "algorithm": algorithm, "steps": steps})
        run_dir = train_rl(cfg, resume=resume, show_progress=not quiet, stop_after=stop_after)
    except (*_user_errors(), FileExistsError) as e:
        fail(str(e).strip("'\""))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: run again with --resume to continue from the last checkpoint.")
        raise typer.Exit(130)
    _print_rl(run_dir)


@train_app.command("sft")
def train_sft_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (options below override it)"),
    model: Optional[str] = typer.Option(None, help="model to fine-tune"),
    data: list[str] = typer.Option([], help="Episode JSONL file (repeatable)"),
    out: Optional[str] = typer.Option(None, help="run directory [default: runs/sft]"),
    max_steps: Optional[int] = typer.Option(None, help="optimizer steps (overrides epochs)"),
    epochs: Optional[float] = typer.Option(None, help="passes over the data [default: 1]"),
    lr: Optional[float] = typer.Option(None, help="learning rate [default: 1e-5]"),
    only_correct: Optional[bool] = typer.Option(None, help="train only on correct episodes (rejection sampling)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Supervised fine-tuning on Episodes (TRL SFTTrainer), loss only on the policy's tokens.

    Prompt and tool-output tokens are masked out, multi-turn conversations included. Re-running the same command resumes from the last checkpoint; the final model is written to OUT/final.

    Example: reasonlab train sft --model models/tiny --data traces.jsonl --out runs/sft-tiny --max-steps 200
    """
    from reasonlab.config import load_config
    from reasonlab.train.sft import SFTSettings, train_sft

    overrides = {"model": model, "out": out, "max_steps": max_steps, "epochs": epochs, "lr": lr,
                 "only_correct": only_correct, "data": data or None}
    try:
        cfg = load_config(SFTSettings, config, overrides)
        final = train_sft(cfg, show_progress=not quiet)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    console.print(f"[green]fine-tuned model[/] → {final}")


@app.command("collect")
def collect_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (options below override it)"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (unset: a local model)"),
    model: Optional[str] = typer.Option(None, help="served model name (or a local model without --base-url)"),
    task: Optional[str] = typer.Option(None, help="task [default: countdown]"),
    n: Optional[int] = typer.Option(None, "--n", help="trajectories per problem [default: 4]"),
    limit: Optional[int] = typer.Option(None, help="problems [default: 100]"),
    split: Optional[str] = typer.Option(None, help="train or test [default: train]"),
    concurrency: Optional[int] = typer.Option(None, help="requests in flight [default: 8]"),
    budget: Optional[float] = typer.Option(None, help="stop above this cost (prices: price_in/price_out per 1M tokens)"),
    price_in: Optional[float] = typer.Option(None, help="cost per million prompt tokens"),
    price_out: Optional[float] = typer.Option(None, help="cost per million completion tokens"),
    tools: Optional[str] = typer.Option(None, help="tools: python (default) or none"),
    out: Optional[str] = typer.Option(None, help="run directory"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Collect multi-turn, tool-using trajectories from a model behind an API (or a local model).

    n trajectories per problem through the agent loop with the code interpreter; concurrency limit, retries with backoff, rate-limit handling, token and cost accounting, a budget that stops the run, and resume without paying twice (every answer is cached in the run directory). Set the API key in OPENAI_API_KEY.

    Example: reasonlab collect --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct --task countdown --n 4 --limit 200
    """
    from reasonlab.config import load_config
    from reasonlab.experiments.collect import CollectConfig, check_endpoint_config, run_collect

    overrides = {"base_url": base_url, "model": model, "task": task, "n": n, "limit": limit, "split": split,
                 "concurrency": concurrency, "budget": budget, "price_in": price_in, "price_out": price_out, "out": out}
    if tools is not None:
        overrides["tools"] = [] if tools == "none" else [t for t in tools.split(",") if t]
    try:
        cfg = load_config(CollectConfig, config, overrides)
        check_endpoint_config(cfg)
        s = run_collect(cfg, show_progress=not quiet)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: finished problems are saved and every answer is cached; run again to resume.")
        raise typer.Exit(130)
    u = s.get("usage", {})
    table = Table("metric", "value", title=f"collected → {s.get('run_dir')}")
    for k in ("complete_problems", "asked_problems", "accuracy", "format_rate"):
        if k in s:
            table.add_row(k, f"{s[k]:.3f}" if isinstance(s[k], float) else str(s[k]))
    for k in ("requests", "cached", "retries", "failures", "prompt_tokens", "completion_tokens", "cost"):
        if k in u:
            table.add_row(k, f"{u[k]:.4f}" if isinstance(u[k], float) else str(u[k]))
    console.print(table)
    if s.get("stopped_by_budget"):
        err.print("[yellow]budget reached[/]: raise --budget and run the same command to continue.")


@train_app.command("pref")
def train_pref_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (options below override it)"),
    model: Optional[str] = typer.Option(None, help="model to train (also the frozen reference)"),
    data: list[str] = typer.Option([], help="scored Episode JSONL file (repeatable)"),
    method: Optional[str] = typer.Option(None, help="dpo or kto [default: dpo]"),
    alpha: Optional[float] = typer.Option(None, help="EntroPO entropy coefficient, ours: alpha = entro_alpha - pref_beta; 0 = plain DPO/KTO [default: 0]"),
    beta: Optional[float] = typer.Option(None, help="KL coefficient [default: 0.1]"),
    entro_alpha: Optional[float] = typer.Option(None, help="the paper's alpha_p (with --pref-beta) instead of --alpha/--beta: 0.11 with 0.1 is alpha 0.01"),
    pref_beta: Optional[float] = typer.Option(None, help="the paper's beta_p (= beta)"),
    kto_form: Optional[str] = typer.Option(None, help="EntroPO-KTO: derived (ours) or released (entropy only in the reference point) [default: derived]"),
    pairing: Optional[str] = typer.Option(None, help="DPO pairs: random, all or hardest [default: random]"),
    out: Optional[str] = typer.Option(None, help="run directory [default: runs/preference]"),
    max_steps: Optional[int] = typer.Option(None, help="optimizer steps (overrides epochs)"),
    lr: Optional[float] = typer.Option(None, help="learning rate [default: 1e-6]"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Offline preference optimization on multi-turn trajectories: DPO/KTO, or EntroPO with --alpha > 0.

    Builds pairs (DPO: a correct against an incorrect trajectory of the same problem) or labels (KTO: desirable = correct) from scored Episodes and trains with TRL's trainers, tool-output tokens masked. EntroPO adds alpha * entropy to the objective (see reasonlab/train/preference.py for the derivation); alpha = 0 is exactly TRL's loss. Resumes from the last checkpoint; the model is written to OUT/final.

    Example: reasonlab train pref --model runs/sft/final --data runs/collect/episodes/collect.jsonl --alpha 0.01 --out runs/entropo-dpo
    """
    from reasonlab.config import load_config
    from reasonlab.train.preference import PreferenceSettings, describe_entropy, train_preference

    overrides = {"model": model, "data": data or None, "method": method, "alpha": alpha, "beta": beta,
                 "entro_alpha": entro_alpha, "pref_beta": pref_beta, "kto_form": kto_form, "pairing": pairing, "out": out, "max_steps": max_steps, "lr": lr}
    try:
        cfg = load_config(PreferenceSettings, config, overrides)
        console.print(f"[bold]{cfg.method}[/]: {describe_entropy(cfg.alpha, cfg.beta)}")
        final = train_preference(cfg)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    console.print(f"[green]trained[/] {cfg.method}{' (EntroPO, alpha=' + str(cfg.alpha) + ')' if cfg.alpha else ''} → {final}")


@app.command("tts")
def tts_cmd(
    episodes: list[Path] = typer.Argument(..., help="Episode JSONL file(s): N samples per problem"),
    out: Path = typer.Option(Path("runs/tts"), help="output folder: curves.json, tts.png"),
    selectors: str = typer.Option("random,majority,oracle", help="comma-separated: random, majority, oracle, execution, execution_oracle, verifier, hybrid (EntroPO's cascade), weighted"),
    verifier: Optional[str] = typer.Option(None, help="trained verifier folder (for verifier/hybrid)"),
    ns: Optional[str] = typer.Option(None, help="comma-separated N values [default: 1, 2, 4, ... up to the samples]"),
    seeds: int = typer.Option(3, help="random subsets per N"),
) -> None:
    """Test-time scaling: selected accuracy against N for each selector, with oracle pass@N and diversity.

    Example: reasonlab tts runs/eval-countdown-smollm2-135m/episodes/eval.jsonl --selectors random,majority,oracle
    """
    import json

    from reasonlab.analysis.tts import SELECTORS, VerifierScorer, plot_tts_curves, tts_curves
    from reasonlab.episode import read_episodes

    names = [x for x in selectors.split(",") if x]
    unknown = [x for x in names if x not in SELECTORS]
    if unknown:
        fail(f"unknown selector(s) {unknown}; allowed: {', '.join(SELECTORS)}")
    if any(x in ("verifier",) for x in names) and not verifier:
        fail("the verifier selector needs --verifier FOLDER (train one with reasonlab.analysis.tts.train_verifier)")
    try:
        eps = [e for p in episodes for e in read_episodes(p)]
        ctx = {"scorer": VerifierScorer(verifier)} if verifier else {}
        curves = tts_curves(eps, {n: SELECTORS[n] for n in names},
                            Ns=[int(x) for x in ns.split(",")] if ns else None, seeds=tuple(range(seeds)), **ctx)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(curves, indent=1, default=str))
    plot_tts_curves(curves, out / "tts.png")
    table = Table("N", *names, "pass@N", title=f"selected accuracy ({out}/tts.png)")
    for i, n in enumerate(curves["Ns"]):
        table.add_row(str(n), *[f"{curves['accuracy'][k][i]:.3f}" for k in names], f"{curves['pass@N'][i]:.3f}")
    console.print(table)


EXPERIMENTS = {
    "countdown-behaviors": ("reasonlab.experiments.behaviors", "BehaviorsRecipe", "run_behaviors"),
    "entropo": ("reasonlab.experiments.entropo", "EntroPORecipe", "run_entropo"),
}


def _recipe_path(experiment: str, preset: str) -> Path:
    name = f"{experiment}-{preset}.yaml"
    for root in (Path.cwd() / "recipes", Path(__file__).resolve().parents[2] / "recipes"):
        if (root / name).exists():
            return root / name
    fail(f"no preset {preset!r} for {experiment} (looked for recipes/{name}); pass --config FILE")


@app.command("run")
def run_cmd(
    experiment: str = typer.Argument(..., help="experiment: countdown-behaviors or entropo"),
    preset: str = typer.Option("cpu", help="recipe preset: cpu (2 cores, <20 min), gpu (documented real run), ci (tiny)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="recipe YAML instead of a preset"),
    out: Optional[str] = typer.Option(None, help="run directory [default: runs/<recipe name>]"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Run a whole experiment from a recipe; re-running resumes where it stopped.

    countdown-behaviors: for each priming condition, SFT on synthetic behavior traces, then PPO on Countdown, evaluating accuracy, pass@k, length and behavior counts every K steps; writes results.csv, report.md, report.html and plots.

    entropo: from one starting checkpoint, DPO, EntroPO-DPO, KTO and EntroPO-KTO (and the released EntroPO-KTO) on the same data, over an alpha sweep and seeds; pass@k, diversity, token entropy and test-time-scaling curves side by side.

    Example: reasonlab run countdown-behaviors --preset cpu
    """
    if experiment not in EXPERIMENTS:
        fail(f"unknown experiment {experiment!r}; allowed: {', '.join(EXPERIMENTS)}")
    import importlib

    from reasonlab.config import load_config

    module, recipe_cls, runner = EXPERIMENTS[experiment]
    mod = importlib.import_module(module)
    path = config or _recipe_path(experiment, preset)
    try:
        recipe = load_config(getattr(mod, recipe_cls), path, {"out": out})
        run_dir = getattr(mod, runner)(recipe, show_progress=not quiet)
    except (*_user_errors(), FileExistsError) as e:
        fail(str(e).strip("'\""))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: run the same command again to resume.")
        raise typer.Exit(130)
    console.print(f"[green]done[/]: {run_dir}/report.md, report.html, results.csv")
    console.print((run_dir / "report.md").read_text(), markup=False, highlight=False, soft_wrap=True)


def _print_rl(run_dir: Path) -> None:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    if not rows:
        return
    first, last = rows[0], rows[-1]
    table = Table("metric", f"step {first['step']}", f"step {last['step']}", title=str(run_dir))
    for k in ("reward", "accuracy", "response_length", "entropy", "kl", "eval/accuracy", "eval/pass@1"):
        if k in last or k in first:
            f = lambda r: f"{r[k]:.3f}" if k in r else "-"  # noqa: E731
            table.add_row(k, f(first), f(last))
    console.print(table)


def _mount_optional() -> None:
    """Sub-apps of modules that may be absent from a partial install."""
    try:
        from reasonlab.sandbox.cli import app as sandbox_app
    except Exception:  # pragma: no cover
        return
    app.add_typer(sandbox_app, name="sandbox", help="Run untrusted Python in the sandbox.")
    try:
        from reasonlab.export.cli import app as export_app

        app.add_typer(export_app, name="export", help="Export data and rewards for other trainers (verl).")
    except Exception:  # pragma: no cover
        pass
    try:
        from reasonlab.priming.cli import app as prime_app
        from reasonlab.priming.cli import behaviors_app
    except Exception:  # pragma: no cover
        return
    app.add_typer(prime_app, name="prime", help="Write synthetic Countdown reasoning traces that show chosen behaviors.")
    app.add_typer(behaviors_app, name="behaviors", help="Count cognitive behaviors: local classifier, LLM judge, corpus curation.")


_mount_optional()


def main() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except BrokenPipeError:  # `reasonlab tasks list | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
