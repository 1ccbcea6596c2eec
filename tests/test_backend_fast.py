"""HFBackend fast path (static KV cache, compiled step) against the reference loop (compile=False).

One tiny model and one compiled backend per module: the compile warm-up (a few seconds for a
2-layer model with inductor's disk cache warm, ~20 s cold) is paid once.
"""

import pytest
import torch

from reasonlab.rollout.base import SamplingParams
from reasonlab.rollout.chat import encode_chat
from reasonlab.tasks import get_task


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from reasonlab.models import create_tiny

    return str(create_tiny(tmp_path_factory.mktemp("fast") / "m", layers=2, width=64, seed=0))


@pytest.fixture(scope="module")
def backends(tiny_path):
    """reference loop, static cache uncompiled, static cache compiled — each with its own fp32 model."""
    from reasonlab.rollout.hf import HFBackend

    kw = dict(dtype="fp32", device="cpu", batch_size=8)
    return {
        "ref": HFBackend(tiny_path, compile=False, **kw),
        "static": HFBackend(tiny_path, compile="auto", compile_min_tokens=10**12, **kw),
        "compiled": HFBackend(tiny_path, compile=True, **kw),
    }


def prompts_for(tok, k=6):
    task = get_task("countdown")
    out = [encode_chat(tok, task.messages(p)) for p in task.problems("test", k, seed=1)]
    if k >= 4:  # different lengths → real left padding
        out[1] = out[1][:-7]
        out[3] = out[3][5:]
    return out


def tokens(groups):
    return [[s.token_ids for s in g] for g in groups]


def run_all(backends, prompts, params):
    out = {name: be.generate(prompts, params) for name, be in backends.items()}
    assert backends["static"].stats["path"] == "static"
    assert backends["compiled"].stats["path"] == "static+compiled"
    return out


def assert_same(a, b, tol=1e-4):
    assert tokens(a) == tokens(b)
    for ga, gb in zip(a, b):
        for x, y in zip(ga, gb):
            assert x.finish_reason == y.finish_reason and x.stop_string == y.stop_string and x.text == y.text
            assert max((abs(u - v) for u, v in zip(x.logprobs, y.logprobs)), default=0.0) < tol


def test_greedy_same_tokens_as_reference(backends):
    prompts = prompts_for(backends["ref"].tokenizer)
    out = run_all(backends, prompts, SamplingParams(temperature=0, max_new_tokens=40))
    assert_same(out["ref"], out["static"])
    assert_same(out["ref"], out["compiled"])
    assert backends["compiled"].stats["compile_s"] > 0


def test_batched_equals_one_by_one_greedy(backends):
    be = backends["compiled"]
    prompts = prompts_for(be.tokenizer)
    params = SamplingParams(temperature=0, max_new_tokens=24)
    batched = be.generate(prompts, params)
    for p, b in zip(prompts, batched):
        single = be.generate([p], params)[0][0]  # a batch of one row (decoded with a finished twin)
        assert single.token_ids == b[0].token_ids
        assert max(abs(x - y) for x, y in zip(single.logprobs, b[0].logprobs)) < 1e-4


def test_seeded_sampling_n_and_top_k_top_p(backends):
    prompts = prompts_for(backends["ref"].tokenizer, 3)
    for params in (
        SamplingParams(n=3, temperature=1.0, max_new_tokens=30, seed=7),
        SamplingParams(n=2, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=30, seed=1),
    ):
        out = run_all(backends, prompts, params)
        # only live rows are sampled, so the random stream — and the samples — match the reference
        assert_same(out["ref"], out["static"])
        assert_same(out["ref"], out["compiled"])
        again = backends["compiled"].generate(prompts, params)
        assert tokens(again) == tokens(out["compiled"])
        assert all(len(g) == params.n for g in out["compiled"])
        assert len({tuple(s.token_ids) for s in out["compiled"][0]}) > 1


def test_eos_stop_and_length(backends):
    """Rows end at different steps (EOS, a stop string, the length limit): the static loop keeps
    finished rows, then compacts the batch, and must end each sample exactly like the reference."""
    ref = backends["ref"]
    prompts = prompts_for(ref.tokenizer, 6)
    free = ref.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=40, seed=3))
    texts = [s.text for g in free for s in g if len(s.text) > 12]
    stops = sorted({t[8:10] for t in texts})[:3]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=40, seed=3, stop=stops)
    out = run_all(backends, prompts, params)
    assert_same(out["ref"], out["static"])
    assert_same(out["ref"], out["compiled"])
    reasons = {s.finish_reason for g in out["compiled"] for s in g}
    assert "stop" in reasons and len(reasons) >= 2
    for g in out["compiled"]:
        for s in g:
            assert len(s.token_ids) == len(s.logprobs) <= 40
            assert s.finish_reason != "length" or len(s.token_ids) == 40
            assert s.finish_reason != "eos" or s.token_ids[-1] in ref.eos_ids
            assert s.finish_reason != "stop" or s.stop_string in s.text


def test_logprobs_match_full_forward(backends):
    be = backends["compiled"]
    prompt = prompts_for(be.tokenizer, 1)[0]
    for temp in (0.0, 0.7):
        s = be.generate([prompt], SamplingParams(temperature=temp, max_new_tokens=16, seed=3))[0][0]
        ids = torch.tensor([prompt + s.token_ids])
        with torch.no_grad():
            logits = be.model(ids).logits[0].float() / (temp or 1.0)
        logp = torch.log_softmax(logits, -1)
        ref = [logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(s.token_ids)]
        assert max(abs(a - b) for a, b in zip(ref, s.logprobs)) < 1e-3


def test_compiled_step_sees_weight_updates(backends):
    """RL updates the policy in place between rollouts: the compiled step must not freeze weights."""
    be, ref = backends["compiled"], backends["ref"]
    prompts = prompts_for(be.tokenizer, 2)
    params = SamplingParams(temperature=0, max_new_tokens=12)
    before = be.generate(prompts, params)
    saved = {k: v.clone() for k, v in be.model.state_dict().items()}
    try:
        with torch.no_grad():
            for p in be.model.parameters():
                p.mul_(1.5)
            ref.model.load_state_dict(be.model.state_dict())
        after, expect = be.generate(prompts, params), ref.generate(prompts, params)
        assert_same(expect, after)
        assert tokens(after) != tokens(before)
    finally:
        with torch.no_grad():
            be.model.load_state_dict(saved)
            ref.model.load_state_dict(saved)


def test_auto_compiles_only_past_the_budget(tiny_path):
    from reasonlab.rollout.hf import HFBackend

    be = HFBackend(tiny_path, dtype="fp32", device="cpu", compile="auto", compile_min_tokens=1000)
    prompts = prompts_for(be.tokenizer, 2)
    be.generate(prompts, SamplingParams(temperature=0, max_new_tokens=8))
    assert be.stats["path"] == "static"  # 16 tokens asked so far: not worth a compile
    be.generate(prompts, SamplingParams(n=32, temperature=0, max_new_tokens=16))
    assert be.stats["path"] == "static+compiled"


def test_unsupported_models_fall_back(tiny_path):
    from types import SimpleNamespace

    from reasonlab.rollout.hf import HFBackend
    from reasonlab.rollout.hf_static import unsupported_reason

    be = HFBackend(tiny_path, dtype="fp32", device="cpu", compile=False)
    assert be.static_reason == "compile=False"
    assert unsupported_reason(be.model) is None
    cfg = be.model.config
    fake = SimpleNamespace(config=SimpleNamespace(**{**cfg.to_dict(), "_attn_implementation": "sdpa"}),
                           _can_set_attn_implementation=lambda: True)
    fake.config.layer_types = ["sliding_attention", "full_attention"]
    assert "sliding" in unsupported_reason(fake)
    fake.config.layer_types = None
    fake.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in unsupported_reason(fake)
