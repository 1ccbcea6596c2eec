"""Command-line apps of the priming package, mounted by :mod:`reasonlab.cli`.

- ``app``: ``reasonlab prime --condition NAME --n N --out FILE.jsonl`` (one command, registered as
  the callback, so mount it with ``app.add_typer(prime_app, name="prime")``);
- ``behaviors_app``: ``reasonlab behaviors eval-local`` (mount with
  ``app.add_typer(behaviors_app, name="behaviors")``).

They live here rather than in cli.py so the generator and its command line change together.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reasonlab.priming.traces import BEHAVIORS, CONDITIONS

console = Console()
err = Console(stderr=True)

app = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False)  # help: prime()'s docstring
behaviors_app = typer.Typer(help="Cognitive-behaviour classifiers.", no_args_is_help=True,
                            rich_markup_mode="rich", pretty_exceptions_enable=False)


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _task_args(items: list[str]) -> dict:
    """KEY=VALUE pairs; values are read as YAML, so 5 is an int and [1, 50] a list."""
    import yaml

    out = {}
    for it in items:
        if "=" not in it:
            _fail(f"--task-arg {it!r}: expected KEY=VALUE, e.g. --task-arg max_numbers=5")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


@app.callback(invoke_without_command=True, subcommand_metavar="")
def prime(
    condition: str = typer.Option(..., help=f"one of: {', '.join(CONDITIONS)}"),
    n: int = typer.Option(..., "--n", help="number of traces (one per Countdown problem)"),
    out: Path = typer.Option(..., "--out", "-o", help="output Episode JSONL file (replaced if it exists)"),
    seed: int = typer.Option(0, help="problem, search and phrasing seed"),
    split: str = typer.Option("train", help="train or test problems"),
    task_arg: list[str] = typer.Option([], "--task-arg", help="countdown task argument KEY=VALUE (repeatable)"),
    paraphrase: bool = typer.Option(False, help="word the traces with the held-out template family"),
) -> None:
    """Write scored Countdown traces of one priming condition as Episode JSONL, with true behaviour counts.

    Conditions: all_strategies, only_backtracking, backtracking_verification, backtracking_subgoal, backtracking_backward, empty_cot, dots (placeholder thinking, as many characters as all_strategies) and no_positive (all_strategies with a wrong final answer). Each Episode holds the chat messages (system, user, assistant trace), the task's score, the true counts in `behaviors` and the condition in `meta`; SFT reads it as is.

    Example: reasonlab prime --condition all_strategies --n 1000 --out data/prime/all_strategies.jsonl
    """
    from reasonlab.episode import append_jsonl
    from reasonlab.priming.traces import iter_traces

    if condition not in CONDITIONS:
        _fail(f"unknown priming condition {condition!r}; allowed: {', '.join(CONDITIONS)}")
    if n < 1:
        _fail("--n must be at least 1")
    episodes = []
    try:
        with _progress() as bar:
            job = bar.add_task(f"{condition} traces", total=n)
            for ep in iter_traces(condition, n, seed=seed, split=split, task_args=_task_args(task_arg),
                                  paraphrase=paraphrase):
                episodes.append(ep)
                bar.advance(job)
    except (KeyError, ValueError, RuntimeError) as e:
        _fail(str(e).strip("'\""))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    append_jsonl(tmp, episodes)
    os.replace(tmp, out)  # readers never see a half-written file
    _print_summary(condition, episodes, out)


def _print_summary(condition: str, episodes: list, out: Path) -> None:
    k = len(episodes)
    mean = lambda xs: sum(xs) / k
    table = Table("metric", "value", title=f"prime · {condition}")
    table.add_row("traces", str(k))
    table.add_row("accuracy", f"{mean([e.correct for e in episodes]):.3f}")
    table.add_row("format rate", f"{mean([e.format_ok for e in episodes]):.3f}")
    for b in BEHAVIORS:
        table.add_row(f"mean {b}", f"{mean([e.behaviors[b] for e in episodes]):.2f}")
    table.add_row("mean length (chars)", f"{mean([e.stats['chars'] for e in episodes]):.0f}")
    table.add_row("mean thinking (chars)", f"{mean([e.stats['think_chars'] for e in episodes]):.0f}")
    console.print(table)
    console.print(f"wrote [bold]{out}[/]")


# ----------------------------------------------------------------------------- behaviors


@behaviors_app.callback()
def _behaviors() -> None:
    """Cognitive-behaviour classifiers (verification, backtracking, subgoal setting, backward chaining)."""


@behaviors_app.command("eval-local")
def eval_local(
    n: int = typer.Option(200, "--n", help="traces per condition and per set"),
    seed: int = typer.Option(0, help="seed of the in-distribution set (0 is where the cues were tuned)"),
    heldout_seed: int = typer.Option(1, help="seed of the held-out sets (test-split problems)"),
) -> None:
    """Precision/recall of the fast local (regex) behaviour counter against the true counts of synthetic traces.

    Measures four sets of traces of every priming condition: the training templates at --seed, the same templates on held-out problems, a paraphrase family the cues were tuned on (paraphrase_a), and a held-out paraphrase family (paraphrase_b), the honest number. Count level: TP = min(pred, true), FP = max(pred - true, 0), FN = max(true - pred, 0); presence level: shows the behaviour or not.

    Example: reasonlab behaviors eval-local --n 200 --seed 0
    """
    from reasonlab.priming.measure import measure_classifier, trace_sets

    if n < 1:
        _fail("--n must be at least 1")
    total = n * len(CONDITIONS) * len(trace_sets(seed, heldout_seed))
    with _progress() as bar:
        job = bar.add_task("traces", total=total)
        results = measure_classifier(n=n, seed=seed, heldout_seed=heldout_seed, on_trace=lambda: bar.advance(job))
    for level, (pk, rk) in {"count level": ("precision", "recall"),
                            "presence level": ("presence_precision", "presence_recall")}.items():
        table = Table("behaviour", *[label.replace(", ", "\n", 1) for label in results],
                      title=f"local classifier, {level} ({n} traces x {len(CONDITIONS)} conditions per set)")
        for b in BEHAVIORS:
            table.add_row(b, *[f"{_f(r['per_behavior'][b][pk])} / {_f(r['per_behavior'][b][rk])}" for r in results.values()])
        if level == "count level":
            table.add_row("micro", *[f"{_f(r['micro']['precision'])} / {_f(r['micro']['recall'])}" for r in results.values()])
            table.add_row("micro F1", *[_f(r["micro"]["f1"]) for r in results.values()])
        console.print(table)
    console.print("cells: precision / recall; '-' = no predictions (precision undefined). See docs/priming.md.")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _judge_options(base_url: str, model: str, concurrency: int, cache: Path):
    from reasonlab.analysis.judge import BehaviorJudge
    from reasonlab.rollout.openai_client import OpenAIChat

    client = OpenAIChat(base_url, model, api_key=os.environ.get("OPENAI_API_KEY", "none"),
                        concurrency=concurrency, cache=cache)
    return BehaviorJudge(client)


@behaviors_app.command("judge")
def judge_cmd(
    episodes: Path = typer.Argument(..., help="Episode JSONL file whose responses to count"),
    out: Path = typer.Option(..., "--out", "-o", help="output Episode JSONL with `behaviors` filled"),
    base_url: str = typer.Option(..., help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1"),
    model: str = typer.Option(..., help="model name served there"),
    concurrency: int = typer.Option(8, help="requests in flight"),
    cache: Path = typer.Option(Path("runs/judge-cache.sqlite"), help="on-disk cache: a re-run pays nothing twice"),
) -> None:
    """Count the four behaviors in each response with an LLM judge (one prompt per behavior).

    Requests are cached on disk, retried with backoff on 429/5xx/timeouts and limited in concurrency; re-running after an interruption re-sends nothing already answered. Token use is printed. Set OPENAI_API_KEY for hosted endpoints.

    Example: reasonlab behaviors judge runs/x/episodes/eval-step-000010.jsonl -o judged.jsonl --base-url http://127.0.0.1:8080/v1 --model smollm2
    """
    from reasonlab.episode import append_jsonl, read_episodes

    eps = read_episodes(episodes)
    judge = _judge_options(base_url, model, concurrency, cache)
    with _progress() as bar:
        job = bar.add_task("judge", total=len(eps) * len(BEHAVIORS))
        rep = judge.count([e.completion for e in eps], progress=lambda k: bar.advance(job, k))
    for e, c in zip(eps, rep.counts):
        e.behaviors = c
    out.unlink(missing_ok=True)
    append_jsonl(out, eps)
    table = Table("", "value", title=f"judged {len(eps)} responses → {out}")
    for b in BEHAVIORS:
        vals = [c[b] for c in rep.counts if c.get(b) is not None]
        table.add_row(f"mean {b}", f"{sum(vals) / len(vals):.2f}" if vals else "-")
    for k in ("requests", "cached", "retries", "failures", "prompt_tokens", "completion_tokens"):
        table.add_row(k, str(rep.usage.get(k)))
    table.add_row("malformed replies", str(rep.malformed))
    console.print(table)


@behaviors_app.command("curate")
def curate_cmd(
    corpus: str = typer.Argument(..., help="JSONL file, or a dataset name/folder for datasets.load_dataset"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: enriched.jsonl, control.jsonl, stats.json"),
    text_field: str = typer.Option("text", help="field holding the document text"),
    split: str = typer.Option("train", help="dataset split (for datasets)"),
    limit: int = typer.Option(0, help="classify only the first N documents (0 = all)"),
    top_fraction: float = typer.Option(0.1, help="fraction of documents kept in the enriched subset"),
    classifier: str = typer.Option("local", help="local (fast, no server) or judge"),
    base_url: str = typer.Option("", help="judge endpoint (with --classifier judge)"),
    model: str = typer.Option("", help="judge model (with --classifier judge)"),
    cache: Path = typer.Option(Path("runs/judge-cache.sqlite"), help="judge cache"),
) -> None:
    """Classify a text corpus for cognitive behaviors; write a behavior-enriched subset and a minimal-behavior control.

    As the study did with OpenWebMath to build continued-pretraining sets. Every output line is the input record plus its behavior counts; stats.json compares the subsets.

    Example: reasonlab behaviors curate corpus.jsonl --out runs/curated --top-fraction 0.1
    """
    import json

    from reasonlab.analysis.curate import curate, load_corpus

    if classifier not in ("local", "judge"):
        _fail("--classifier must be local or judge")
    try:
        records = load_corpus(corpus, text_field, split, limit or None)
        classify = None
        if classifier == "judge":
            if not base_url or not model:
                _fail("--classifier judge needs --base-url and --model")
            judge = _judge_options(base_url, model, 8, cache)
            classify = lambda texts: judge.count(texts).counts  # noqa: E731
        stats = curate(records, out, text_field=text_field, classify=classify, top_fraction=top_fraction)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print_json(json.dumps(stats))
