"""HFBackend on organism-shaped models (4 layers, width 128, 4 heads — what the CPU RL presets
sample from): greedy tokens equal ``model.generate``'s, and sampling ends samples by the rules.

The static path runs the hand-written Llama step (:mod:`reasonlab.rollout.hf_llama`) here; the
transformers step (``llama_step=False``) and the reference loop are checked alongside.
"""

import pytest
import torch

from reasonlab.rollout.base import SamplingParams
from reasonlab.rollout.chat import encode_chat
from reasonlab.tasks import get_task


@pytest.fixture(scope="module", params=[None, 2], ids=["mha", "gqa"])
def organism(request, tmp_path_factory):
    from reasonlab.models import create_tiny

    return str(create_tiny(tmp_path_factory.mktemp("org") / "m", layers=4, width=128, heads=4,
                           kv_heads=request.param, vocab_size=1024, seed=0))


def backends(path, dtype):
    from reasonlab.models import load_model
    from reasonlab.rollout.hf import HFBackend

    model, tok = load_model(path, dtype=dtype, device="cpu")
    kw = dict(device="cpu", batch_size=16)
    return {
        "ref": HFBackend(model, tok, compile=False, **kw),
        "llama": HFBackend(model, tok, compile="static", **kw),
        "static_hf": HFBackend(model, tok, compile="static", llama_step=False, **kw),
    }


def prompts_for(tok, k):
    task = get_task("countdown")
    out = [encode_chat(tok, task.messages(p)) for p in task.problems("test", k, seed=2)]
    out[1] = out[1][:-5]  # different lengths: real left padding
    return out


@torch.inference_mode()
def hf_greedy(be, prompts, n):
    tok, model = be.tokenizer, be.model
    L = max(map(len, prompts))
    ids = torch.tensor([[be.pad_id] * (L - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=n,
                         pad_token_id=be.pad_id, eos_token_id=sorted(be.eos_ids))
    return out[:, L:].tolist()


def test_greedy_equals_hf_generate_fp32(organism):
    bes = backends(organism, "fp32")
    prompts = prompts_for(bes["ref"].tokenizer, 6)
    N = 48
    want = hf_greedy(bes["ref"], prompts, N)
    for name, be in bes.items():
        got = be.generate(prompts, SamplingParams(temperature=0, max_new_tokens=N))
        assert be.stats["path"] == ("eager" if name == "ref" else "static")
        for w, (s,) in zip(want, got):
            assert s.token_ids == w[: len(s.token_ids)], name
            assert s.finish_reason == "eos" or len(s.token_ids) == N
    from reasonlab.rollout.hf_llama import LlamaStep

    assert isinstance(bes["llama"]._step, LlamaStep)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_sampling_respects_stop_strings_and_max_tokens(organism, dtype):
    bes = backends(organism, dtype)
    be = bes["llama"]
    prompts = prompts_for(be.tokenizer, 4)
    free = be.generate(prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=32, seed=5))
    texts = [s.text for g in free for s in g if len(s.text) > 10]
    stops = sorted({t[6:8] for t in texts})[:3]
    params = SamplingParams(n=4, temperature=1.0, top_p=0.95, max_new_tokens=32, seed=5, stop=stops)
    out = be.generate(prompts, params)
    reasons = {s.finish_reason for g in out for s in g}
    assert "stop" in reasons
    for g in out:
        assert len(g) == 4
        for s in g:
            assert len(s.token_ids) == len(s.logprobs) <= 32
            assert s.finish_reason != "length" or len(s.token_ids) == 32
            assert s.finish_reason != "eos" or s.token_ids[-1] in be.eos_ids
            if s.finish_reason == "stop":  # ended at the first token that completed a stop string
                assert s.stop_string in s.text
                before = be.tokenizer.decode(s.token_ids[:-1], skip_special_tokens=False)
                assert not any(x in before for x in stops)
            else:
                assert not any(x in s.text for x in stops)
    assert be.generate(prompts, params)[0][0].token_ids == out[0][0].token_ids  # seeded
    if dtype == "fp32":  # the hand-written step samples exactly what the reference loop samples
        ref = bes["ref"].generate(prompts, params)
        assert [[s.token_ids for s in g] for g in ref] == [[s.token_ids for s in g] for g in out]


def test_draw_matches_the_distribution():
    from reasonlab.rollout.hf import draw

    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, generator=g) * 2, -1)
    p[3] = p[49] = 0  # never drawn
    N = 100_000
    toks = draw(p.expand(N, -1).contiguous(), g)
    freq = torch.bincount(toks, minlength=50).double() / N
    q = p.double() / p.double().sum()
    assert freq[3] == 0 and freq[49] == 0
    chi2 = ((freq - q) ** 2 / q.clamp(min=1e-12) * N)[q > 0].sum().item()
    assert chi2 < 100  # 47 degrees of freedom: P(chi2 > 100) ~ 1e-5
