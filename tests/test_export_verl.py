"""`reasonlab export verl`: verl's parquet schema, disjoint splits, and the written reward module."""

import importlib.util
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from reasonlab.export.verl import compute_score, dumps_tagged, export_verl, loads_tagged
from reasonlab.tasks import get_task
from reasonlab.tasks.countdown import evaluate_expression

VERL_COLUMNS = {"data_source", "prompt", "ability", "reward_model", "extra_info"}


def load_reward_module(path):
    """Import the written file by path, as verl's custom_reward_function.path does."""
    spec = importlib.util.spec_from_file_location("reasonlab_reward_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def countdown_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("verl") / "countdown"
    paths = export_verl("countdown", out, n_train=300, n_test=40, seed=0)
    return out, paths


def rows(path):
    """Rows as plain Python objects, the way verl's datasets-based loader hands them over."""
    return pq.read_table(path).to_pylist()


def test_parquet_has_verl_schema(countdown_export):
    out, paths = countdown_export
    assert {p.name for p in out.iterdir()} == {"train.parquet", "test.parquet", "reasonlab_reward.py", "README.md"}
    for split, n in (("train", 300), ("test", 40)):
        df = pd.read_parquet(out / f"{split}.parquet")
        assert set(df.columns) == VERL_COLUMNS and len(df) == n
        r = rows(out / f"{split}.parquet")[0]
        assert r["data_source"] == "reasonlab/countdown" and r["ability"] == "math"
        assert [m["role"] for m in r["prompt"]] == ["system", "user"]
        assert "<answer>" in r["prompt"][1]["content"]
        assert r["reward_model"]["style"] == "rule"
        gt = r["reward_model"]["ground_truth"]
        assert set(gt) == {"numbers", "target"} and all(isinstance(x, int) for x in gt["numbers"])
        assert r["extra_info"]["split"] == split and r["extra_info"]["index"] == 0
    assert [r["extra_info"]["index"] for r in rows(out / "test.parquet")] == list(range(40))


def test_train_and_test_do_not_overlap(countdown_export):
    out, _ = countdown_export

    def keys(split):
        return {(tuple(sorted(r["reward_model"]["ground_truth"]["numbers"])), r["reward_model"]["ground_truth"]["target"])
                for r in rows(out / f"{split}.parquet")}

    train, test = keys("train"), keys("test")
    assert len(train) == 300 and len(test) == 40  # no duplicates inside a split either
    assert not train & test
    questions = {split: {r["prompt"][-1]["content"] for r in rows(out / f"{split}.parquet")} for split in ("train", "test")}
    assert not questions["train"] & questions["test"]


def _wrong_expression(numbers, target):
    for op in ("+", "*", "-"):
        expr = f" {op} ".join(map(str, numbers))
        if evaluate_expression(expr).value != target:
            return expr
    raise AssertionError("no wrong expression found")


def test_reward_module_scores_like_the_task(countdown_export):
    out, paths = countdown_export
    mod = load_reward_module(paths["reward"])
    problems = get_task("countdown").problems("test", 40, seed=0)
    for r, p in zip(rows(out / "test.parquet")[:10], problems):
        assert r["extra_info"]["problem_id"] == p.id
        args = (r["data_source"], r["reward_model"]["ground_truth"], r["extra_info"])
        ref = mod.compute_score(args[0], f"<think>ok</think> <answer>{p.metadata['solution']}</answer>", *args[1:])
        assert ref == 1.0 and type(ref) is float
        wrong = _wrong_expression(p.metadata["numbers"], p.metadata["target"])
        assert mod.compute_score(args[0], f"<answer>{wrong}</answer>", *args[1:]) == pytest.approx(0.1)
        assert mod.compute_score(args[0], "no idea, sorry", *args[1:]) == 0.0
    # pandas hands lists over as numpy arrays: the scorer takes those too
    row = pd.read_parquet(out / "test.parquet").iloc[0]
    text = f"<answer>{problems[0].metadata['solution']}</answer>"
    assert mod.compute_score(row.data_source, text, row.reward_model["ground_truth"], row.extra_info) == 1.0
    assert mod.compute_score(row.data_source, text, row.reward_model["ground_truth"]) == 1.0  # no extra_info


@pytest.mark.parametrize("text", [
    "<answer>9**9**9</answer>",
    "<answer>" + "9" * 100_000 + "</answer>",
    "<answer>" + "(" * 50_000 + "1" + ")" * 50_000 + "</answer>",
    "x" * 100_000,
    "<answer>__import__('os').system('touch /tmp/pwned')</answer>",
    "<answer>" * 20_000,
])
def test_reward_module_is_fast_and_safe_on_adversarial_text(countdown_export, text):
    out, paths = countdown_export
    mod = load_reward_module(paths["reward"])
    r = rows(out / "test.parquet")[0]
    t0 = time.perf_counter()
    score = mod.compute_score(r["data_source"], text, r["reward_model"]["ground_truth"], r["extra_info"])
    assert time.perf_counter() - t0 < 0.5
    assert score == 0.0 and type(score) is float


def test_task_args_travel_with_the_rows(tmp_path):
    paths = export_verl("countdown", tmp_path, n_train=5, n_test=5, seed=1,
                        task_args={"format_reward": 0.5, "max_numbers": 3})
    r = rows(paths["test"])[0]
    gt = r["reward_model"]["ground_truth"]
    assert len(gt["numbers"]) == 3
    wrong = _wrong_expression(gt["numbers"], gt["target"])
    assert compute_score(r["data_source"], f"<answer>{wrong}</answer>", gt, r["extra_info"]) == 0.5
    assert "--task-arg format_reward=0.5" in paths["readme"].read_text()


def test_gym_task_round_trips(tmp_path):
    paths = export_verl("gym/leg_counting", tmp_path, n_train=30, n_test=5, seed=0)
    mod = load_reward_module(paths["reward"])
    problems = get_task("gym/leg_counting").problems("test", 5, seed=0)
    test_rows = rows(paths["test"])
    assert not {r["prompt"][-1]["content"] for r in rows(paths["train"])} & {r["prompt"][-1]["content"] for r in test_rows}
    for r, p in zip(test_rows, problems):
        assert r["data_source"] == "reasonlab/gym/leg_counting" and isinstance(r["reward_model"]["ground_truth"], str)
        args = (r["reward_model"]["ground_truth"], r["extra_info"])
        assert mod.compute_score(r["data_source"], f"<answer>{p.answer}</answer>", *args) == 1.0
        assert mod.compute_score(r["data_source"], f"<answer>{int(p.answer) + 1}</answer>", *args) == 0.0
        assert mod.compute_score(r["data_source"], "<answer>" + "9" * 100_000 + "</answer>", *args) == 0.0


def test_tagged_json_keeps_tuples_and_keys():
    obj = {"grid": ((1, 2), (3, 4)), "rows": [(0,)], 3: "int key", "__tuple__": 1, "nested": {"a": None}}
    assert loads_tagged(dumps_tagged(obj)) == obj
    with pytest.raises(TypeError):
        dumps_tagged({"x": {1, 2}})


@pytest.mark.slow
def test_gym_arc_grids_survive_export(tmp_path):
    """ARC scorers compare tuple grids with ==; plain JSON would turn them into lists (reward 0.05)."""
    paths = export_verl("gym/arc_agi", tmp_path, n_train=3, n_test=3, seed=0)
    p = get_task("gym/arc_agi").problems("test", 3, seed=0)[0]
    r = rows(paths["test"])[0]
    assert compute_score(r["data_source"], f"<answer>{p.answer}</answer>", r["reward_model"]["ground_truth"],
                         r["extra_info"]) == 1.0


def test_unsupported_tasks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sandbox"):
        export_verl("humaneval", tmp_path, n_train=1, n_test=1)
    with pytest.raises(KeyError, match="unknown task"):
        export_verl("gym/no_such_dataset", tmp_path, n_train=1, n_test=1)
    assert not list(tmp_path.iterdir())


def test_unknown_data_source_scores_zero_and_says_which_are_known(caplog):
    import logging

    with caplog.at_level(logging.ERROR, logger="reasonlab.export.verl"):
        assert compute_score("openai/gsm8k", "#### 3", "3") == 0.0
        assert compute_score("reasonlab/humaneval", "x", "{}") == 0.0
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2 and "'openai/gsm8k' is unknown" in msgs[0] and "'countdown'" in msgs[0]
    assert "sandbox" in msgs[1] and "gym/<dataset>" in msgs[1]
    compute_score("openai/gsm8k", "#### 3", "3")
    assert len(caplog.records) == 2  # logged once per source


TZ = {"target": 24, "numbers": [2, 3, 4]}


@pytest.mark.parametrize("text,want", [
    ("<think>ok</think> <answer>(3 * 4) * 2</answer>", 1.0),
    ("Assistant: <think>a</think>\n<answer>2 * 3 * 4</answer>", 1.0),  # text after the assistant marker
    ("<|im_start|>assistant\n<answer>4*3*2</answer>", 1.0),
    ("<answer>2 * 3 * 4</answer>\nthat is all", 0.0),  # TinyZero reads only the last line
    ("<answer>2 * 3 + 4</answer>", 0.1),  # wrong value
    ("<answer>3 * 4 * 2 * 1</answer>", 0.1),  # a number not given
    ("<answer>3 * 8</answer>", 0.1),  # numbers not used exactly
    ("<answer>2 * 3 / (4 - 4)</answer>", 0.1),
    ("<answer>2 ** 3 * 4 - 8</answer>", 0.1),  # not evaluated (TinyZero's eval would)
    ("<answer>9**9**9</answer>", 0.1),
    ("<answer>" + "(" * 50_000 + "2*3*4" + ")" * 50_000 + "</answer>", 0.1),
    ("no answer at all", 0.0),
])
def test_tinyzero_countdown_rows_scored_by_tinyzeros_rule(text, want):
    t0 = time.perf_counter()
    assert compute_score("countdown", text, TZ) == pytest.approx(want)
    assert compute_score("countdown", text, {"target": 24, "numbers": __import__("numpy").array([2, 3, 4])},
                         None, reward_router_address="x") == pytest.approx(want)  # numpy lists, extra kwargs
    assert time.perf_counter() - t0 < 0.5


def test_cli(tmp_path):
    import typer
    from typer.testing import CliRunner

    from reasonlab.export.cli import app

    root = typer.Typer()
    root.add_typer(app, name="export")  # mounted like reasonlab.cli does
    runner = CliRunner()
    res = runner.invoke(root, ["export", "verl", "--help"])
    assert res.exit_code == 0 and "Example: reasonlab export verl" in res.output
    out = tmp_path / "cd"
    res = runner.invoke(root, ["export", "verl", "--task", "countdown", "--out", str(out), "--n-train", "20",
                               "--n-test", "5", "--seed", "3", "--task-arg", "max_numbers=3"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(out / "train.parquet")) == 20
    readme = (out / "README.md").read_text()
    assert "verl.trainer.main_ppo" in readme and f"data.train_files={out.resolve()}/train.parquet" in readme
    assert "reward.custom_reward_function.path" in readme and "algorithm.adv_estimator=gae" in readme
    assert "algorithm.use_kl_in_reward=True" in readme and "actor_rollout_ref.actor.use_kl_loss=True" in readme
    res = runner.invoke(root, ["export", "verl", "--task", "humaneval", "--out", str(tmp_path / "he")])
    assert res.exit_code == 2 and "cannot export" in res.output
    res = runner.invoke(root, ["export", "verl", "--out", str(tmp_path / "x"), "--task-arg", "oops"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
