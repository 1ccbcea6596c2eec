"""`reasonlab run countdown-behaviors` end to end on the tiny CI preset, and its resume."""

import csv
import os
from pathlib import Path

from typer.testing import CliRunner

from reasonlab.cli import app

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "countdown-behaviors-ci.yaml"


def test_behaviors_experiment_end_to_end_and_resume(tmp_path):
    out = tmp_path / "cb"
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(RECIPE), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    cols = rows[0].keys()
    for c in ("condition", "step", "avg_verifications", "avg_backtracking", "avg_subgoals", "avg_backwards",
              "total_behaviors", "accuracy", "response_length", "pass@1", "pass@2"):
        assert c in cols
    assert {r["condition"] for r in rows} == {"none", "all_strategies"}
    assert sorted({int(r["step"]) for r in rows}) == [0, 1, 2]  # step 0 = before RL
    for name in ("report.md", "report.html", "accuracy.png", "behaviors.png"):
        assert (out / name).stat().st_size > 500
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html  # self-contained
    traces = out / "conditions" / "all_strategies" / "traces.jsonl"
    assert traces.exists() and not (out / "conditions" / "none" / "traces.jsonl").exists()
    # resume: a second run redoes nothing
    final = out / "conditions" / "all_strategies" / "sft" / "final" / "model.safetensors"
    stamp = (final.stat().st_mtime_ns, traces.stat().st_mtime_ns)
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(RECIPE), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (final.stat().st_mtime_ns, traces.stat().st_mtime_ns) == stamp
    assert list(csv.DictReader((out / "results.csv").open())) == rows


def test_unknown_experiment_and_bad_recipe(tmp_path):
    r = CliRunner().invoke(app, ["run", "nope"])
    assert r.exit_code == 2 and "countdown-behaviors" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("conditions: [none]\nrl: {algorithm: sarsa}\nbase_model: tiny\ntraces: 4\n")
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "algorithm" in r.output and "grpo" in r.output
