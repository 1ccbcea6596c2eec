import pytest

from reasonlab.tasks import get_task, list_tasks

SAMPLE = ["leg_counting", "basic_arithmetic", "chain_sum", "letter_counting", "spell_backward", "gcd", "countdown"]


def test_every_reasoning_gym_dataset_is_registered():
    from reasoning_gym.factory import DATASETS

    names = list_tasks()
    assert all(f"gym/{n}" in names for n in DATASETS)
    assert "countdown" in names


@pytest.mark.parametrize("name", SAMPLE)
def test_gym_reference_answers_score_and_splits(name):
    task = get_task(f"gym/{name}")
    test = task.problems("test", 10, seed=0)
    train = task.problems("train", 60, seed=0)
    assert not {p.question for p in test} & {p.question for p in train}
    assert [p.id for p in task.problems("test", 10, seed=0)] == [p.id for p in test]  # deterministic
    p = test[0]
    s = task.score(p, f"<think>ok</think><answer>{p.answer}</answer>")
    assert s.correct and s.reward == 1.0, (name, p.answer, s)
    bad = task.score(p, "<answer>" + "(" * 5000 + "</answer>")
    assert not bad.correct
    assert task.score(p, "no answer").reward == 0.0


def test_gym_task_args_and_huge_answer():
    task = get_task("gym/leg_counting", min_animals=2, max_animals=2)
    p = task.problems("test", 2)[0]
    assert task.score(p, "<answer>" + "9" * 100_000 + "</answer>").reward == 0.0
