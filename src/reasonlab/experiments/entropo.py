"""`reasonlab run entropo`: DPO vs EntroPO-DPO (and KTO vs EntroPO-KTO) from one SFT checkpoint.

    base model ─► SFT on synthetic teacher traces ─► sample n trajectories per train problem (the
    "collected" data; on GPUs: `reasonlab collect` from a strong model) ─► pairs / labels
    ─► each method trains from the same SFT checkpoint on the same data ─► evaluate every method
    on the same test problems: pass@1, pass@k, diversity, test-time-scaling curves

Writes ``results.csv`` (one row per method), ``report.md``/``report.html`` and plots
(``pass_at_k.png``, ``tts.png``, ``diversity.png``). Every stage is skipped when its output is
complete, so an interrupted run resumes.
"""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path
from typing import Any

from pydantic import Field

from reasonlab.config import Strict, dump_yaml
from reasonlab.episode import append_jsonl, read_episodes
from reasonlab.experiments.behaviors import TinyModelSpec, _html


class Method(Strict):
    name: str
    method: str = "dpo"  # dpo | kto
    alpha: float = 0.0


class EntroPORecipe(Strict):
    name: str = "entropo"
    base_model: str = "tiny"
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec)
    task_args: dict[str, Any] = Field(default_factory=lambda: {"min_numbers": 3, "max_numbers": 3})
    teacher_traces: int = Field(256, ge=0, description="synthetic correct traces: SFT data, and 'chosen' data")
    sft: dict[str, Any] = Field(default_factory=dict)
    collect_problems: int = Field(64, ge=1)
    collect_n: int = Field(4, ge=1)
    sampling: dict[str, Any] = Field(default_factory=lambda: {"temperature": 1.0, "max_new_tokens": 256})
    methods: list[Method] = Field(default_factory=lambda: [
        Method(name="dpo"), Method(name="entropo-dpo", alpha=0.01),
        Method(name="kto", method="kto"), Method(name="entropo-kto", method="kto", alpha=0.01)])
    preference: dict[str, Any] = Field(default_factory=dict, description="PreferenceSettings fields shared by all")
    eval_limit: int = Field(32, ge=1)
    eval_n: int = Field(8, ge=1)
    seed: int = 0
    out: str | None = None


def _stage_sft(r: EntroPORecipe, out: Path, base: str, quiet: bool) -> tuple[Path, Path]:
    from reasonlab.config import validate
    from reasonlab.priming.traces import generate_traces
    from reasonlab.train.sft import SFTSettings, train_sft

    traces = out / "teacher.jsonl"
    if not traces.exists():
        eps = generate_traces("all_strategies", r.teacher_traces, seed=r.seed, task_args=r.task_args)
        append_jsonl(traces.with_suffix(".partial"), eps)
        traces.with_suffix(".partial").rename(traces)
    final = out / "sft" / "final"
    if not (final / "config.json").exists():
        cfg = validate(SFTSettings, {**r.sft, "model": base, "data": [str(traces)], "out": str(out / "sft"),
                                     "seed": r.seed}, "sft")
        train_sft(cfg, show_progress=not quiet)
    return final, traces


def _evaluate(r: EntroPORecipe, model: str, out: Path, split: str, limit: int, n: int, quiet: bool) -> dict:
    from reasonlab.config import EvalConfig
    from reasonlab.experiments.evaluate import run_eval

    cfg = EvalConfig(task="countdown", task_args=r.task_args, model=model, split=split, limit=limit, n=n,
                     seed=r.seed, sampling=r.sampling, dtype="fp32", out=str(out))
    return run_eval(cfg, show_progress=not quiet)


def run_entropo(r: EntroPORecipe, *, show_progress: bool = True) -> Path:
    from rich.console import Console

    from reasonlab.analysis.diversity import diversity_summary
    from reasonlab.analysis.tts import SELECTORS, tts_curves
    from reasonlab.config import validate
    from reasonlab.experiments.behaviors import ensure_base_model
    from reasonlab.train.preference import PreferenceSettings, train_preference

    quiet = not show_progress
    console = Console(stderr=True)
    out = Path(r.out or f"runs/{r.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(dump_yaml(r))
    base = ensure_base_model(r, out)  # type: ignore[arg-type]  (same fields: base_model, tiny, task_args, seed)
    console.rule("[bold]SFT on teacher traces")
    sft_final, teacher = _stage_sft(r, out, base, quiet)
    console.rule("[bold]collect trajectories from the SFT model")
    _evaluate(r, str(sft_final), out / "collect", "train", r.collect_problems, r.collect_n, quiet)
    data = [str(out / "collect" / "episodes" / "eval.jsonl")]
    if r.teacher_traces:
        data.append(str(teacher))  # correct teacher trajectories of other problems: desirable/chosen material
    models = {"sft": str(sft_final)}
    for m in r.methods:
        console.rule(f"[bold]{m.name}")
        final = out / m.name / "final"
        if not (final / "config.json").exists():
            cfg = validate(PreferenceSettings, {**r.preference, "model": str(sft_final), "data": data,
                                                "method": m.method, "alpha": m.alpha, "out": str(out / m.name),
                                                "seed": r.seed}, m.name)
            train_preference(cfg)
        models[m.name] = str(final)
    rows, curves = [], {}
    for name, path in models.items():
        console.rule(f"[bold]evaluate {name}")
        s = _evaluate(r, path, out / "eval" / name, "test", r.eval_limit, r.eval_n, quiet)
        eps = read_episodes(out / "eval" / name / "episodes" / "eval.jsonl")
        _add_token_entropy(path, eps, r.sampling.get("temperature", 1.0))
        div = diversity_summary(eps)
        c = tts_curves(eps, {k: SELECTORS[k] for k in ("random", "majority", "oracle")}, seeds=(0, 1, 2))
        curves[name] = c
        row = {"method": name, "accuracy": s["accuracy"], "format_rate": s["format_rate"],
               "mean_length": s["mean_generated_tokens"]}
        row.update({f"pass@{k}": v for k, v in s["pass@k"].items()})
        for k, v in div.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[f"div/{k}"] = v
        row[f"tts/majority@{c['Ns'][-1]}"] = c["accuracy"]["majority"][-1]
        rows.append(row)
    return _write_outputs(out, r, rows, curves)


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


def _write_outputs(out: Path, r: EntroPORecipe, rows: list[dict], curves: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reasonlab.analysis.tts import plot_tts_curves

    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    (out / "tts_curves.json").write_text(json.dumps(curves, default=str))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for name, c in curves.items():
        axes[0].plot(c["Ns"], c["pass@N"], marker="o", label=name)
        axes[1].plot(c["Ns"], c["accuracy"]["majority"], marker="o", label=name)
    for ax, t in zip(axes, ("oracle pass@N", "majority-vote accuracy")):
        ax.set(xscale="log", xlabel="N samples", title=t)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tts.png")
    plt.close(fig)
    plots = [out / "tts.png"]
    for name, c in curves.items():
        plot_tts_curves(c, out / f"tts-{name}.png", title=name)
    lines = [f"# {r.name}", "", "From one SFT checkpoint, DPO / KTO and their EntroPO variants on the same data; "
             f"evaluated on {r.eval_limit} test problems × {r.eval_n} samples.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row.get(k):.3f}" if isinstance(row.get(k), float) else str(row.get(k, ""))
                                       for k in cols) + " |")
    lines += ["", "![tts](tts.png)", "", "Per-method selector curves: tts-<method>.png; data: results.csv, tts_curves.json."]
    md = "\n".join(lines)
    (out / "report.md").write_text(md + "\n")
    data = base64.b64encode(plots[0].read_bytes()).decode()
    (out / "report.html").write_text(_html(r.name, md.replace("![tts](tts.png)",
                                                             f'<img alt="tts" src="data:image/png;base64,{data}">')))
    return out
