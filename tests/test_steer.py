"""CodeSteer against the real llama.cpp server (SmolLM2-135M) behind the fault-injecting proxy."""

from __future__ import annotations

import json

import pytest
from servers import FaultProxy, serve_smollm2
from typer.testing import CliRunner

from reasonlab.experiments.steer import EndpointChat, parse_guide, steer_problem, symbolic_check
from reasonlab.tasks import get_task


def test_parse_guide_and_symbolic_checker():
    assert parse_guide("<<<Code>>> enumerate all orders") == ("code", "enumerate all orders", True)
    assert parse_guide("ok. <<<text>>>think") == ("text", "think", True)
    assert parse_guide("<<<Return Answer>>>")[0] == "return" and parse_guide("<<<Stop>>>")[0] == "stop"
    assert parse_guide("I cannot count that.") == ("", "I cannot count that.", False)
    assert symbolic_check("print(42)")["verdict"].startswith("the code only prints hard-coded values")
    s = symbolic_check("import itertools\nprint(sum(1 for p in itertools.permutations('abc') if p[0] < p[1]))")
    assert s["score"] == 2 and s["library"] == 1 and s["comprehensions"] == 1
    assert "does not parse" in symbolic_check("def (:")["verdict"] and symbolic_check(None)["score"] == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    for _, base in serve_smollm2(tmp_path_factory):
        proxy = FaultProxy(base)
        yield proxy
        proxy.close()


@pytest.fixture(scope="module")
def sandbox():
    from reasonlab.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(timeout_s=5)) as sb:
        yield sb


def test_steer_with_a_malformed_guide_reply(server, sandbox):
    task = get_task("sym/number_multiplication")
    (p,) = task.problems("test", 1)
    guide = EndpointChat(server.base, "smollm2", max_tokens=16, timeout_s=900)
    # the solver talks to the server directly (the proxy gives up on an upstream after 300 s, which a
    # starved CPU can exceed); the guide goes through the proxy, which injects the malformed reply
    solver = EndpointChat(server.upstream, "smollm2", max_tokens=32, timeout_s=900)
    server.inject("malformed", 1)  # the guide's first reply: no <<<…>>> tag at all
    e = steer_problem(task, p, guide, solver, sandbox, max_rounds=1)
    assert e.stats["malformed_guide_replies"] == 1
    assert e.messages[1] == {"role": "guide", "content": "I cannot count that."}
    assert e.stats["rounds"] == 1 and e.stats["modes"] == ["code"]  # malformed → guidance in the current mode
    assert any(m["role"] == "assistant" and m["content"] for m in e.messages)  # the real model answered
    # the solver was asked (its self-check program is requested only when it gave an answer to check)
    assert solver.client.usage.requests >= 1 and solver.client.usage.completion_tokens > 0
    assert e.reward == (1.0 if e.correct else 0.0)  # scored by the task's own scorer
    assert len(e.stats["symbolic"]) == len(e.stats["self_check"]) == len(e.stats["modes"])


def test_steer_scripted_guide_returns_and_cli_resumes(server, sandbox, tmp_path):
    task = get_task("sym/letters")
    (p,) = task.problems("test", 1)
    replies = iter(["<<<Code>>> count the letter with a loop", "<<<Return Answer>>>"])
    seen: list[list[dict]] = []

    def guide(msgs):
        seen.append([dict(m) for m in msgs])  # a copy: the loop goes on appending to its list
        return next(replies)

    solver = EndpointChat(server.upstream, "smollm2", max_tokens=32, timeout_s=900)
    e = steer_problem(task, p, guide, solver, sandbox, max_rounds=6)
    assert e.stats["finish_reason"] == "return" and e.stats["rounds"] == 2 and e.stats["modes"] == ["code"]
    feedback = seen[1][-1]["content"]  # what the guide read in round 2
    for part in ("The solver answered", "Code output", "Symbolic checker", "Self-answer checker"):
        assert part in feedback

    out = tmp_path / "steer"
    args = ["steer", "--task", "sym/letters", "--guide-base-url", server.base, "--guide-model", "smollm2",
            "--solver-base-url", server.upstream, "--solver-model", "smollm2", "--limit", "1", "--rounds", "1",
            "--max-tokens", "16", "--timeout-s", "900", "--out", str(out)]
    r = CliRunner().invoke(app_(), args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["problems"] == 1 and s["mean_rounds"] == 1.0
    n = server.received
    r = CliRunner().invoke(app_(), args)
    assert r.exit_code == 0 and server.received == n  # resumed: the guide is not asked again


def app_():
    from reasonlab.cli import app

    return app
