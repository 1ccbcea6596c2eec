import json

import pytest
from typer.testing import CliRunner

from reasonlab.cli import app


def test_curate_local(tmp_path):
    docs = [{"id": i, "text": t} for i, t in enumerate([
        "The weather is nice today.",
        "Let me check: 3 * 4 = 12, correct. That doesn't work, let's try another approach. Working backwards from 24.",
        "Stocks went up.",
        "Let me verify this result. Wait, that is wrong, let me try again.",
    ] * 5)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    r = CliRunner().invoke(app, ["behaviors", "curate", str(corpus), "--out", str(tmp_path / "o"), "--top-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    enriched = [json.loads(x) for x in (tmp_path / "o" / "enriched.jsonl").read_text().splitlines()]
    control = [json.loads(x) for x in (tmp_path / "o" / "control.jsonl").read_text().splitlines()]
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert len(enriched) == len(control) == 5
    assert all(sum(d["behaviors"].values()) > 0 for d in enriched)
    assert all(sum(d["behaviors"].values()) == 0 for d in control)
    assert stats["documents"] == 20 and sum(stats["mean_behaviors"]["enriched"].values()) > 0


def test_curate_bad_field(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"body": "x"}\n')
    r = CliRunner().invoke(app, ["behaviors", "curate", str(corpus), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--text-field" in r.output
