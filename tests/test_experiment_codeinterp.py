"""`reasonlab run code-interpreter` end to end on the tiny CI preset, its resume, and its parts."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.episode import Episode

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "code-interpreter-ci.yaml"


def test_code_interpreter_end_to_end_and_resume(tmp_path, organism_home):
    out = tmp_path / "ci"
    args = ["run", "code-interpreter", "--config", str(RECIPE), "--out", str(out), "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "ETA" in r.output  # --quiet drops the bars, not the stage lines
    rows = list(csv.DictReader((out / "results.csv").open()))
    cols = rows[0].keys()
    for c in ("condition", "seed", "step", "tasks", "accuracy", "code_use_rate", "accuracy_with_code",
              "accuracy_without_code", "self_check_rate", "code_calls", "response_length",
              "acc:bbh/multistep_arithmetic", "acc:sym/letters"):
        assert c in cols, c
    arms = {"text", "code", "code_curriculum", "code_rl_only"}
    assert {r["condition"] for r in rows} == arms
    assert sorted({int(r["step"]) for r in rows if r["tasks"] == "train"}) == [0, 1, 2]
    held = [r for r in rows if r["tasks"] == "held-out"]
    assert {r["condition"] for r in held} == arms and all("acc:sym/number_multiplication" in r for r in held)
    # the text arm never had the interpreter; the code arms' SFT data are real programs that ran
    assert all(float(r["code_use_rate"]) == 0 for r in rows if r["condition"] == "text")
    code_data = [json.loads(x) for x in (out / "data" / "code.jsonl").read_text().splitlines()]
    assert code_data and all(e["correct"] and e["messages"][-2]["role"] == "tool" for e in code_data)
    # no stage ever saw the held-out task: corpus, SFT data, RL pools
    corpus = (out / "base" / "corpus.jsonl").read_text()
    assert "exactly. Answer with the integer" not in corpus
    for f in ("code.jsonl", "text.jsonl"):
        assert "sym/number_multiplication" not in (out / "data" / f).read_text()
    est = out / "arms" / "code_curriculum" / "seed-0" / "p-estimate" / "episodes" / "eval.jsonl"
    assert est.exists()  # p from the SFT model's samples on the RL pool
    cfg = (out / "arms" / "code_curriculum" / "seed-0" / "rl" / "config.yaml").read_text()
    assert "potential" in cfg
    for name in ("report.md", "report.html", "accuracy.png", "per_task.png"):
        assert (out / name).stat().st_size > 500
    md = (out / "report.md").read_text()
    assert "code − text" in md and "code − code_rl_only" in md and "code_curriculum − code" in md
    assert "Starting models before RL" in md and "held-out" in md
    # resume: a second run redoes nothing; an interrupted arm finishes
    sft = out / "starts" / "sft-code" / "sft" / "final" / "model.safetensors"
    stamp = sft.stat().st_mtime_ns
    rl = out / "arms" / "code" / "seed-0" / "rl"
    shutil.rmtree(rl / "checkpoints" / "step-000002")
    shutil.rmtree(out / "arms" / "code" / "seed-0" / "heldout")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert sft.stat().st_mtime_ns == stamp
    assert (rl / "checkpoints" / "step-000002").exists()
    rows2 = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows2) == len(rows)


def test_recipe_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_tasks: [sym/letters]\ntest_tasks: [sym/letters]\n")
    r = CliRunner().invoke(app, ["run", "code-interpreter", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "never be trained" in r.output
    bad.write_text("train_tasks: [sym/number_multiplication]\n")  # a held-out test task of the r1ci suite
    r = CliRunner().invoke(app, ["run", "code-interpreter", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "held-out" in r.output
    bad.write_text("train_tasks: [sym/letters]\narms: [code, magic]\n")
    r = CliRunner().invoke(app, ["run", "code-interpreter", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "magic" in r.output and "code_curriculum" in r.output
    bad.write_text("train_tasks: [sym/blocksworld]\n")  # no solver program for the code teacher
    r = CliRunner().invoke(app, ["run", "code-interpreter", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "solver" in r.output
    bad.write_text("train_tasks: [sym/letters]\nrl: {algorithm: sarsa}\n")
    r = CliRunner().invoke(app, ["run", "code-interpreter", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "algorithm" in r.output


def test_mix_task_spreads_problems_and_refuses_bad_names():
    from reasonlab.tasks import get_task

    t = get_task("mix:sym/letters,bbh/multistep_arithmetic")
    ps = t.problems("test", 6, seed=0)
    assert sorted(p.task for p in ps) == ["bbh/multistep_arithmetic"] * 3 + ["sym/letters"] * 3
    assert t.score(ps[0], f"<answer>{ps[0].answer}</answer>").correct
    with pytest.raises(KeyError, match="unknown task"):
        get_task("mix:sym/letters,sym/lettrs")
    with pytest.raises(ValueError, match="names no task"):
        get_task("mix:")


def _ep(msgs):
    return Episode(task="t", problem_id="p", sample_index=0, messages=msgs, reward=0.0, correct=False,
                   format_ok=True, answer=None, stats={"code_calls": sum(m["role"] == "tool" for m in msgs)})


def test_self_checks_count_asserts_and_rechecks():
    from reasonlab.experiments.codeinterp import episode_metrics, self_checks

    u = {"role": "user", "content": "q"}
    one = _ep([u, {"role": "assistant", "content": "```python\nprint(2 * 3)\n```"},
               {"role": "tool", "content": "```output\n6\n```"}, {"role": "assistant", "content": "<answer>6</answer>"}])
    check = _ep([u, {"role": "assistant", "content": "```python\nx = 6\nassert x == 2 * 3\nprint(x)\n```"},
                 {"role": "tool", "content": "```output\n6\n```"}])
    again = _ep([u, {"role": "assistant", "content": "```python\nprint(2 * 3)\n```"},
                 {"role": "tool", "content": "```output\n6\n```"},
                 {"role": "assistant", "content": "```python\nprint(3 * 2)\n```"},
                 {"role": "tool", "content": "```output\n6\n```"}])
    failed_then_fixed = _ep([u, {"role": "assistant", "content": "```python\nprint(x)\n```"},
                             {"role": "tool", "content": "```output\nTraceback (most recent call last):\nNameError\n```"},
                             {"role": "assistant", "content": "```python\nprint(6)\n```"},
                             {"role": "tool", "content": "```output\n6\n```"}])
    text = _ep([u, {"role": "assistant", "content": "<answer>6</answer>"}])
    solver = _ep([u, {"role": "assistant", "content": "```python\nprint(sum(1 for s in S if sum(s) == 6))\n```"},
                  {"role": "tool", "content": "```output\n2\n```"}])  # a comparison that computes, not a check
    assert [self_checks(e) for e in (one, check, again, failed_then_fixed, text, solver)] == [0, 1, 1, 0, 0, 0]
    m = episode_metrics([one, check, again, failed_then_fixed, text])
    assert m["code_use_rate"] == 0.8 and m["self_check_rate"] == 0.4 and m["accuracy_without_code"] == 0.0
