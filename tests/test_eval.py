"""End-to-end `reasonlab eval` on a tiny model, and resume after interruption."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.config import EvalConfig
from reasonlab.episode import read_episodes
from reasonlab.experiments.evaluate import run_eval


def test_eval_cli_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--task", "countdown", "--model", tiny_model, "--n", "4", "--limit", "5",
            "--max-new-tokens", "16", "--dtype", "fp32", "--out", str(out), "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 5 and summary["samples_per_problem"] == 4
    assert set(summary["pass@k"]) == {"1", "2", "4"}
    assert 0 < summary["mean_generated_tokens"] <= 16
    eps = read_episodes(out / "episodes" / "eval.jsonl")
    assert len(eps) == 20
    e = eps[0]
    assert len(e.tokens) == len(e.mask) == len(e.logprobs)
    assert e.mask.count(1) == e.stats["generated_tokens"] and e.mask[0] == 0
    assert e.messages[-1]["role"] == "assistant" and e.messages[0]["role"] == "system"
    assert (out / "pass_at_k.png").stat().st_size > 1000
    assert "pass@k" in (out / "report.md").read_text()
    # a second run is a no-op resume; a different config in the same dir is refused
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and len(read_episodes(out / "episodes" / "eval.jsonl")) == 20
    r = CliRunner().invoke(app, args[:-3] + ["--seed", "5", "--out", str(out)])
    assert r.exit_code == 2 and "different seed" in r.output


class CountingBackend:
    """Wraps the real backend; counts prompts and can fail after a number of calls."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.tokenizer, self.fail_after = inner, inner.tokenizer, fail_after
        self.prompts = 0
        self.calls = 0

    def generate(self, prompts, params, progress=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.prompts += len(prompts)
        return self.inner.generate(prompts, params, progress)


def test_resume_does_not_redo_finished_problems(tiny_backend, tmp_path):
    cfg = EvalConfig(task="countdown", model="tiny", n=2, limit=7, batch_size=4, out=str(tmp_path / "r"),
                     sampling={"max_new_tokens": 8})
    # batch_size 4, n 2 → 4 problems per chunk; interrupt before the second chunk
    be = CountingBackend(tiny_backend, fail_after=1)
    try:
        run_eval(cfg, show_progress=False, backend=be)
        raise AssertionError("expected interruption")
    except KeyboardInterrupt:
        pass
    assert be.prompts == 4 * 2  # the agent loop sends one prompt per sample
    assert len(read_episodes(tmp_path / "r" / "episodes" / "eval.jsonl")) == 8
    be2 = CountingBackend(tiny_backend)
    s = run_eval(cfg, show_progress=False, backend=be2)
    assert be2.prompts == 3 * 2 and s["problems"] == 7
    # growing the limit only generates the new problems
    be3 = CountingBackend(tiny_backend)
    s = run_eval(cfg.model_copy(update={"limit": 9}), show_progress=False, backend=be3)
    assert be3.prompts == 2 * 2 and s["problems"] == 9


def test_sigkill_and_resume(tiny_model, tmp_path):
    """A real `reasonlab eval` process killed with SIGKILL mid-run resumes without redoing work."""
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "reasonlab.cli", "eval", "--model", tiny_model, "--n", "2", "--limit", "24",
           "--batch-size", "2", "--max-new-tokens", "24", "--dtype", "fp32", "--out", str(out), "--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ep = out / "episodes" / "eval.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not ep.exists() or len(ep.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {(e.problem_id, e.sample_index): e.tokens for e in read_episodes(ep)}
    assert 4 <= len(before) < 48, "the run should have been killed part-way"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    after = read_episodes(ep)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 24 and summary["samples"] == 48
    # episodes written before the kill are kept as they were (not regenerated)
    firsts = {}
    for e in after:
        firsts.setdefault((e.problem_id, e.sample_index), e.tokens)
    complete_before = {k for k in before if (k[0], 1 - k[1]) in before}
    assert all(firsts[k] == before[k] for k in complete_before)
    n_lines = len([ln for ln in ep.read_text().splitlines() if ln.strip()])
    assert n_lines <= 48 + 1  # at most one partial problem redone
