"""`reasonlab run countdown-behaviors`: the cognitive-behaviors experiment (arXiv 2503.01307) end to end.

For each priming condition:

    synthetic traces (reasonlab.priming) ─► SFT the base model on them ─► PPO (or GRPO) on Countdown
    evaluating accuracy, pass@k, response length and behavior counts every K steps (step 0 included)

plus an unprimed baseline (``none``: RL straight from the base model). Writes

    results.csv   condition, step, avg_verifications, avg_backtracking, avg_subgoals, avg_backwards,
                  total_behaviors, accuracy, pass@k…, response_length   (the study's columns)
    report.md / report.html (self-contained) with accuracy-vs-step and behavior-vs-step plots
    conditions/<name>/{traces.jsonl, sft/, rl/}

Each stage of each condition is skipped when its output is complete, and RL resumes from its last
checkpoint, so an interrupted experiment picks up where it stopped.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from reasonlab.config import Strict, dump_yaml
from reasonlab.episode import append_jsonl

log = logging.getLogger(__name__)

BEHAVIOR_COLUMNS = {  # our behavior name → the study's column name
    "verification": "avg_verifications",
    "backtracking": "avg_backtracking",
    "subgoal_setting": "avg_subgoals",
    "backward_chaining": "avg_backwards",
}


class TinyModelSpec(Strict):
    layers: int = 4
    width: int = 128
    heads: int = 4
    vocab_size: int = 1024


class BehaviorsRecipe(Strict):
    name: str = "countdown-behaviors"
    base_model: str = Field("tiny", description="'tiny' (created from `tiny`), an embedded name, HF folder or hub name")
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec)
    conditions: list[str] = Field(default_factory=lambda: ["none", "all_strategies", "only_backtracking",
                                                             "backtracking_verification", "backtracking_subgoal",
                                                             "backtracking_backward", "empty_cot", "dots", "no_positive"])
    task_args: dict[str, Any] = Field(default_factory=lambda: {"min_numbers": 3, "max_numbers": 3})
    traces: int = Field(256, ge=1, description="priming traces per condition")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTSettings fields (model/data/out are set here)")
    rl: dict[str, Any] = Field(default_factory=dict, description="RLConfig fields (model/task/out are set here)")
    seed: int = 0
    out: str | None = None


def condition_dir(out: Path, condition: str) -> Path:
    return out / "conditions" / condition


def ensure_base_model(recipe: BehaviorsRecipe, out: Path) -> str:
    if recipe.base_model != "tiny":
        return recipe.base_model
    path = out / "base-model"
    if not (path / "config.json").exists():
        from reasonlab.models import create_tiny
        from reasonlab.priming.traces import generate_traces

        t = recipe.tiny
        # the tokenizer also learns the phrasing of the reasoning traces (any condition's words)
        texts = [e.completion for e in generate_traces("all_strategies", 200, seed=recipe.seed + 1,
                                                          task_args=recipe.task_args)]
        create_tiny(path, layers=t.layers, width=t.width, heads=t.heads, vocab_size=t.vocab_size,
                    tasks=("countdown",), seed=recipe.seed, extra_texts=texts)
    return str(path)


def run_condition(recipe: BehaviorsRecipe, out: Path, condition: str, base: str, show_progress: bool) -> Path:
    """Traces → SFT → RL for one condition; returns the RL run directory."""
    from reasonlab.config import validate
    from reasonlab.priming.traces import generate_traces
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import train_rl
    from reasonlab.train.sft import SFTSettings, train_sft

    d = condition_dir(out, condition)
    d.mkdir(parents=True, exist_ok=True)
    model = base
    if condition != "none":
        traces = d / "traces.jsonl"
        if not traces.exists():
            eps = generate_traces(condition, recipe.traces, seed=recipe.seed, task_args=recipe.task_args)
            tmp = traces.with_suffix(".partial")
            tmp.unlink(missing_ok=True)
            append_jsonl(tmp, eps)
            tmp.rename(traces)
        final = d / "sft" / "final"
        if not (final / "config.json").exists():
            sft = validate(SFTSettings, {**recipe.sft, "model": base, "data": [str(traces)], "out": str(d / "sft"),
                                         "seed": recipe.seed}, f"{condition}: sft")
            train_sft(sft, show_progress=show_progress)
        model = str(final)
    rl_dir = d / "rl"
    rl_cfg = {**recipe.rl, "model": model, "task": "countdown", "task_args": recipe.task_args, "out": str(rl_dir),
              "seed": recipe.seed, "eval_behaviors": True, "eval_at_start": True, "tensorboard": False}
    cfg = validate(RLConfig, rl_cfg, f"{condition}: rl")
    done = rl_dir / "checkpoints" / f"step-{cfg.steps:06d}"
    if not done.exists():
        train_rl(cfg, resume=rl_dir.exists(), show_progress=show_progress)
    return rl_dir


def collect_results(out: Path, conditions: list[str]) -> list[dict[str, Any]]:
    rows = []
    for c in conditions:
        path = condition_dir(out, c) / "rl" / "metrics.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            m = json.loads(line)
            if "eval/accuracy" not in m:
                continue
            row: dict[str, Any] = {"condition": c, "step": m["step"]}
            for b, col in BEHAVIOR_COLUMNS.items():
                row[col] = m.get(f"eval/{b}", 0.0)
            row["total_behaviors"] = sum(row[col] for col in BEHAVIOR_COLUMNS.values())
            row["accuracy"] = m["eval/accuracy"]
            for k, v in m.items():
                if k.startswith("eval/pass@"):
                    row[k[len("eval/"):]] = v
            row["response_length"] = m["eval/response_length"]
            row["train_reward"] = m.get("reward")
            rows.append(row)
    return rows


def write_results(out: Path, rows: list[dict[str, Any]]) -> Path:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    path = out / "results.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    return path


def plot_results(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(dict.fromkeys(r["condition"] for r in rows))
    series = {c: [r for r in rows if r["condition"] == c] for c in conds}
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for c in conds:
        s = series[c]
        axes[0].plot([r["step"] for r in s], [r["accuracy"] for r in s], marker="o", ms=3, label=c)
        axes[1].plot([r["step"] for r in s], [r["response_length"] for r in s], marker="o", ms=3, label=c)
    axes[0].set(xlabel="RL step", ylabel="test accuracy", title="Countdown accuracy during RL")
    axes[1].set(xlabel="RL step", ylabel="tokens", title="response length")
    for a in axes:
        a.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), dpi=110)
    for ax, (b, col) in zip(axes, BEHAVIOR_COLUMNS.items()):
        for c in conds:
            s = series[c]
            ax.plot([r["step"] for r in s], [r[col] for r in s], marker="o", ms=3, label=c)
        ax.set(xlabel="RL step", ylabel="per response", title=b.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "behaviors.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def write_report(out: Path, recipe: BehaviorsRecipe, rows: list[dict[str, Any]], plots: list[Path]) -> None:
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    lines = [f"# {recipe.name}", "",
             "Cognitive-behaviors experiment (arXiv 2503.01307): prime with synthetic traces, then RL on Countdown.",
             f"Base model: `{recipe.base_model}`; {recipe.traces} traces per condition; task {recipe.task_args}.",
             "Behavior counts: local rule-based classifier on the eval responses (see docs/priming.md for its precision/recall).",
             "", "| condition | accuracy (start → end) | pass@k end | total behaviors (start → end) | length (start → end) |",
             "|---|---|---|---|---|"]
    for c in conds:
        s = [r for r in rows if r["condition"] == c]
        a, b = s[0], s[-1]
        pk = max((k for k in b if k.startswith("pass@")), key=lambda k: int(k[5:]), default=None)
        lines.append(f"| {c} | {a['accuracy']:.3f} → {b['accuracy']:.3f} (step {b['step']}) | "
                     f"{(pk + ' ' + format(b[pk], '.3f')) if pk else '-'} | "
                     f"{a['total_behaviors']:.2f} → {b['total_behaviors']:.2f} | "
                     f"{a['response_length']:.0f} → {b['response_length']:.0f} |")
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), "", "Full table: `results.csv`."]
    md = "\n".join(lines)
    (out / "report.md").write_text(md + "\n")
    html_body = md
    for p in plots:  # self-contained: images inline
        data = base64.b64encode(p.read_bytes()).decode()
        html_body = html_body.replace(f"![{p.stem}]({p.name})", f'<img alt="{p.stem}" src="data:image/png;base64,{data}">')
    (out / "report.html").write_text(_html(recipe.name, html_body))


def _html(title: str, md: str) -> str:
    """A minimal Markdown → HTML for our own report (headings, paragraphs, pipe tables, inline images)."""
    import html as H

    out, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[H.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{c}</{'th' if i == 0 else 'td'}>" for c in row) + "</tr>"
                for i, row in enumerate(cells)) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            out.append(f"<h1>{H.escape(line[2:])}</h1>")
        elif line.startswith("<img"):
            out.append(f"<p>{line}</p>")
        elif line.strip():
            out.append(f"<p>{H.escape(line)}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{H.escape(title)}</title><style>{style}</style></head><body>{''.join(out)}</body></html>\n"


def run_behaviors(recipe: BehaviorsRecipe, *, show_progress: bool = True) -> Path:
    from rich.console import Console

    out = Path(recipe.out or f"runs/{recipe.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(dump_yaml(recipe))
    base = ensure_base_model(recipe, out)
    console = Console(stderr=True)
    for i, c in enumerate(recipe.conditions, 1):
        console.rule(f"[bold]condition {i}/{len(recipe.conditions)}: {c}")
        run_condition(recipe, out, c, base, show_progress)
        rows = collect_results(out, recipe.conditions)  # results so far, after every condition
        write_results(out, rows)
    plots = plot_results(out, rows)
    write_report(out, recipe, rows, plots)
    return out
