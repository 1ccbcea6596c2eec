"""R1-Code-Interpreter pieces: the r1ci suite and its split, procedural generators and checkers, dataset
import, the R1-CI protocol, the improvement-potential curriculum, SFT data selection, the code teacher."""

from __future__ import annotations

import json
import logging
import random

import pytest
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.episode import Episode
from reasonlab.tasks import get_task
from reasonlab.tasks.procedural import SPECS, ProceduralTask, perturb_text
from reasonlab.tasks.suites import R1CI_TEST, SuiteTask, check_trainable, suite_tasks

# ----------------------------------------------------------------------------- suite


def test_r1ci_suite_shape_and_fixed_split():
    all_, train, test = suite_tasks("r1ci"), suite_tasks("r1ci", "train"), suite_tasks("r1ci", "test")
    assert (len(all_), len(train), len(test)) == (144, 107, 37)
    assert not set(train) & set(test) and set(train) | set(test) == set(all_)
    assert set(test) == set(R1CI_TEST)
    src = lambda names, p: sum(n.startswith(p) for n in names)  # noqa: E731
    assert (src(all_, "gym/"), src(all_, "sym/"), src(all_, "bbh/")) == (105, 26, 13)
    assert (src(test, "gym/"), src(test, "sym/") + src(test, "bbh/")) == (27, 10)
    for name in all_:  # every member is a registered task
        assert get_task(name).name == name


def test_no_test_task_reaches_any_training_stage(tmp_path, caplog):
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import RLTrainer
    from reasonlab.train.sft import select_episodes

    train_part = SuiteTask("r1ci", "train")
    assert not set(train_part.members) & set(R1CI_TEST)
    assert set(train_part.allocation(1000, seed=3)) <= set(train_part.members)
    # RL: the trainer refuses a suite part holding test tasks before it loads anything
    for bad in ("suite:r1ci/test", "suite:r1ci"):
        with pytest.raises(ValueError, match="held-out test tasks"):
            RLTrainer(RLConfig(model="no-such-model", task=bad))
    check_trainable(train_part.members, "ok")  # the train part passes
    # SFT: with --suite the test tasks' episodes are dropped; without it, mixing them in gets a warning
    eps = [Episode(task=t, problem_id=f"{t}-{i}", sample_index=0, messages=[], correct=True)
           for t in ("sym/letters", "gym/gcd", "sym/eight_queens", "bbh/navigate") for i in range(3)]
    kept, counts = select_episodes(eps, suite="r1ci")
    assert {e.task for e in kept} == {"sym/letters", "bbh/navigate"} and counts["not_in_suite_train"] == 6
    with caplog.at_level(logging.WARNING):
        assert len(select_episodes(eps)[0]) == 12
    assert "held-out test tasks of a suite (gym/gcd, sym/eight_queens)" in caplog.text
    # the code teacher and `collect --suite` draw from the train part only
    r = CliRunner().invoke(app, ["teach", "--suite", "r1ci/test", "--out", str(tmp_path / "t.jsonl"), "--limit", "2"])
    assert r.exit_code != 0 and "held-out" in r.output


def test_suite_task_spreads_problems_and_scores_by_member():
    t = SuiteTask("r1ci", "train", tasks=["sym/letters", "bbh/navigate", "sym/scheduling"])
    ps = t.problems("train", 7, seed=1)
    assert len(ps) == 7 and sorted({p.task for p in ps}) == ["bbh/navigate", "sym/letters", "sym/scheduling"]
    assert max(sum(p.task == n for p in ps) for n in t.members) - min(sum(p.task == n for p in ps) for n in t.members) <= 1
    for p in ps:
        assert t.score(p, f"<answer>{p.answer}</answer>").correct
        assert t.messages(p)[-1]["content"] == p.question
    assert [p.id for p in t.problems("train", 7, seed=1)] == [p.id for p in ps]  # reproducible


def test_cli_tasks_list_suite():
    r = CliRunner().invoke(app, ["tasks", "list", "--suite", "r1ci/test"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "37 tasks" in r.output and "sym/eight_queens" in r.output and "sym/blocksworld" not in r.output
    r = CliRunner().invoke(app, ["tasks", "list", "--suite", "nope"])
    assert r.exit_code != 0 and "unknown suite 'nope'" in r.output


# ----------------------------------------------------------------------------- procedural generators


@pytest.mark.parametrize("name", sorted(SPECS))
def test_generator_solvable_checker_exact(name):
    """Every instance has a reference the checker accepts; perturbed answers are rejected; splits are disjoint."""
    spec = SPECS[name]
    rng = random.Random(11)
    for i in range(8):
        inst = spec.gen(rng)
        assert spec.check(inst.answer, inst.data), (name, inst.question)
        wrong = (spec.perturb or perturb_text)(inst.answer, inst.data, random.Random(i))
        assert wrong != inst.answer
        try:
            ok = spec.check(wrong, inst.data)
        except (ValueError, TypeError, KeyError, IndexError):
            ok = False
        assert not ok, (name, inst.answer, wrong)
    task = ProceduralTask(spec)
    train, test = task.problems("train", 6), task.problems("test", 3)
    assert not {p.question for p in train} & {p.question for p in test}
    p = test[0]
    assert task.score(p, f"<think>x</think><answer>{p.answer}</answer>").correct
    for junk in ("no tags", "<answer></answer>", "<answer>" + "[" * 5000 + "</answer>", "<answer>__import__('os')</answer>"):
        s = task.score(p, junk)
        assert not s.correct and s.reward == 0.0


# ----------------------------------------------------------------------------- dataset import


def _write(path, text):
    path.write_text(text)
    return f"file:{path}"


def test_import_bbh_file_multiple_choice(tmp_path):
    src = _write(tmp_path / "logical.json", json.dumps({"canary": "x", "examples": [
        {"input": "Which is first?\nOptions:\n(A) owl\n(B) crow", "target": "(B)"},
        {"input": "Which is last?\nOptions:\n(A) owl\n(B) crow", "target": "(A)"}]}))
    t = get_task(src, test_percent=100)
    assert t.scorer == "choice"
    ps = t.problems("test", 5)
    assert len(ps) == 2
    p = next(p for p in ps if p.answer == "(B)")
    for good in ("(B)", "B", "(B) crow", " b "):
        assert t.score(p, f"<answer>{good}</answer>").correct, good
    for bad in ("(A)", "crow B", "", "(C)"):
        assert not t.score(p, f"<answer>{bad}</answer>").correct, bad


def test_import_qa_jsonl_exact_and_gsm8k_numeric(tmp_path):
    qa = get_task(_write(tmp_path / "qa.jsonl", '{"question": "Capital of France?", "answer": "Paris"}\n'
                                                '{"question": "2+2?", "answer": "four"}\n'), test_percent=100)
    assert qa.scorer == "exact"
    p = next(p for p in qa.problems("test", 2) if p.answer == "Paris")
    assert qa.score(p, "<answer>  paris. </answer>").correct and not qa.score(p, "<answer>Lyon</answer>").correct
    gsm = get_task(_write(tmp_path / "gsm.jsonl", '{"question": "Ann has 3 boxes of 24. How many?", '
                                                  '"answer": "3 boxes * 24 = 72\\n#### 72"}\n'
                                                  '{"question": "Cost?", "answer": "#### 1,250"}\n'), test_percent=100)
    assert gsm.scorer == "numeric"
    ps = {p.answer: p for p in gsm.problems("test", 2)}
    assert set(ps) == {"72", "1,250"}
    assert gsm.score(ps["72"], "<answer>The answer is 72.0</answer>").correct
    assert gsm.score(ps["1,250"], "<answer>$1250</answer>").correct
    assert not gsm.score(ps["72"], "<answer>73</answer>").correct


def test_import_numeric_tolerance_parquet_and_python_checker(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"problem": ["pi to 2 places?", "e?"], "solution": ["3.14", "2.718"]}), tmp_path / "d.parquet")
    t = get_task(f"file:{tmp_path / 'd.parquet'}", test_percent=100, tolerance=0.01)
    p = next(p for p in t.problems("test", 2) if p.answer == "3.14")
    assert t.score(p, "<answer>3.1416</answer>").correct and not t.score(p, "<answer>3.2</answer>").correct
    (tmp_path / "chk.py").write_text("def check(answer, target, row):\n    return sorted(answer.split()) == sorted(target.split())\n")
    t = get_task(_write(tmp_path / "w.jsonl", '{"input": "sort: b a", "target": "a b"}\n'), test_percent=100,
                 scorer=f"python:{tmp_path / 'chk.py'}:check")
    (p,) = t.problems("test", 1)
    assert t.score(p, "<answer>b a</answer>").correct and not t.score(p, "<answer>a c</answer>").correct


def test_import_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1", "answer": "a"}\n{"question": "q2"}\n')
    with pytest.raises(ValueError) as e:
        get_task(f"file:{bad}")
    assert f"{bad}:2" in str(e.value) and "missing field 'answer'" in str(e.value) and "answer_field" in str(e.value)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q1", "answer": "a"}\n{"question": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: not valid JSON"):
        get_task(f"file:{broken}")
    bbh = tmp_path / "bbh.json"
    bbh.write_text(json.dumps({"examples": [{"input": "x", "target": "y"}, {"target": "z"}]}))
    with pytest.raises(ValueError, match=r"bbh.json: record 2: missing field 'question'"):
        get_task(f"file:{bbh}")
    with pytest.raises(ValueError, match="missing field 'label'"):
        get_task(f"file:{bad}", answer_field="label")
    r = CliRunner().invoke(app, ["eval", "--task", f"file:{bad}", "--model", "x"])
    assert r.exit_code == 2 and "bad.jsonl:2" in r.output
    with pytest.raises(FileNotFoundError, match="no such dataset file"):
        get_task(f"file:{tmp_path / 'none.jsonl'}")


# ----------------------------------------------------------------------------- R1-CI protocol


def test_r1ci_protocol_prompt_answer_and_turn_reward():
    from reasonlab.rollout.agent import format_output
    from reasonlab.tasks.protocol import turn_format

    t = get_task("countdown", protocol="r1ci")
    (p,) = t.problems("test", 1)
    msgs = t.messages(p, ["python"])
    assert "<<<answer>>>" in msgs[0]["content"] and "Code Execution Results:" in msgs[0]["content"]
    assert "</answer>" not in msgs[-1]["content"] and "in the form <<<answer>>>, for example <<<(1 + 2) / 3>>>" in msgs[-1]["content"]
    sol = p.metadata["solution"]
    code_turn = "Let me compute.\n```python\nprint(1)\n```\n"
    s = t.score(p, f"{code_turn}So <<<{sol}>>>")
    assert s.correct and s.reward == pytest.approx(1.1) and s.details["turns"] == 2
    assert t.score(p, f"<<<{sol}>>>").reward == pytest.approx(1.1)
    assert t.score(p, "<<<1+1>>>").reward == pytest.approx(0.1)  # well formed, wrong
    assert t.score(p, f"<answer>{sol}</answer>").reward == pytest.approx(-0.1)  # not the protocol's answer form
    two = "```python\nprint(1)\n```\n```python\nprint(2)\n```\n"  # two blocks in one turn
    assert turn_format(two + f"<<<{sol}>>>")["turns"] == 3
    seven = code_turn * 6 + f"<<<{sol}>>>"
    assert turn_format(seven) == {"turns": 7, "well_formed": True, "within_turns": False}
    assert t.score(p, seven).reward == pytest.approx(0.9)  # correct, −0.1 past 6 turns
    assert t.score(p, "```python\nprint(1)\n" + f"<<<{sol}>>>").reward == pytest.approx(0.9)  # unclosed block
    assert t.max_code_calls == 8 and t.tool_output_style == "r1ci"

    class R:
        stdout, stderr, timed_out, exit_code, error = "42\n", "", False, 0, None

    assert format_output(R(), 100, "r1ci") == "Code Execution Results: 42\n"
    assert format_output(R(), 100).startswith("```output\n42")
    assert get_task("sym/letters", protocol="r1ci").inner.name == "sym/letters"
    with pytest.raises(ValueError, match="unknown protocol"):
        get_task("countdown", protocol="xml")


def test_r1ci_protocol_in_the_agent_loop(tiny_backend):
    """The agent loop allows 8 code calls (even with a config of 12 and max_turns 3) and formats tool output
    as 'Code Execution Results:'."""
    from reasonlab.rollout.agent import AgentConfig, run_agent
    from reasonlab.rollout.base import SamplingParams

    class Scripted:  # a backend that always writes one code block (the loop under test is real)
        tokenizer = tiny_backend.tokenizer

        def generate(self, prompts, params):
            from reasonlab.rollout.base import Sample

            text = "```python\nprint(6*7)\n```\n"
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return [[Sample(token_ids=ids, logprobs=[0.0] * len(ids), text=text, finish_reason="stop")] for _ in prompts]

    from reasonlab.sandbox import Sandbox, SandboxConfig

    t = get_task("sym/number_multiplication", protocol="r1ci")
    (p,) = t.problems("test", 1)
    with Sandbox(SandboxConfig(timeout_s=5)) as sb:
        (eps,) = run_agent(Scripted(), t, [p], SamplingParams(n=1, max_new_tokens=64), sandbox=sb,
                           config=AgentConfig(max_turns=3, max_code_calls=12, max_total_tokens=4000))
    e = eps[0]
    assert e.stats["code_calls"] == 8 and e.stats["turns"] == 9  # 8 calls, then the turn for the answer
    tools = [m["content"] for m in e.messages if m["role"] == "tool"]
    assert tools[0] == "Code Execution Results: 42\n"
    assert e.reward == pytest.approx(-0.1)  # no <<<answer>>>, 9 turns


# ----------------------------------------------------------------------------- curriculum


def test_potential_groups_and_stages_against_hand_computed_values():
    from types import SimpleNamespace as NS

    from reasonlab.train.rl.curriculum import Curriculum, potential, potential_groups, success_rates

    # p from samples: a 2/4, b 1/4, c 0/4, d 4/4, e 3/4, f 1/5, g 2/5, h 3/5
    outcomes = {"a": [1, 1, 0, 0], "b": [1, 0, 0, 0], "c": [0, 0, 0, 0], "d": [1, 1, 1, 1], "e": [1, 1, 1, 0],
                "f": [1, 0, 0, 0, 0], "g": [1, 1, 0, 0, 0], "h": [1, 1, 1, 0, 0]}
    eps = [NS(problem_id=k, correct=bool(c)) for k, cs in outcomes.items() for c in cs]
    rates = success_rates(eps)
    assert rates == {"a": 0.5, "b": 0.25, "c": 0.0, "d": 1.0, "e": 0.75, "f": 0.2, "g": 0.4, "h": 0.6}
    # Π = 4p(1−p): a 1.0, g 0.96, h 0.96, b 0.75, e 0.75, f 0.64, c 0, d 0
    assert [potential(rates[k]) for k in "aghbefcd"] == pytest.approx([1.0, 0.96, 0.96, 0.75, 0.75, 0.64, 0.0, 0.0])
    assert potential_groups(rates, 4) == [["a", "g"], ["h", "b"], ["e", "f"], ["c", "d"]]
    assert potential_groups(rates, 3) == [["a", "g", "h"], ["b", "e", "f"], ["c", "d"]]
    pool = [NS(id=k) for k in "abcdefgh"] + [NS(id="unseen")]
    cur = Curriculum(pool, seed=0, steps=8, kind="potential", rates=rates, groups=4)
    assert cur.stage_steps == 2 and [cur.stage(s) for s in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]
    seen = {s: {p.id for p in cur.problems_for(s, 3)} for s in range(8)}
    assert seen[0] | seen[1] <= {"a", "g"} and seen[2] | seen[3] <= {"a", "g", "h", "b"}
    assert seen[2] | seen[3] == {"a", "g", "h", "b"}  # a stage visits all its problems (epoch-wise shuffles)
    assert seen[6] | seen[7] <= set("abcdefgh") and "unseen" not in set().union(*seen.values())
    # uniform (the ablation) is the engine's original order over the whole pool
    uni = Curriculum(pool, seed=0, steps=8)
    assert {p.id for s in range(3) for p in uni.problems_for(s, 3)} == {p.id for p in pool}
    with pytest.raises(ValueError, match="none of the"):
        Curriculum(pool, seed=0, steps=8, kind="potential", rates={"zz": 0.5})


def test_per_task_metrics():
    from reasonlab.analysis.metrics import summarize

    eps = [Episode(task=t, problem_id=f"{t}{i}", sample_index=0, messages=[], correct=c, reward=r)
           for t, i, c, r in [("x", 0, True, 1.0), ("x", 1, False, 0.0), ("y", 0, True, 1.1)]]
    pt = summarize(eps)["per_task"]
    assert pt["x"] == {"accuracy": 0.5, "mean_reward": 0.5, "samples": 2}
    assert pt["y"]["mean_reward"] == pytest.approx(1.1)


# ----------------------------------------------------------------------------- SFT data, code teacher


def test_select_episodes_rejection_sampling_and_cap():
    from reasonlab.train.sft import select_episodes

    eps = [Episode(task=t, problem_id=f"{t}{i}", sample_index=0, messages=[], correct=i % 2 == 0)
           for t in ("sym/letters", "bbh/navigate") for i in range(10)]
    kept, counts = select_episodes(eps, only_correct=True, cap_per_task=3)
    assert all(e.correct for e in kept)
    assert {t: sum(e.task == t for e in kept) for t in ("sym/letters", "bbh/navigate")} == {"sym/letters": 3, "bbh/navigate": 3}
    assert counts == {"read": 20, "not_in_suite_train": 0, "incorrect": 10, "over_cap": 4, "kept": 6}


def test_code_teacher_every_solver_program_is_right(tiny_model):
    """Each task's solver program runs in the real sandbox and its printed answer passes the checker."""
    from reasonlab.experiments.teach import teach_episodes
    from reasonlab.sandbox import Sandbox, SandboxConfig
    from reasonlab.train.sft import tokenize_episode

    names = [n for n, s in SPECS.items() if s.solver]
    assert len(names) >= 20
    suite = SuiteTask("r1ci", "all", tasks=names)
    problems = [get_task(n).problems("train", 1, seed=5)[0] for n in names]
    with Sandbox(SandboxConfig(timeout_s=10)) as sb:
        eps, counts = teach_episodes(suite, problems, sandbox=sb)
        r1, _ = teach_episodes(get_task("sym/knapsack", protocol="r1ci"), get_task("sym/knapsack").problems("train", 1),
                               sandbox=sb, protocol="r1ci")
    assert counts["incorrect"] == 0 and counts["kept"] == len(names), counts
    e = eps[0]
    assert [m["role"] for m in e.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert "```python" in e.messages[2]["content"] and e.messages[3]["content"].startswith("```output")
    assert r1[0].messages[3]["content"].startswith("Code Execution Results:") and r1[0].reward == pytest.approx(1.1)
    # SFT masks the tool output: the printed answer in the tool turn is not a training target
    from transformers import AutoTokenizer

    from reasonlab.models import CHATML_TEMPLATE

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = tok.chat_template or CHATML_TEMPLATE
    ids, mask = tokenize_episode(tok, e.messages)
    assert 0 in mask[mask.index(1):] and sum(mask) > 0


# ----------------------------------------------------------------------------- the r1ci CI-preset smoke


def test_eval_suite_r1ci_smoke(tiny_model, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", "--suite", "r1ci", "--model", tiny_model, "--n", "2", "--limit", "2", "--max-new-tokens", "8",
            "--protocol", "r1ci", "--out", str(out), "--quiet", "--device", "cpu", "--compile", "off"]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["task"] == "suite:r1ci/test" and s["problems"] == 2 and s["samples"] == 4
    assert set(s["per_task"]) <= set(R1CI_TEST) and len(s["per_task"]) == 2
    eps = [json.loads(x) for x in (out / "episodes" / "eval.jsonl").read_text().splitlines()]
    assert all(e["task"] in R1CI_TEST for e in eps)
    assert all("<<<answer>>>" in e["messages"][0]["content"] for e in eps)
    r = CliRunner().invoke(app, ["eval", "--suite", "r1ci", "--task", "countdown"])
    assert r.exit_code != 0 and "not both" in r.output


# ----------------------------------------------------------------------------- the RL engine's sampler


def test_rl_curriculum_stages_and_per_task_metrics(tiny_model, tmp_path, monkeypatch):
    """GRPO on a two-task suite with the potential curriculum: step 0 samples only the highest-Π group,
    the stage is logged, per-task accuracy and reward appear in metrics; held-out tasks never enter."""
    from reasonlab.episode import append_jsonl
    from reasonlab.tasks.base import register
    from reasonlab.tasks.suites import SUITES, SuiteTask
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import RLTrainer, train_rl

    monkeypatch.setitem(SUITES, "mini", {"description": "test", "tasks": lambda: ["bbh/navigate", "sym/letters",
                                                                                   "bbh/web_of_lies"],
                                         "test": ("bbh/web_of_lies",)})
    register("suite:mini/train", "test suite")(lambda **kw: SuiteTask("mini", "train", **kw))
    pool = SuiteTask("mini", "train").problems("train", 8, seed=0)
    # p: the 2 navigate problems half solved (Π = 1), the rest never (Π = 0) → group 0 = 2 of the Π = 1 ones
    eps = [Episode(task=p.task, problem_id=p.id, sample_index=j, messages=[],
                   correct=(p.task == "bbh/navigate" and j == 0)) for p in pool for j in range(2)]
    append_jsonl(tmp_path / "p.jsonl", eps)
    top = {p.id for p in pool if p.task == "bbh/navigate"}
    cfg = RLConfig.model_validate(dict(
        model=tiny_model, task="suite:mini/train", steps=4, train_pool=8, tensorboard=False, out=str(tmp_path / "run"),
        rollout={"prompts_per_step": 4, "n": 2, "max_new_tokens": 6}, eval_limit=2, eval_n=1,
        curriculum={"kind": "potential", "episodes": [str(tmp_path / "p.jsonl")], "groups": 4}))
    tr = RLTrainer(cfg)
    assert tr.curriculum.stage_steps == 1 and len(tr.curriculum.groups) == 4
    assert {p.id for p in tr.problems_for(0)} <= top and len(tr.curriculum.groups[0]) == 2
    assert "bbh/web_of_lies" not in {p.task for p in tr.pool}
    out = train_rl(cfg, show_progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["curriculum_stage"] for r in rows] == [0, 1, 2, 3]
    assert not any(k.startswith("task/") for r in rows[:2] for k in r)  # stages 0-1: navigate only
    mixed = [r for r in rows if "task/sym/letters/accuracy" in r]
    assert mixed and all(f"task/{t}/{m}" in r for r in mixed for t in ("sym/letters", "bbh/navigate")
                         for m in ("accuracy", "reward"))


def test_collect_writes_capped_correct_sft_data(tmp_path):
    from reasonlab.episode import append_jsonl, read_episodes
    from reasonlab.experiments.collect import CollectConfig, write_sft_data

    eps = [Episode(task=t, problem_id=f"{t}{i}", sample_index=0, messages=[{"role": "assistant", "content": "x"}],
                   correct=i < 5) for t in ("sym/letters", "bbh/navigate") for i in range(8)]
    append_jsonl(tmp_path / "c.jsonl", eps)
    counts = write_sft_data(tmp_path / "c.jsonl", tmp_path / "sft.jsonl", CollectConfig(model="m", sft_cap_per_task=3))
    got = read_episodes(tmp_path / "sft.jsonl")
    assert counts["kept"] == 6 and len(got) == 6 and all(e.correct for e in got)
    assert sorted({e.task for e in got}) == ["bbh/navigate", "sym/letters"]
