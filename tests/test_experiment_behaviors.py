"""`reasonlab run countdown-behaviors` end to end on the tiny CI preset, and its resume."""

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasonlab.cli import app

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "countdown-behaviors-ci.yaml"


def test_behaviors_experiment_end_to_end_and_resume(tmp_path, organism_home):
    out = tmp_path / "cb"
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(RECIPE), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "ETA" in r.output  # --quiet drops the bars, not the stage lines
    rows = list(csv.DictReader((out / "results.csv").open()))
    cols = rows[0].keys()
    for c in ("condition", "base", "seed", "step", "avg_verifications", "avg_backtracking", "avg_subgoals",
              "avg_backwards", "total_behaviors", "accuracy", "response_length", "pass@1", "pass@2", "train_reward"):
        assert c in cols
    assert {r["condition"] for r in rows} == {"none", "rich_base", "no_positive"}
    assert {(r["condition"], r["seed"]) for r in rows} == {(c, s) for c in ("none", "rich_base", "no_positive") for s in "01"}
    assert sorted({int(r["step"]) for r in rows}) == [0, 1, 2]  # step 0 = before RL
    assert {r["base"] for r in rows if r["condition"] == "rich_base"} == {"rich"}
    for base in ("poor", "rich"):  # a competence report per base
        rep = json.loads((out / "bases" / base / "competence.json").read_text())
        assert {"arith_heldout", "accuracy", "format_rate", "reads_numbers", "behaviors"} <= rep.keys()
    # the two organisms are pretrained once and cached in REASONLAB_HOME
    assert len(list((organism_home / "models" / "organisms").glob("*/config.json"))) >= 2
    for name in ("report.md", "report.html", "accuracy.png", "behaviors.png"):
        assert (out / name).stat().st_size > 500
    md = (out / "report.md").read_text()
    assert "rich_base − none" in md and "± " in md  # comparisons as differences with a spread
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html  # self-contained
    traces = out / "conditions" / "no_positive" / "primed" / "traces.jsonl"  # primed once, RL per seed
    assert traces.exists() and not (out / "conditions" / "none" / "primed").exists()
    assert (out / "conditions" / "no_positive" / "seed-1" / "rl" / "metrics.jsonl").exists()
    eps = [json.loads(x) for x in traces.read_text().splitlines()]
    assert eps and not any(e["correct"] for e in eps)
    # the recipe's trace_search and trace_phrasing reach the priming traces
    assert all(e["meta"]["search"] == "faithful" and e["meta"]["phrasing"] == "organism_verdicts" for e in eps)
    assert all(re.search(r"= \d+ not \d+", e["messages"][-1]["content"]) for e in eps)
    # resume: a second run redoes nothing
    final = out / "conditions" / "no_positive" / "primed" / "sft" / "final" / "model.safetensors"
    stamp = (final.stat().st_mtime_ns, traces.stat().st_mtime_ns)
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(RECIPE), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (final.stat().st_mtime_ns, traces.stat().st_mtime_ns) == stamp
    assert list(csv.DictReader((out / "results.csv").open())) == rows


def test_a_second_experiment_takes_the_primed_model_from_the_cache(tmp_path, organism_home):
    """The same base, traces and SFT settings: the second run's priming is the cached model, not a new SFT."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(conditions=["no_positive"], seeds=[0], traces=12)  # a key no other test makes
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    outs = [tmp_path / "one", tmp_path / "two"]
    logs = []
    for out in outs:
        r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(cfg), "--out", str(out), "--quiet"])
        assert r.exit_code == 0, r.output
        logs.append(r.output)
    primed = [out / "conditions" / "no_positive" / "primed" for out in outs]
    assert "priming SFT on" in logs[0] and "priming SFT on" not in logs[1]
    assert re.search(r"primed model no_positive-[0-9a-f]{12} cached", logs[1])
    assert (primed[0] / "sft" / "log_history.json").exists() and not (primed[1] / "sft" / "log_history.json").exists()
    w = [(p / "sft" / "final" / "model.safetensors").read_bytes() for p in primed]
    assert w[0] == w[1]
    assert json.loads((primed[1] / "competence.json").read_text()) == json.loads((primed[0] / "competence.json").read_text())
    stored = list((organism_home / "models" / "primed").glob("no_positive-*/config.json"))
    assert stored
    # other traces are another key: primed anew
    recipe["traces"] = 10
    cfg.write_text(yaml.safe_dump(recipe))
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(cfg), "--out", str(tmp_path / "three"),
                                 "--quiet"])
    assert r.exit_code == 0 and "priming SFT on" in r.output, r.output


def test_interrupted_experiment_resumes(tmp_path, organism_home):
    """A run stopped part-way (a condition's RL run deleted after its first checkpoint) finishes on re-run."""
    import shutil

    out = tmp_path / "cb"
    args = ["run", "countdown-behaviors", "--config", str(RECIPE), "--out", str(out), "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 0
    rl = out / "conditions" / "rich_base" / "seed-1" / "rl"
    shutil.rmtree(rl / "checkpoints" / "step-000002")  # as if killed after step 1's checkpoint
    lines = (rl / "metrics.jsonl").read_text().splitlines()
    (rl / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # and a torn last line
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (rl / "checkpoints" / "step-000002").exists()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(int(r["step"]) for r in rows if r["condition"] == "rich_base" and r["seed"] == "1") == [0, 1, 2]


@pytest.mark.timeout(300)  # a recipe error that slips past the checks would start hours of pretraining
def test_unknown_experiment_and_bad_recipe(tmp_path):
    r = CliRunner().invoke(app, ["run", "nope"])
    assert r.exit_code == 2 and "countdown-behaviors" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("conditions: [none]\nrl: {algorithm: sarsa}\ntraces: 4\n")
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "algorithm" in r.output and "grpo" in r.output
    for text, words in (("rl_task_args: {target_rnage: [31, 60]}\n", ["rl_task_args", "target_rnage"]),
                        ("task_args: {min_numbers: 3, max_numbers: 3, number_range: [1, 10], target_range: [5, 30]}\n"
                         "rl_task_args: {target_range: [31, 60]}\nrl: {train_pool: 1000}\n",
                         ["rl_task_args", "train_pool is 1000", "at most"])):
        bad.write_text("conditions: [none]\n" + text)  # fails in a second, before any pretraining
        r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(bad), "--out", str(tmp_path / "o")])
        assert r.exit_code == 2 and all(w in r.output for w in words), r.output
        assert "pretraining" not in r.output
    bad.write_text("conditions: [none, sparkles]\n")
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "sparkles" in r.output and "all_strategies" in r.output


def test_rl_can_run_on_targets_the_organisms_never_saw(tmp_path, organism_home):
    """rl_task_args: RL and eval draw from their own ranges; the organisms and priming keep task_args."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(conditions=["none"], seeds=[0], rl_task_args={"target_range": [31, 60]})
    recipe["rl"]["train_pool"] = 64
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "cb"
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    rl = out / "conditions" / "none" / "seed-0" / "rl"
    targets = [json.loads(x)["messages"][1]["content"] for f in (rl / "episodes").glob("eval-step-*.jsonl")
               for x in f.read_text().splitlines()]
    targets = [int(re.search(r"equals (\d+)", t).group(1)) for t in targets]
    assert targets and all(31 <= t <= 60 for t in targets)
    args = yaml.safe_load((rl / "config.yaml").read_text())["task_args"]  # rl_task_args over task_args
    assert args["target_range"] == [31, 60] and args["number_range"] == [1, 10] and args["min_numbers"] == 3
    assert "RL and eval" in (out / "report.md").read_text()


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    """The real llama.cpp server on the embedded SmolLM2 (as the other endpoint tests use it)."""
    from servers import serve_smollm2

    for _, base in serve_smollm2(tmp_path_factory):
        yield base


def test_llm_judge_counts_behaviors_through_training(tmp_path, organism_home, judge_server):
    """With a `judge` endpoint, each eval step's responses are also counted by the LLM judge."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(conditions=["none"], seeds=[0])
    recipe["rl"].update(steps=1, eval_limit=2, eval_n=1)
    recipe["judge"] = {"base_url": judge_server, "model": "smollm2", "per_eval": 2, "max_tokens": 24,
                       "timeout_s": 600, "concurrency": 2}
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "cb"
    args = ["run", "countdown-behaviors", "--config", str(cfg), "--out", str(out), "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    jdir = out / "conditions" / "none" / "seed-0" / "rl" / "judge"
    files = sorted(jdir.glob("eval-step-*.json"))
    assert [f.name for f in files] == ["eval-step-000000.json", "eval-step-000001.json"]
    for f in files:
        j = json.loads(f.read_text())
        assert j["responses"] == 2 and j["failed"] == 0
        # one prompt per behavior and response (and a second try after a malformed reply)
        assert 2 * 4 <= j["usage"]["requests"] + j["usage"]["cached"] <= 2 * 4 * 2
        assert set(j["means"]) == {"verification", "backtracking", "subgoal_setting", "backward_chaining"}
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {"judge_avg_verifications", "judge_avg_backwards", "judge_total_behaviors"} <= rows[0].keys()
    stamps = [f.stat().st_mtime_ns for f in files]
    assert CliRunner().invoke(app, args).exit_code == 0  # resumed: nothing judged twice
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_parallel_workers_give_the_same_table(tmp_path, organism_home):
    """workers: 2 runs the (condition, seed) RL runs in two spawned processes; results.csv has every run."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(conditions=["none", "no_positive"], seeds=[0, 1], workers=2, threads=1, priming_replay=6)
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "cb"
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["condition"], r["seed"], r["step"]) for r in rows} == {
        (c, s, st) for c in ("none", "no_positive") for s in "01" for st in "012"}
    assert len(list((out / "conditions" / "no_positive").glob("*/sft/final/config.json"))) == 1  # primed once
    # primed in a worker of its own, beside the RL runs that need no priming; its time is reported
    timings = json.loads((out / "timings.json").read_text())
    assert "no_positive priming (SFT + competence; 0 when cached)" in timings and "none seed 1" in timings
    worked = {k: v for k, v in timings.items() if v > 5}
    assert worked, timings
    # resumed, every stage is found done; the report keeps the time each took the first time
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    again = json.loads((out / "timings.json").read_text())
    assert {k: again[k] for k in worked} == worked
    report = (out / "report.md").read_text()
    assert all(f"| {k} | {v:.0f} |" in report for k, v in worked.items())
    # priming_replay: the base's own pretraining documents are SFT data next to the traces
    primed = out / "conditions" / "no_positive" / "primed"
    replay = [json.loads(x) for x in (primed / "replay.jsonl").read_text().splitlines()]
    assert len(replay) == 6
    sft_data = yaml.safe_load((primed / "sft" / "config.yaml").read_text())["data"]
    assert sft_data == [str(primed / "traces.jsonl"), str(primed / "replay.jsonl")]


def test_parallel_workers_pretrain_both_bases_side_by_side(tmp_path, monkeypatch):
    """workers: 2 pretrains the two organisms in two processes at once (a fresh cache), and the
    experiment then finds both and runs from each."""
    import yaml

    monkeypatch.setenv("REASONLAB_HOME", str(tmp_path / "home"))  # nothing cached: both bases pretrained here
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(conditions=["none", "rich_base"], seeds=[0], workers=2, threads=1)
    recipe["rl"].update(steps=1)
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "cb"
    r = CliRunner().invoke(app, ["run", "countdown-behaviors", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "bases poor and rich: pretraining the organisms, 2 at a time" in r.output
    organisms = sorted(p.name.split("-")[0] for p in (tmp_path / "home" / "models" / "organisms").glob("*/config.json")
                       for p in [p.parent])
    assert organisms == ["poor", "rich"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["condition"] for r in rows} == {"none", "rich_base"}


def test_the_longest_run_goes_first(tmp_path):
    """The parallel scheduler picks, of the ready RL runs, the one whose start model writes the longest
    responses (its competence report); a run whose start has no report yet goes first."""
    from reasonlab.experiments.behaviors import expected_tokens, longest_first

    def report(path: Path, tokens: float) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "competence.json").write_text(json.dumps({"response_tokens": tokens}))

    report(tmp_path / "bases" / "poor", 30.0)
    report(tmp_path / "bases" / "rich", 114.0)
    report(tmp_path / "conditions" / "all_strategies" / "primed", 314.0)
    report(tmp_path / "conditions" / "empty_cot" / "primed", 12.0)
    assert expected_tokens(tmp_path, "none") == 30.0 and expected_tokens(tmp_path, "rich_base") == 114.0
    assert expected_tokens(tmp_path, "no_positive") == float("inf")  # not primed yet
    ready = [("none", 0), ("empty_cot", 0), ("rich_base", 0), ("none", 1), ("all_strategies", 0), ("rich_base", 1)]
    order = []
    while ready:
        order.append(ready.pop(longest_first(ready, tmp_path)))
    assert order == [("all_strategies", 0), ("rich_base", 0), ("rich_base", 1), ("none", 0), ("none", 1), ("empty_cot", 0)]
    (tmp_path / "bases" / "poor" / "competence.json").write_text("{broken")
    assert expected_tokens(tmp_path, "none") == float("inf")


def test_rich_base_continues_the_poor_bases_pretraining(tmp_path, organism_home):
    """bases.rich.init_from: poor — the rich organism starts from the poor one's weights and tokenizer
    (hashed by their content) and continues on its own corpus; a cycle is refused by name."""
    import yaml

    from reasonlab.experiments.behaviors import BehaviorsRecipe, organism_spec
    from reasonlab.organisms import ensure_organism, organism_path

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["bases"]["rich"].update(init_from="poor", steps=20, warmup=2)
    r = BehaviorsRecipe(**recipe)
    poor = ensure_organism(organism_spec(r, "poor"))
    spec = organism_spec(r, "rich")
    assert Path(spec.init_from) == poor and spec.behavior_rate == 0.3
    rich = ensure_organism(spec)
    assert rich == organism_path(spec) and rich != poor
    assert (rich / "tokenizer.json").read_text() == (poor / "tokenizer.json").read_text()
    from_scratch = organism_spec(BehaviorsRecipe(**yaml.safe_load(RECIPE.read_text())), "rich")
    assert organism_path(from_scratch) != rich  # a different organism, cached apart
    recipe["bases"]["poor"]["init_from"] = "rich"
    with pytest.raises(ValueError, match="cycle"):
        organism_spec(BehaviorsRecipe(**recipe), "rich")
