"""The OpenAI-compatible client and the behavior judge against a real llama.cpp server on loopback
(SmolLM2-135M GGUF), with a fault-injecting proxy for 429, 500, timeouts and malformed replies."""

import asyncio
import importlib.util

import pytest

from reasonlab.rollout.openai_client import BudgetExceeded, OpenAIChat, RequestFailed

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama-cpp-python is not installed (install.sh installs it; see README)", allow_module_level=True)

from servers import FaultProxy, serve_smollm2  # noqa: E402

Q = [{"role": "user", "content": "What is 2 + 2? Answer with one number."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    for _, base in serve_smollm2(tmp_path_factory):
        proxy = FaultProxy(base)
        yield proxy
        proxy.close()


def client(server, tmp_path, **kw):
    kw.setdefault("backoff_s", 0.05)
    return OpenAIChat(server.base, "smollm2", cache=tmp_path / "cache.sqlite", **kw)


def test_chat_usage_and_cache(server, tmp_path):
    c = client(server, tmp_path, price_in=1.0, price_out=2.0)
    r = asyncio.run(c.achat(Q, max_tokens=8, temperature=0))
    assert r.text and r.completion_tokens > 0 and r.prompt_tokens > 0 and not r.cached
    before = server.forwarded
    r2 = asyncio.run(c.achat(Q, max_tokens=8, temperature=0))
    assert r2.cached and r2.text == r.text and server.forwarded == before  # nothing paid twice
    assert c.usage.requests == 1 and c.usage.cached == 1
    assert c.usage.cost == pytest.approx((r.prompt_tokens * 1 + r.completion_tokens * 2) / 1e6)
    # a new client on the same cache (a resumed run) makes no request either
    c2 = client(server, tmp_path)
    asyncio.run(c2.achat(Q, max_tokens=8, temperature=0))
    assert server.forwarded == before and c2.usage.requests == 0


def test_retries_on_429_and_500_then_succeeds(server, tmp_path):
    c = client(server, tmp_path)
    server.inject("429", 2)
    server.inject("500", 1)
    r = asyncio.run(c.achat(Q, max_tokens=4, temperature=0, seed=1))
    assert r.text
    assert c.usage.retries == 3 and c.usage.errors == {"RateLimitError": 2, "InternalServerError": 1}


def test_gives_up_after_retries_and_on_timeout(server, tmp_path):
    c = client(server, tmp_path, max_retries=1)
    server.inject("429", 2)
    with pytest.raises(RequestFailed, match="RateLimitError after 2 attempts"):
        asyncio.run(c.achat(Q, max_tokens=4, seed=2))
    c = client(server, tmp_path, max_retries=0, timeout_s=0.5)
    server.inject("stall", 1)
    with pytest.raises(RequestFailed, match="Timeout"):
        asyncio.run(c.achat(Q, max_tokens=4, seed=3))


def test_budget_stops_new_requests(server, tmp_path):
    c = client(server, tmp_path, price_in=1e6, budget=1.0)  # the first request spends it all
    asyncio.run(c.achat(Q, max_tokens=2, seed=4))
    with pytest.raises(BudgetExceeded):
        asyncio.run(c.achat(Q, max_tokens=2, seed=5))


def test_concurrency_limit(server, tmp_path):
    c = client(server, tmp_path, concurrency=2)
    reqs = [(Q, {"max_tokens": 2, "seed": 100 + i}) for i in range(6)]
    out = c.chat_many(reqs)
    assert all(not isinstance(r, Exception) for r in out) and c.usage.requests == 6


def test_judge_counts_and_handles_malformed(server, tmp_path):
    from reasonlab.analysis.judge import BehaviorJudge

    c = client(server, tmp_path)
    judge = BehaviorJudge(c, max_tokens=48)
    texts = ["Let me check: 3 * 5 = 15. That doesn't work, let me try another way. Working backwards from 24."]
    server.inject("malformed", 4)  # the first reply of each behavior is malformed, then a retry
    rep = judge.count(texts)
    assert set(rep.counts[0]) == {"verification", "backtracking", "subgoal_setting", "backward_chaining"}
    assert all(v is None or isinstance(v, int) for v in rep.counts[0].values())
    assert rep.usage["requests"] >= 4 and rep.failed == 0
    # a re-run is served from the cache
    before = server.forwarded
    judge2 = BehaviorJudge(client(server, tmp_path), max_tokens=48)
    rep2 = judge2.count(texts)
    assert server.forwarded == before and rep2.counts == rep.counts


def test_collect_against_real_server_with_resume(server, tmp_path):
    from reasonlab.episode import read_episodes
    from reasonlab.experiments.collect import CollectConfig, run_collect

    cfg = CollectConfig(base_url=server.base, model="smollm2", task="countdown", limit=3, n=2, out=str(tmp_path / "c"),
                        concurrency=4, timeout_s=60, price_in=0.5, price_out=1.5,
                        sampling={"temperature": 0.7, "max_new_tokens": 48}, agent={"max_turns": 3})
    server.inject("500", 1)  # a server error on the way: retried, not fatal
    s = run_collect(cfg, show_progress=False)
    assert s["complete_problems"] == 3 and s["usage"]["retries"] >= 1
    eps = read_episodes(tmp_path / "c" / "episodes" / "collect.jsonl")
    assert len(eps) == 6 and all(e.messages[-1]["role"] in ("assistant", "tool") for e in eps)
    assert all(e.stats["completion_tokens"] > 0 for e in eps)
    assert s["usage"]["cost"] > 0
    forwarded = server.forwarded
    s2 = run_collect(cfg, show_progress=False)  # resume: nothing to do, nothing paid
    assert server.forwarded == forwarded and s2["usage"]["requests"] == 0
    assert len(read_episodes(tmp_path / "c" / "episodes" / "collect.jsonl")) == 6
    # a timeout leaves a problem incomplete; the next run finishes it, replaying cached turns
    cfg2 = cfg.model_copy(update={"limit": 4, "timeout_s": 1.0, "max_retries": 0})
    server.inject("stall", 2)
    s3 = run_collect(cfg2, show_progress=False)
    assert s3["complete_problems"] == 3 and s3["asked_problems"] == 4
    s4 = run_collect(cfg.model_copy(update={"limit": 4}), show_progress=False)
    assert s4["complete_problems"] == 4


def test_collect_budget_stops(server, tmp_path):
    from reasonlab.experiments.collect import CollectConfig, run_collect

    cfg = CollectConfig(base_url=server.base, model="smollm2", limit=3, n=1, tools=[], out=str(tmp_path / "b"),
                        price_in=1e5, budget=1.0, concurrency=1, sampling={"max_new_tokens": 8})
    s = run_collect(cfg, show_progress=False)
    assert s["stopped_by_budget"] and s["complete_problems"] < 3
