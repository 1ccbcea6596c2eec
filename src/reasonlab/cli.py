"""`reasonlab` command line (typer + rich). Every command has --help with an example."""

from __future__ import annotations

import json
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

    return (ConfigError, JSONLError, KeyError, ValueError, FileNotFoundError, ImportError, MemoryError)


# ----------------------------------------------------------------------------- tasks


@tasks_app.command("list")
def tasks_list(
    filter: Optional[str] = typer.Argument(None, help="only names containing this text"),
    suite: Optional[str] = typer.Option(None, help="only the tasks of a suite, e.g. r1ci, r1ci/train or r1ci/test"),
) -> None:
    """List every task (countdown, each reasoning-gym dataset as gym/<name>, the SymBench-style sym/<name> and
    BBH-style bbh/<name> tasks, suites as suite:<name>), or the tasks of one suite with their split.

    Example: reasonlab tasks list gym/arc

    Example: reasonlab tasks list --suite r1ci   (144 tasks: which are train and which held-out test tasks)
    """
    from reasonlab.tasks import list_tasks

    if suite is not None:
        from reasonlab.tasks.suites import parse_suite, suite_tasks

        try:
            name, part = parse_suite(suite, "all")
            names = suite_tasks(name, part)
            test = set(suite_tasks(name, "test"))
        except _user_errors() as e:
            fail(str(e).strip("'\""))
        descs = list_tasks()
        table = Table("task", "split", "description",
                      title=f"suite {name} ({part}): {len(names)} tasks, {len(test & set(names))} held-out test tasks")
        for t in names:
            if filter is None or filter in t:
                table.add_row(t, "test" if t in test else "train", descs.get(t, ""))
        console.print(table)
        return
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


@models_app.command("pretrain")
def models_pretrain(
    kind: str = typer.Argument(..., help="organism: poor (behavior-poor base) or rich (behavior-rich base)"),
    preset: str = typer.Option("cpu", help="organism settings from recipes/countdown-behaviors-<preset>.yaml"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="a behaviors recipe (its `organism` and `bases`)"),
    report: bool = typer.Option(True, help="print the competence report afterwards"),
    retrain: bool = typer.Option(False, "--retrain", help="pretrain it here even when it is cached or shipped"),
) -> None:
    """Pretrain a model organism (cached by content hash: a second call returns at once).

    The presets' organisms ship with reasonlab (pretrained from the same specs by this command);
    --retrain pretrains one here instead (about 21 minutes for the cpu preset's bases on 2 cores),
    and REASONLAB_SHIPPED_ORGANISMS=0 makes every experiment pretrain its own.

    The behavior-poor base learns arithmetic facts, the Countdown format and direct answers; the
    behavior-rich base also sees search traces with verification, backtracking, subgoals and backward
    chaining. See reasonlab/organisms.py for the corpus and the design measurements.

    Examples:
      reasonlab models pretrain poor
      reasonlab models pretrain rich --preset ci
      reasonlab models pretrain poor --retrain
    """
    from reasonlab.config import load_config
    from reasonlab.experiments.behaviors import BehaviorsRecipe, organism_spec
    from reasonlab.organisms import competence_report, ensure_organism, format_report

    if kind not in ("poor", "rich"):
        fail(f"unknown organism {kind!r}; allowed: poor, rich")
    try:
        recipe = load_config(BehaviorsRecipe, config or _recipe_path("countdown-behaviors", preset), {})
        if not isinstance(recipe.bases.get(kind), dict):
            fail(f"the recipe's bases.{kind} is not an organism (it is {recipe.bases.get(kind)!r})")
        path = ensure_organism(organism_spec(recipe, kind), log=lambda s: console.print(s, markup=False), retrain=retrain)
        console.print(f"[green]organism[/] {kind} → {path}")
        if report:
            console.print(format_report(competence_report(path, task_args=recipe.task_args, **recipe.competence)),
                          markup=False)
    except _user_errors() as e:
        fail(str(e).strip("'\""))


@models_app.command("competence")
def models_competence(
    model: str = typer.Argument(..., help="model name or folder (an organism, an SFT/RL checkpoint, any HF model)"),
    problems: int = typer.Option(64, help="Countdown test problems"),
    n: int = typer.Option(4, help="samples per problem"),
    max_new_tokens: int = typer.Option(400),
    task_arg: list[str] = typer.Option([], "--task-arg", help="Countdown KEY=VALUE (default: the organism's range)"),
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """What a model can do before RL: held-out arithmetic facts, step-0 Countdown accuracy, format
    rate, whether it reads the prompt's numbers, and behavior counts of its samples.

    Example: reasonlab models competence runs/countdown-behaviors-cpu/conditions/all_strategies/seed-0/sft/final
    """
    from reasonlab.models import resolve_model
    from reasonlab.organisms import competence_report, format_report

    try:
        rep = competence_report(resolve_model(model), task_args=_parse_task_args(task_arg) or None, problems=problems,
                                n=n, max_new_tokens=max_new_tokens)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    if json_out:  # plain stdout: a terminal-width wrap must not break the JSON
        typer.echo(json.dumps(rep, indent=2))
    else:
        console.print(format_report(rep), markup=False)


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
    suite: Optional[str] = typer.Option(None, help="evaluate on a suite instead of --task: r1ci (its held-out test tasks), r1ci/train or r1ci/all; --limit problems spread evenly over its tasks"),
    protocol: Optional[str] = typer.Option(None, help="prompt/answer style: answer (<answer> tags) or r1ci (<<<answer>>>, Code Execution Results) [default: answer]"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Evaluate a model on a task: sample n responses per problem, score, report (resumable).

    Writes a run directory with every sample as an Episode (episodes/eval.jsonl), summary.json (accuracy, pass@k, maj@k, format rate, mean length), report.md and pass_at_k.png. Running the same command again resumes where it stopped.

    Example: reasonlab eval --task countdown --model smollm2-135m --n 16 --limit 100

    With the code interpreter: reasonlab eval --task countdown --tools python --n 4 --limit 20

    On the R1-CI suite's 37 held-out tasks, in its protocol: reasonlab eval --suite r1ci --protocol r1ci --tools python --limit 74

    On a dataset file (BBH task file, question/answer JSONL, GSM8K, Parquet): reasonlab eval --task file:boolean_expressions.json --task-arg test_percent=100
    """
    from reasonlab.config import EvalConfig, load_config
    from reasonlab.experiments.evaluate import default_out, run_eval

    task = _suite_task(suite, task, "test")
    overrides = {
        "protocol": protocol,
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


def _suite_task(suite: Optional[str], task: Optional[str], default_part: str) -> Optional[str]:
    """``--suite`` → the suite part's task name (``suite:r1ci/test``); it and ``--task`` exclude each other."""
    if suite is None:
        return task
    if task is not None:
        fail("give --task or --suite, not both")
    from reasonlab.tasks.suites import suite_task_name

    try:
        return suite_task_name(suite, default_part)
    except _user_errors() as e:
        fail(str(e).strip("'\""))


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
    if s.get("per_task"):
        pt = Table("task", "samples", "accuracy", "mean reward", title="per task")
        for t, v in s["per_task"].items():
            pt.add_row(t, str(v["samples"]), f"{v['accuracy']:.3f}", f"{v['mean_reward']:.3f}")
        console.print(pt)
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
    suite: Optional[str] = typer.Option(None, help="train on a suite's train tasks instead of the config's task, e.g. r1ci (its held-out test tasks are refused)"),
    protocol: Optional[str] = typer.Option(None, help="override: answer or r1ci"),
    curriculum: Optional[str] = typer.Option(None, help="override the problem sampler: uniform or potential (needs curriculum.episodes)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    engine: str = typer.Option("reasonlab", help="reasonlab (train here) or verl (write data, reward, tool and verl command to --out)"),
    n_gpus: int = typer.Option(8, "--n-gpus", help="--engine verl: GPUs per node"),
    nnodes: int = typer.Option(1, help="--engine verl: nodes"),
) -> None:
    """Train a policy with on-policy RL on a task, with or without the code interpreter.

    Each step samples problems, rolls out n responses each through the agent loop, scores them, computes advantages (GAE with a critic for PPO; group-relative for GRPO/RLOO) and runs clipped minibatch updates. Writes metrics.jsonl, TensorBoard logs, periodic eval and atomic HF-format checkpoints to the run directory; --resume continues exactly where a killed run stopped.

    Example: reasonlab train rl --config recipes/rl-toy-grpo-cpu.yaml

    R1-CI curriculum on the r1ci suite (p estimated from an eval of the SFT model on the train split):
    reasonlab train rl --config recipes/rl-r1ci-curriculum.yaml --suite r1ci

    On verl (cluster scale; nothing is launched): reasonlab train rl --config R.yaml --engine verl --out runs/verl-r
    """
    from reasonlab.config import load_config
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import train_rl

    if engine not in ("reasonlab", "verl"):
        fail(f"--engine {engine!r}: allowed: reasonlab, verl")
    try:
        cfg = load_config(RLConfig, config, {"out": out, "model": model, "algorithm": algorithm, "steps": steps,
                                             "task": _suite_task(suite, None, "train"), "protocol": protocol,
                                             "curriculum.kind": curriculum})
        if engine == "verl":
            from reasonlab.export.verl_config import export_rl

            paths = export_rl(cfg, cfg.out or f"runs/verl-{cfg.algorithm}-{cfg.task.replace('/', '-')}",
                              n_gpus=n_gpus, nnodes=nnodes)
            for name, p in paths.items():
                console.print(f"[green]wrote[/] {name:11s} {p}", highlight=False)
            console.print(paths["command"].read_text(), markup=False, highlight=False, soft_wrap=True)
            return
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
    cap_per_task: Optional[int] = typer.Option(None, help="at most this many episodes per task (R1-CI: 70)"),
    suite: Optional[str] = typer.Option(None, help="keep only episodes of this suite's train tasks, e.g. r1ci"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Supervised fine-tuning on Episodes (TRL SFTTrainer), loss only on the policy's tokens.

    Prompt and tool-output tokens are masked out, multi-turn conversations included. Re-running the same command resumes from the last checkpoint; the final model is written to OUT/final.

    Example: reasonlab train sft --model models/tiny --data traces.jsonl --out runs/sft-tiny --max-steps 200

    R1-CI style (correct trajectories, at most 70 per task, only the suite's train tasks, 3 epochs):
    reasonlab train sft --model M --data runs/collect/episodes/collect.jsonl --only-correct --cap-per-task 70 --suite r1ci --epochs 3
    """
    from reasonlab.config import load_config
    from reasonlab.train.sft import SFTSettings, train_sft

    overrides = {"model": model, "out": out, "max_steps": max_steps, "epochs": epochs, "lr": lr,
                 "only_correct": only_correct, "data": data or None, "cap_per_task": cap_per_task, "suite": suite}
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
    suite: Optional[str] = typer.Option(None, help="collect on a suite's train tasks instead of --task, e.g. r1ci"),
    protocol: Optional[str] = typer.Option(None, help="prompt/answer style: answer or r1ci"),
    sft_cap_per_task: Optional[int] = typer.Option(None, help="also write episodes/sft.jsonl: correct trajectories only, at most this many per task"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Collect multi-turn, tool-using trajectories from a model behind an API (or a local model).

    n trajectories per problem through the agent loop with the code interpreter; concurrency limit, retries with backoff, rate-limit handling, token and cost accounting, a budget that stops the run, and resume without paying twice (every answer is cached in the run directory). Set the API key in OPENAI_API_KEY.

    Example: reasonlab collect --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct --task countdown --n 4 --limit 200

    R1-CI SFT data (teacher trajectories on the suite's train tasks, rejection-sampled, at most 70 per task):
    reasonlab collect --base-url URL --model gpt-4o --suite r1ci --protocol r1ci --n 4 --limit 2000 --sft-cap-per-task 70
    """
    from reasonlab.config import load_config
    from reasonlab.experiments.collect import CollectConfig, check_endpoint_config, run_collect

    task = _suite_task(suite, task, "train")
    overrides = {"protocol": protocol, "sft_cap_per_task": sft_cap_per_task, "base_url": base_url, "model": model, "task": task, "n": n, "limit": limit, "split": split,
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
    if s.get("sft"):
        console.print(f"SFT data: {s['sft']['kept']} correct trajectories (capped per task) → {s['sft']['path']}")
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


@app.command("teach")
def teach_cmd(
    out: Path = typer.Option(..., help="Episode JSONL file to write"),
    task: Optional[str] = typer.Option(None, help="a task with a solver program, e.g. sym/knapsack"),
    suite: Optional[str] = typer.Option(None, help="a suite's train tasks that have a solver program, e.g. r1ci"),
    limit: int = typer.Option(100, help="problems (spread over the tasks of a suite)"),
    split: str = typer.Option("train", help="train or test"),
    seed: int = typer.Option(0, help="problem seed"),
    protocol: str = typer.Option("answer", help="answer (<answer>, ```output) or r1ci (<<<answer>>>, Code Execution Results)"),
) -> None:
    """Programmatic code teacher: multi-turn SFT episodes that write a solver program, run it in the sandbox and answer.

    Only tasks with a solver program take part (the procedural sym/ and bbh/ tasks list theirs in docs/r1ci.md); every episode is scored by the task's own scorer and only correct ones are written. Train on them with `reasonlab train sft --data OUT`.

    Example: reasonlab teach --suite r1ci --limit 500 --protocol r1ci --out runs/teach-r1ci.jsonl
    """
    from reasonlab.experiments.teach import run_teach

    name = _suite_task(suite, task, "train")
    if name is None:
        fail("give --task or --suite")
    try:
        r = run_teach(name, out, limit=limit, split=split, seed=seed, protocol=protocol)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    table = Table("task", "episodes", title=f"code-teacher episodes → {r['out']}")
    for t, k in sorted(r["per_task"].items()):
        table.add_row(t, str(k))
    console.print(table)
    console.print(f"kept {r['kept']} of {r['problems']} problems (incorrect: {r['incorrect']}, no solver: {r['no_solver']})")


@app.command("steer")
def steer_cmd(
    out: str = typer.Option(..., help="run directory (episodes/steer.jsonl, summary.json); re-running resumes"),
    task: Optional[str] = typer.Option(None, help="task, e.g. sym/blocksworld"),
    suite: Optional[str] = typer.Option(None, help="a suite part instead of --task, e.g. r1ci (its test tasks)"),
    guide_model: str = typer.Option(..., help="guide: served model name, or a local model without --guide-base-url"),
    guide_base_url: Optional[str] = typer.Option(None, help="guide's OpenAI-compatible endpoint (unset: local)"),
    solver_model: str = typer.Option(..., help="solver: served model name, or a local model without --solver-base-url"),
    solver_base_url: Optional[str] = typer.Option(None, help="solver's OpenAI-compatible endpoint (unset: local)"),
    limit: int = typer.Option(20, help="problems"),
    split: str = typer.Option("test", help="train or test"),
    rounds: int = typer.Option(6, help="guide rounds: 1 (code or text) + up to 5 rounds of feedback"),
    max_tokens: int = typer.Option(512, help="tokens per model reply"),
    timeout_s: float = typer.Option(300.0, help="seconds per endpoint request before a retry"),
    seed: int = typer.Option(0, help="problem seed"),
) -> None:
    """CodeSteer: a guide model steers a solver model between code and text, reading checkers' verdicts.

    Round 1: the guide chooses <<<Code>>> or <<<Text>>> and gives guidance; the solver answers (its code runs in the sandbox). Later rounds: the guide reads the answer, the code output, a symbolic checker's verdict (how much real computation the code does) and a self-answer checker's verdict (a program the solver writes to check its answer) and returns the answer, stops, or gives new guidance. Set API keys in OPENAI_API_KEY.

    Example: reasonlab steer --task sym/blocksworld --guide-model smollm2-135m --solver-base-url http://127.0.0.1:8000/v1 --solver-model gpt-4o --limit 20 --out runs/steer
    """
    import os

    from reasonlab.experiments.steer import EndpointChat, LocalChat, run_steer

    name = _suite_task(suite, task, "test")
    if name is None:
        fail("give --task or --suite")
    key = os.environ.get("OPENAI_API_KEY", "none")
    try:
        mk = lambda url, m: (EndpointChat(url, m, api_key=key, max_tokens=max_tokens, timeout_s=timeout_s)  # noqa: E731
                             if url else LocalChat(m, max_tokens=max_tokens))
        guide, solver = mk(guide_base_url, guide_model), mk(solver_base_url, solver_model)
        s = run_steer(name, out, guide=guide, solver=solver, limit=limit, split=split, seed=seed, max_rounds=rounds)
    except _user_errors() as e:
        fail(str(e).strip("'\""))
    table = Table("metric", "value", title=f"CodeSteer · {name} → {out}")
    for k in ("problems", "accuracy", "mean_rounds", "first_mode_code_rate", "malformed_guide_replies"):
        v = s.get(k)
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    table.add_row("finish reasons", str(s.get("finish_reasons")))
    console.print(table)


EXPERIMENTS = {
    "countdown-behaviors": ("reasonlab.experiments.behaviors", "BehaviorsRecipe", "run_behaviors"),
    "entropo": ("reasonlab.experiments.entropo", "EntroPORecipe", "run_entropo"),
    "code-interpreter": ("reasonlab.experiments.codeinterp", "CodeInterpreterRecipe", "run_code_interpreter"),
}


def _recipe_path(experiment: str, preset: str) -> Path:
    name = f"{experiment}-{preset}.yaml"
    for root in (Path.cwd() / "recipes", Path(__file__).resolve().parents[2] / "recipes"):
        if (root / name).exists():
            return root / name
    fail(f"no preset {preset!r} for {experiment} (looked for recipes/{name}); pass --config FILE")


@app.command("run")
def run_cmd(
    experiment: str = typer.Argument(..., help="experiment: countdown-behaviors, entropo or code-interpreter"),
    preset: str = typer.Option("cpu", help="recipe preset: cpu (2 cores, 30-55 min by CPU), full (every condition, hours), gpu (documented real run), ci (tiny)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="recipe YAML instead of a preset"),
    out: Optional[str] = typer.Option(None, help="run directory [default: runs/<recipe name>]"),
    quiet: bool = typer.Option(False, help="no progress bars"),
    engine: str = typer.Option("reasonlab", help="reasonlab (run here) or verl (write the study's verl files and command)"),
    n_gpus: int = typer.Option(8, "--n-gpus", help="--engine verl: GPUs per node"),
    nnodes: int = typer.Option(1, help="--engine verl: nodes"),
) -> None:
    """Run a whole experiment from a recipe; re-running resumes where it stopped.

    countdown-behaviors: for each priming condition, SFT on synthetic behavior traces, then PPO on Countdown, evaluating accuracy, pass@k, length and behavior counts every K steps; writes results.csv, report.md, report.html and plots.

    entropo: from one starting checkpoint, DPO, EntroPO-DPO, KTO and EntroPO-KTO (and the released EntroPO-KTO) on the same data, over an alpha sweep and seeds; pass@k, diversity, token entropy and test-time-scaling curves side by side.

    code-interpreter: R1-Code-Interpreter's study: text-only SFT vs tool-use SFT (uniform and curriculum) vs no SFT, each followed by GRPO on the same train tasks; per-task accuracy on train and held-out test tasks, code-use rate, accuracy with and without code.

    Example: reasonlab run countdown-behaviors --preset cpu

    Example: reasonlab run code-interpreter --preset cpu

    On verl: reasonlab run countdown-behaviors --preset gpu --engine verl (writes runs/<name>/verl/run_verl.sh)
    """
    if experiment not in EXPERIMENTS:
        fail(f"unknown experiment {experiment!r}; allowed: {', '.join(EXPERIMENTS)}")
    if engine not in ("reasonlab", "verl"):
        fail(f"--engine {engine!r}: allowed: reasonlab, verl")
    if engine == "verl" and experiment != "countdown-behaviors":
        fail(f"--engine verl: {experiment} has no on-policy RL stage for verl (it trains offline with DPO/KTO "
             "through TRL); allowed with --engine verl: countdown-behaviors")
    import importlib

    from reasonlab.config import load_config

    module, recipe_cls, runner = EXPERIMENTS[experiment]
    mod = importlib.import_module(module)
    path = config or _recipe_path(experiment, preset)
    try:
        recipe = load_config(getattr(mod, recipe_cls), path, {"out": out})
        if engine == "verl":
            from reasonlab.export.verl_study import export_behaviors_verl

            paths = export_behaviors_verl(recipe, Path(recipe.out or f"runs/{recipe.name}"), n_gpus=n_gpus, nnodes=nnodes)
            for name, p in paths.items():
                console.print(f"[green]wrote[/] {name:10s} {p}", highlight=False)
            console.print(f"next, on the cluster: bash {paths['script']}", highlight=False)
            return
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
    from reasonlab.quiet import quiet_libraries

    quiet_libraries()
    try:
        app()
    except BrokenPipeError:  # `reasonlab tasks list | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
