import json

import pytest

from reasonlab.episode import Episode, JSONLError, append_jsonl, read_episodes, read_jsonl


def ep(i):
    return Episode("countdown", f"p{i}", 0, [{"role": "user", "content": "q"}], tokens=[1, 2], mask=[0, 1])


def test_roundtrip_and_datasets(tmp_path):
    path = tmp_path / "e.jsonl"
    append_jsonl(path, [ep(0), ep(1)])
    got = read_episodes(path)
    assert [e.problem_id for e in got] == ["p0", "p1"] and got[0].mask == [0, 1]
    import datasets

    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert ds[0]["problem_id"] == "p0" and ds[1]["tokens"] == [1, 2]


def test_broken_line_names_file_and_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(ep(0).to_dict()) + "\n{oops\n" + json.dumps(ep(1).to_dict()) + "\n")
    with pytest.raises(JSONLError, match=r"e\.jsonl:2: not valid JSON"):
        list(read_jsonl(path))


def test_truncated_tail_is_skipped_and_append_recovers(tmp_path):
    path = tmp_path / "e.jsonl"
    append_jsonl(path, [ep(0)])
    with path.open("a") as f:
        f.write('{"task": "countdown", "problem_')  # a writer killed mid-line
    assert [e.problem_id for e in read_episodes(path)] == ["p0"]
    append_jsonl(path, [ep(1)])
    with pytest.raises(JSONLError, match=":2:"):  # the torn line is now in the middle: reported
        read_episodes(path)
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["problem_id"] == "p1"


def test_missing_fields(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"task": "x"}\n')
    with pytest.raises(JSONLError, match="missing required"):
        read_episodes(path)
