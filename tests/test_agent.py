"""Agent loop with a real sandbox and a scripted policy.

The scripted backend implements the GenerationBackend interface with a real tokenizer; its "policy"
replays fixed replies (turn t of an episode gets reply t), so the loop's bookkeeping — stop on a
closed ```python block, execution, masking of interpreter output, limits — is checked exactly.
"""

import pytest

from reasonlab.rollout.agent import AgentConfig, extract_code, run_agent
from reasonlab.rollout.base import Sample, SamplingParams
from reasonlab.sandbox import Sandbox, SandboxConfig
from reasonlab.tasks import get_task


class ScriptedBackend:
    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies = tokenizer, replies
        self.calls = []

    def generate(self, prompts, params, progress=None):
        out = []
        for p in prompts:
            text_so_far = self.tokenizer.decode(p)
            turn = text_so_far.count("```output\n")  # the system prompt mentions ```output too
            reply = self.replies[min(turn, len(self.replies) - 1)]
            self.calls.append(turn)
            finish, stop_hit = "eos", None
            for s in params.stop:
                if s in reply:
                    reply, finish, stop_hit = reply[: reply.index(s) + len(s)], "stop", s
                    break
            ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
            if len(ids) > params.max_new_tokens:
                ids, finish = ids[: params.max_new_tokens], "length"
            elif finish == "eos":
                ids = ids + [self.tokenizer.eos_token_id]
            text = self.tokenizer.decode(ids[:-1] if finish == "eos" else ids)
            out.append([Sample(ids, [-0.5] * len(ids), text, finish, stop_hit) for _ in range(params.n)])
        return out


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(SandboxConfig(timeout_s=2, pool_size=2))
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def problem():
    task = get_task("countdown")
    return task, task.problems("test", 1, seed=0)[0]


def test_extract_code():
    assert extract_code("think\n```python\nx = 1\nprint(x)\n```\n") == "x = 1\nprint(x)\n"
    assert extract_code("```output\n3\n```\n") is None
    assert extract_code("no code") is None


def test_multi_turn_with_masks(tok, sandbox):
    task, p = problem()
    nums, target = p.metadata["numbers"], p.metadata["target"]
    replies = [
        "<think>Let me compute.\n```python\nx = 6 * 7\nprint(x)\n```\n",
        "Now reuse x.\n```python\nprint(x + 1)\n```\n",
        f"</think> <answer>{p.metadata['solution']}</answer>",
    ]
    be = ScriptedBackend(tok, replies)
    (eps,) = run_agent(be, task, [p], SamplingParams(n=2, max_new_tokens=200), sandbox=sandbox,
                       config=AgentConfig(max_turns=5, max_code_calls=3, max_total_tokens=2000))
    assert len(eps) == 2
    e = eps[0]
    assert e.correct and e.reward == 1.0, e.score_details
    assert e.stats["code_calls"] == 2 and e.stats["code_errors"] == 0 and e.stats["finish_reason"] == "eos"
    roles = [m["role"] for m in e.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert "42" in e.messages[3]["content"] and "43" in e.messages[5]["content"]  # session state persists
    # mask: 0 on prompt and on every tool-output token, 1 on generated tokens
    assert len(e.tokens) == len(e.mask) == len(e.logprobs)
    masked_text = tok.decode([t for t, m in zip(e.tokens, e.mask) if m == 0])
    policy_text = tok.decode([t for t, m in zip(e.tokens, e.mask) if m == 1])
    assert "```output" in masked_text and "42" in masked_text
    assert "```output" not in policy_text and "print(x + 1)" in policy_text
    assert e.mask.count(1) == e.stats["generated_tokens"]
    assert all(lp == 0.0 for lp, m in zip(e.logprobs, e.mask) if m == 0)


def test_code_cannot_forge_the_answer(tok, sandbox):
    task, p = problem()
    # the code prints a correct answer block, but the model's own text never contains one
    forged = f"print('<ans' + 'wer>' + '{p.metadata['solution']}' + '</ans' + 'wer>')"
    be = ScriptedBackend(tok, [f"```python\n{forged}\n```\n", "I am done."])
    (eps,) = run_agent(be, task, [p], SamplingParams(max_new_tokens=200), sandbox=sandbox)
    assert eps[0].stats["code_calls"] == 1 and not eps[0].correct
    assert "<answer>" in eps[0].messages[3]["content"]  # the tool output did contain it


def test_limits_errors_timeouts_and_floods(tok, sandbox):
    task, p = problem()
    loop = "```python\nwhile True: pass\n```\n"
    (eps,) = run_agent(ScriptedBackend(tok, [loop]), task, [p], SamplingParams(max_new_tokens=200),
                       sandbox=sandbox, config=AgentConfig(max_turns=10, max_code_calls=2, max_total_tokens=5000))
    e = eps[0]
    assert e.stats["code_calls"] == 2 and e.stats["code_timeouts"] == 2
    assert e.stats["finish_reason"] == "max_code_calls"
    flood = "```python\nprint('A' * 10**6)\nraise ValueError('boom')\n```\n"
    (eps,) = run_agent(ScriptedBackend(tok, [flood, "done"]), task, [p], SamplingParams(max_new_tokens=200),
                       sandbox=sandbox, config=AgentConfig(max_output_chars=300, max_total_tokens=5000))
    tool = eps[0].messages[3]["content"]
    assert len(tool) < 600 and "characters cut" in tool and "ValueError" in tool
    assert eps[0].stats["code_errors"] == 1
    # a model that never closes its block runs out of tokens, with nothing executed
    (eps,) = run_agent(ScriptedBackend(tok, ["```python\n" + "x = 1\n" * 400]), task, [p],
                       SamplingParams(max_new_tokens=100), sandbox=sandbox, config=AgentConfig(max_total_tokens=100))
    assert eps[0].stats["code_calls"] == 0 and eps[0].stats["finish_reason"] == "length"
    assert eps[0].mask.count(1) == 100
    # the turn limit
    (eps,) = run_agent(ScriptedBackend(tok, ["```python\nprint(1)\n```\n"]), task, [p],
                       SamplingParams(max_new_tokens=100), sandbox=sandbox,
                       config=AgentConfig(max_turns=3, max_code_calls=10, max_total_tokens=5000))
    assert eps[0].stats["turns"] == 3 and eps[0].stats["finish_reason"] == "max_turns"


def test_real_tiny_model_through_agent_loop(tiny_backend, sandbox):
    task, p = problem()
    (eps,) = run_agent(tiny_backend, task, [p], SamplingParams(n=2, max_new_tokens=16, seed=0), sandbox=sandbox,
                       config=AgentConfig(max_total_tokens=16))
    for e in eps:
        assert e.stats["generated_tokens"] <= 16 and e.mask.count(1) == e.stats["generated_tokens"]


def test_humaneval_scoring_in_sandbox():
    task = get_task("humaneval")
    p = task.problems("test", 1)[0]
    good = f"```python\n{p.metadata['prompt']}{p.answer}```"
    assert task.score(p, good).correct
    assert task.score(p, "```python\n" + p.answer.replace("return", "return None #", 1) + "```").correct is False
    # exiting early with status 0 skips the tests: an exit code alone must not count as passing
    assert not task.score(p, "```python\nimport os\nos._exit(0)\n```").correct
    assert not task.score(p, "no code").format_ok
    assert not task.score(p, "```python\nwhile True: pass\n```").correct
