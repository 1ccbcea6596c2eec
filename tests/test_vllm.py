"""vLLM backend: checked on a CUDA machine with vllm installed; skipped cleanly elsewhere."""

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("vllm")

from reasonlab.rollout.base import SamplingParams  # noqa: E402
from reasonlab.rollout.chat import encode_chat  # noqa: E402
from reasonlab.tasks import get_task  # noqa: E402


@pytest.mark.gpu
def test_vllm_matches_hf_greedy_and_syncs_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    from reasonlab.models import import_smollm2
    from reasonlab.rollout.hf import HFBackend
    from reasonlab.rollout.vllm_backend import VLLMBackend

    path = str(import_smollm2(tmp_path / "smol"))
    task = get_task("countdown")
    vb = VLLMBackend(path, dtype="fp32", gpu_memory_utilization=0.3)
    hb = HFBackend(path, dtype="fp32", device="cuda")
    prompts = [encode_chat(vb.tokenizer, task.messages(p)) for p in task.problems("test", 4)]
    params = SamplingParams(temperature=0, max_new_tokens=24)
    v = vb.generate(prompts, params)
    h = hb.generate(prompts, params)
    agree = sum(a[0].token_ids[:8] == b[0].token_ids[:8] for a, b in zip(v, h))
    assert agree >= 3
    s = vb.generate(prompts[:1], SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=1))[0]
    assert len(s) == 3 and all(len(x.logprobs) == len(x.token_ids) for x in s)
    # weight sync: zeroing the weights changes the output
    model = AutoModelForCausalLM.from_pretrained(path).cuda()
    for p_ in model.parameters():
        p_.data.mul_(0.0)
    vb.sync_weights(model)
    after = vb.generate(prompts[:1], params)[0][0]
    assert after.token_ids != v[0][0].token_ids
