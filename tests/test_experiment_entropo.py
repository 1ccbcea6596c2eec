"""`reasonlab run entropo` end to end on the tiny CI preset; `reasonlab tts` on its episodes."""

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from reasonlab.cli import app

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "entropo-ci.yaml"


def test_entropo_experiment_end_to_end(tmp_path):
    out = tmp_path / "e"
    r = CliRunner().invoke(app, ["run", "entropo", "--config", str(RECIPE), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [x["method"] for x in rows] == ["sft", "dpo", "entropo-dpo"]
    for c in ("pass@1", "pass@4", "div/distinct_answers", "div/mean_pairwise_distance", "tts/majority@4"):
        assert c in rows[0]
    for name in ("report.md", "report.html", "tts.png", "tts-dpo.png", "tts_curves.json"):
        assert (out / name).stat().st_size > 100
    for m in ("dpo", "entropo-dpo"):
        assert (out / m / "final" / "config.json").exists()
    # tts command on the collected episodes
    r = CliRunner().invoke(app, ["tts", str(out / "eval" / "sft" / "episodes" / "eval.jsonl"), "--out", str(tmp_path / "t"),
                                 "--selectors", "random,majority,oracle"])
    assert r.exit_code == 0, r.output
    curves = json.loads((tmp_path / "t" / "curves.json").read_text())
    assert curves["Ns"] == [1, 2, 4] and set(curves["accuracy"]) == {"random", "majority", "oracle"}
    r = CliRunner().invoke(app, ["tts", str(out / "eval" / "sft" / "episodes" / "eval.jsonl"), "--selectors", "magic"])
    assert r.exit_code == 2 and "allowed" in r.output
