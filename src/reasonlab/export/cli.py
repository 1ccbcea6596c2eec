"""`reasonlab export …`: a typer sub-app, mounted by :mod:`reasonlab.cli` as ``export``.

It lives here rather than in cli.py so the exporters and their command line change together.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Export tasks to other trainers' data formats (verl).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Export tasks to other trainers' data formats (verl)."""


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
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


@app.command("verl")
def verl(
    task: str = typer.Option("countdown", help="task to export: countdown, gym/<dataset> or toy/letter"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    n_train: int = typer.Option(10_000, "--n-train", help="train problems"),
    n_test: int = typer.Option(500, "--n-test", help="test problems (the validation set in verl)"),
    seed: int = typer.Option(0, help="problem generation seed"),
    task_arg: list[str] = typer.Option([], "--task-arg", help="task keyword argument KEY=VALUE (repeatable)"),
) -> None:
    """Write a task as verl RL data (parquet) plus a reward function that uses reasonlab's scorer.

    Example: reasonlab export verl --task countdown --out data/verl-countdown --n-train 10000 --n-test 500

    With task arguments: reasonlab export verl --task countdown --task-arg max_numbers=5 --out data/cd5

    The README.md written into --out holds the verl PPO and GRPO commands for the exported files.
    """
    from reasonlab.export.verl import export_verl

    try:
        args = _task_args(task_arg)
        paths = export_verl(task, out, n_train=n_train, n_test=n_test, seed=seed, task_args=args)
    except (KeyError, ValueError, RuntimeError, ImportError) as e:
        _fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    for name, p in paths.items():
        console.print(f"[green]wrote[/] {name:7s} {p}", highlight=False)
    console.print(f"next: follow {paths['readme']} to train with verl", highlight=False)
