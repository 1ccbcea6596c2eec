"""Reports: PNG plots and Markdown summaries written into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasonlab.episode import Episode


def plot_pass_at_k(summary: dict, path: str | Path, title: str = "") -> Path:
    """pass@k and maj@k against k (log2 x axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [int(k) for k in summary["pass@k"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ax.plot(ks, [summary["pass@k"][str(k)] for k in ks], "o-", label="pass@k")
    ax.plot(ks, [summary["maj@k"][str(k)] for k in ks], "s--", label="maj@k")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("fraction of problems solved")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def eval_report(summary: dict, config: dict, examples: list[Episode], plot_name: str = "pass_at_k.png") -> str:
    """A short Markdown report: settings, headline metrics, pass@k table, example responses."""
    lines = [
        f"# Evaluation: {config['task']} · {config['model']}",
        "",
        f"{summary['problems']} problems × {summary['samples_per_problem']} samples "
        f"({config['split']} split, seed {config['seed']}, temperature {config['sampling']['temperature']}, "
        f"max {config['sampling']['max_new_tokens']} new tokens).",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("accuracy", "mean_reward", "format_rate", "mean_generated_tokens", "incomplete_problems"):
        lines.append(f"| {key} | {_fmt(summary[key])} |")
    for key, v in (summary.get("tools") or {}).items():
        lines.append(f"| {key} | {'-' if v is None else _fmt(v)} |")
    if "generation" in summary:
        g = summary["generation"]
        lines.append(f"| generation tok/s (this session) | {g.get('tokens_per_s', 0):.1f} |")
    lines += ["", "| k | pass@k | maj@k |", "|---|---|---|"]
    for k in summary["pass@k"]:
        lines.append(f"| {k} | {summary['pass@k'][k]:.3f} | {summary['maj@k'][k]:.3f} |")
    lines += ["", f"![pass@k]({plot_name})", "", f"Finish reasons: {summary['finish_reasons']}", ""]
    for title, ep in zip(("A correct response", "An incorrect response"), examples):
        if ep is None:
            continue
        user = next((m["content"] for m in ep.messages if m["role"] == "user"), "")
        lines += [
            f"## {title} ({ep.problem_id}, sample {ep.sample_index}, reward {ep.reward})",
            "",
            "**Prompt:** " + user[:500],
            "",
            "```text",
            ep.completion[:1500].replace("```", "ʼʼʼ"),
            "```",
            f"Scorer: {ep.score_details}",
            "",
        ]
    return "\n".join(lines)
