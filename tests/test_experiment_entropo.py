"""`reasonlab run entropo` end to end on the tiny CI preset (interrupted, then resumed); the run plan
and recipe validation; `reasonlab tts` on its episodes."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.experiments.entropo import EntroPORecipe, paired_differences, plan_runs, run_entropo, write_outputs

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "entropo-ci.yaml"


def test_entropo_experiment_end_to_end_and_resume(tmp_path, monkeypatch):
    import reasonlab.train.preference as pref

    out = tmp_path / "e"
    recipe = EntroPORecipe(**{**yaml.safe_load(RECIPE.read_text()), "out": str(out)})
    real, calls = pref.train_preference, []

    def interrupted(cfg, **kw):  # the machine stops during the third preference run
        calls.append(cfg.out)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfg, **kw)

    monkeypatch.setattr(pref, "train_preference", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_entropo(recipe, show_progress=False)
    done = {p: p.stat().st_mtime_ns for p in [out / "sft" / "final" / "config.json",
                                              out / "dpo-a0-s0" / "final" / "config.json",
                                              out / "eval" / "dpo-a0-s1" / "metrics.json"]}
    assert not (out / "results.csv").exists()

    # resumed with the runs left spread over 2 worker processes (spawned: they train with the real
    # train_preference, so the finished runs' untouched files are the evidence that nothing was redone)
    parallel = tmp_path / "parallel.yaml"
    parallel.write_text(yaml.safe_dump({**yaml.safe_load(RECIPE.read_text()), "workers": 2, "threads": 1}))
    left = [out / n / "final" / "config.json" for n in ("entropo-dpo-a0.01-s0", "entropo-dpo-a0.01-s1")]
    assert not any(p.exists() for p in left)
    r = CliRunner().invoke(app, ["run", "entropo", "--config", str(parallel), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "2 runs on 2 worker processes × 1 torch thread(s)" in r.output
    assert all(p.exists() for p in left)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished stages were not redone

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(x["method"], float(x["alpha"]), int(x["seed"])) for x in rows] == [
        ("sft", 0, 0), ("sft", 0, 1), ("dpo", 0, 0), ("dpo", 0, 1), ("entropo-dpo", 0.01, 0), ("entropo-dpo", 0.01, 1)]
    assert [float(x["entro_alpha"]) for x in rows[2:]] == pytest.approx([0.1, 0.1, 0.11, 0.11])  # paper's α_p
    for c in ("pass@1", "pass@2", "pass@4", "div/distinct_answers", "div/distinct_correct_frac",
              "div/mean_pairwise_distance", "div/mean_token_entropy", "tts/majority@4", "tts/hybrid@4",
              "tts/random@4", "tts/oracle@4"):
        assert c in rows[0], c
    assert all(float(x["div/mean_token_entropy"]) > 0 for x in rows)
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [(s["method"], s["seeds"]) for s in summary] == [("sft", "2"), ("dpo", "2"), ("entropo-dpo", "2")]
    passk = json.loads((out / "passk.json").read_text())
    assert len(passk) == 6 and all(len(v) == 4 for v in passk.values())  # k = 1…eval_n for every run
    for name in ("report.md", "report.html", "pass_at_k.png", "tts.png", "tts_alpha.png", "alpha.png",
                 "tts_curves.json", "data_stats.json"):
        assert (out / name).stat().st_size > 100, name
    report = (out / "report.md").read_text()
    assert "entro_alpha=0.11, pref_beta=0.1" in report and "| entropo-dpo | 0.01 | dpo α=0 |" in report
    assert not list(out.glob("*/checkpoints"))  # intermediate checkpoints are dropped once final exists
    # tts command on the collected episodes
    eps = str(out / "eval" / "sft-s0" / "episodes" / "eval.jsonl")
    r = CliRunner().invoke(app, ["tts", eps, "--out", str(tmp_path / "t"), "--selectors", "random,majority,oracle,hybrid"])
    assert r.exit_code == 0, r.output
    curves = json.loads((tmp_path / "t" / "curves.json").read_text())
    assert curves["Ns"] == [1, 2, 4] and set(curves["accuracy"]) == {"random", "majority", "oracle", "hybrid"}
    r = CliRunner().invoke(app, ["tts", eps, "--selectors", "magic"])
    assert r.exit_code == 2 and "allowed" in r.output


def recipe(**kw):
    return EntroPORecipe(**{"teacher_traces": 1, **kw})


def test_plan_covers_every_loss_alpha_and_seed():
    r = recipe(losses=["dpo", "kto", "kto-released"], alphas=[0.05, 0, 0.01, 0.2], seeds=[0, 1, 2])
    runs = plan_runs(r)
    assert len(runs) == 3 + 3 * (4 + 4 + 3)  # released KTO at α = 0 is KTO: not run twice
    keys = {(x.method, x.alpha, x.seed) for x in runs}
    assert ("entropo-kto-released", 0.2, 2) in keys and ("kto", 0.0, 1) in keys and ("sft", 0.0, 0) in keys
    assert len({x.name for x in runs}) == len(runs)
    # the released form alone still gets its KTO α = 0 baseline, and nothing more of KTO
    only = plan_runs(recipe(losses=["kto-released"], alphas=[0, 0.01], seeds=[0]))
    assert [(x.method, x.alpha) for x in only] == [("sft", 0), ("kto", 0), ("entropo-kto-released", 0.01)]
    # the paper's parameterisation: α = entro_alpha − pref_beta
    paper = recipe(entro_alphas=[0.1, 0.11, 0.15], preference={"pref_beta": 0.1})
    assert paper.resolved_alphas()[0] == pytest.approx([0, 0.01, 0.05]) and paper.resolved_alphas()[1] == 0.1


@pytest.mark.parametrize("bad, field", [
    ({"alphas": [0.01, 0.05]}, "alphas: the sweep must include"),
    ({"alphas": [0, 0.01], "entro_alphas": [0.1, 0.11]}, "one parameterisation"),
    ({"entro_alphas": [0.1, 0.11]}, "needs preference.pref_beta"),
    ({"entro_alphas": [0.05, 0.1], "preference": {"pref_beta": 0.1}}, "negative"),
    ({"alphas": [0, 0.01], "preference": {"pref_beta": 0.1}}, "pref_beta is the paper"),
    ({"preference": {"alpha": 0.01}}, "preference.alpha: set by the experiment"),
    ({"start_model": "/nonexistent/organism"}, "start_model: no Hugging Face model folder"),
    ({"teacher_episodes": ["/nonexistent.jsonl"]}, r"teacher_episodes\[0\]"),
    ({"methods": []}, "methods"),
    ({"eval_n": 4, "tts": {"Ns": [1, 8]}}, "tts.Ns"),
])
def test_recipe_refuses_ambiguous_or_broken_settings(bad, field):
    with pytest.raises(ValueError, match=field):
        recipe(**bad)


def test_paired_differences_are_by_seed():
    def res(method, loss, alpha, seed, x):
        return {"row": {"method": method, "loss": loss, "alpha": alpha, "seed": seed, "pass@1": x}}

    results = [res("sft", "sft", 0.0, 0, 0.1), res("sft", "sft", 0.0, 1, 0.3),
               res("kto", "kto", 0.0, 0, 0.2), res("kto", "kto", 0.0, 1, 0.5),
               res("entropo-kto-released", "kto-released", 0.1, 0, 0.3), res("entropo-kto-released", "kto-released", 0.1, 1, 0.5)]
    d = {(x["method"], x["baseline"]): x for x in paired_differences(results, "pass@1")}
    kto = d["kto", "sft"]
    assert kto["mean"] == pytest.approx(0.15) and kto["sd"] == pytest.approx(0.0707, abs=1e-4) and kto["seeds"] == 2
    rel = d["entropo-kto-released", "kto α=0"]
    assert rel["mean"] == pytest.approx(0.05) and rel["sd"] == pytest.approx(0.0707, abs=1e-4)


def test_report_aggregates_seeds_and_states_differences(tmp_path):
    """write_outputs on made-up runs with known numbers: summary = mean ± sd over seeds, the report's
    differences are paired by seed, every plot is written."""
    r = recipe(losses=["dpo"], alphas=[0, 0.05], seeds=[0, 1], eval_n=4)
    acc = {("sft", 0): 0.1, ("sft", 1): 0.2, ("dpo", 0): 0.4, ("dpo", 1): 0.6, ("entropo-dpo", 0): 0.5,
           ("entropo-dpo", 1): 0.9}
    results = []
    for run in plan_runs(r):
        a = acc[run.method, run.seed]
        curves = {"Ns": [1, 2, 4], "accuracy": {"majority": [a, a, a], "hybrid": [a, a + 0.05, a + 0.1]}}
        results.append({"row": {"run": run.name, "method": run.method, "loss": run.loss, "alpha": run.alpha,
                                "seed": run.seed, "pass@1": a, "pass@4": min(1.0, 2 * a),
                                "div/mean_token_entropy": 1 + run.alpha, "tts/hybrid@4": a + 0.1},
                        "passk": [a, 1.5 * a, 1.8 * a, min(1.0, 2 * a)], "curves": curves})
    out = write_outputs(tmp_path, r, results, beta=0.1)
    summary = {s["method"]: s for s in csv.DictReader((out / "summary.csv").open())}
    assert float(summary["entropo-dpo"]["pass@1 mean"]) == pytest.approx(0.7)
    assert float(summary["entropo-dpo"]["pass@1 sd"]) == pytest.approx(0.2828, abs=1e-3)
    report = (out / "report.md").read_text()
    # entropo-dpo − dpo per seed: +0.1, +0.3 → +0.200 ± 0.141; dpo − sft: +0.3, +0.4 → +0.350 ± 0.071
    assert "| entropo-dpo | 0.05 | dpo α=0 | +0.200 ± 0.141 |" in report
    assert "| dpo | 0 | sft | +0.350 ± 0.071 |" in report
    assert "entro_alpha=0.15, pref_beta=0.1" in report
    for name in ("pass_at_k.png", "tts.png", "tts_alpha.png", "alpha.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_cpu_preset_organism_is_a_behaviors_organism():
    """The cpu preset's base_model is a behavior-poor organism spec, named as the cognitive-behaviors
    experiment names its bases: the same fields give the same content hash, so either experiment
    reuses the other's cached model. (entropo-cpu pins the session-6 organism, without the copying
    stage, on which its reported results were measured.)"""
    from reasonlab.experiments.behaviors import BehaviorsRecipe, organism_spec as behaviors_spec
    from reasonlab.experiments.entropo import organism_spec
    from reasonlab.organisms import organism_path

    root = RECIPE.parent
    ours = organism_spec(EntroPORecipe(**yaml.safe_load((root / "entropo-cpu.yaml").read_text())))
    cb = yaml.safe_load((root / "countdown-behaviors-cpu.yaml").read_text())
    fields = ours.model_dump(exclude={"name", "task_args", "behavior_rate"})
    cb.update(organism={k: v for k, v in fields.items() if v is not None}, task_args=ours.task_args)
    theirs = behaviors_spec(BehaviorsRecipe(**cb), "poor")
    assert organism_path(ours) == organism_path(theirs)
    assert ours.copy_warmup is None and ours.lr == 4.0e-3  # the organism its figures come from
    # a changed field is another organism
    other = EntroPORecipe(**{**yaml.safe_load((root / "entropo-cpu.yaml").read_text()),
                             "base_model": {**ours.model_dump(exclude={"task_args"}), "steps": 10}})
    assert organism_path(organism_spec(other)) != organism_path(theirs)
    with pytest.raises(ValueError, match="layerz"):
        EntroPORecipe(**{**yaml.safe_load((root / "entropo-cpu.yaml").read_text()), "base_model": {"layerz": 4}})


def test_solver_teacher_answers_every_problem_correctly_and_varies():
    from reasonlab.experiments.entropo import countdown_solutions, solver_episodes
    from reasonlab.tasks.countdown import evaluate_expression

    sols = countdown_solutions([2, 3, 4], 24)
    assert "(2 * 3) * 4" in sols and "2 * (3 * 4)" in sols and "4 * (2 * 3)" in sols and "(2 + 4) * 3" not in sols
    for s in sols:
        r = evaluate_expression(s)
        assert r.value == 24 and sorted(r.numbers) == [2, 3, 4]
    assert countdown_solutions([1, 1, 1], 30) == []
    four = countdown_solutions([1, 2, 3, 4], 24)
    assert "((1 + 2) + 3) * 4" in four and all(evaluate_expression(s).value == 24 for s in four)
    args = {"min_numbers": 3, "max_numbers": 3, "number_range": [1, 10], "target_range": [5, 30]}
    eps = solver_episodes(args, 40, seed=0)
    assert len(eps) == 40 and all(e.correct for e in eps)
    def prompt_numbers(e):
        return [int(x) for x in e.messages[1]["content"].split("[")[1].split("]")[0].split(",")]

    # the prompt's order of numbers wherever some solution keeps it
    kept = 0
    for e in eps:
        nums, target = prompt_numbers(e), int(e.messages[1]["content"].split("equals ")[1].split(".")[0])
        if any(evaluate_expression(x).numbers == nums for x in countdown_solutions(nums, target)):
            assert evaluate_expression(e.answer).numbers == nums, (nums, target, e.answer)
            kept += 1
    assert kept >= 20  # most problems of this range have such a solution
    assert [e.answer for e in solver_episodes(args, 40, seed=0)] == [e.answer for e in eps]  # deterministic
