"""The RL memory estimator against sizes computed by hand, and the check that runs before RL starts."""

import pytest

from reasonlab.train.memory import GiB, ModelShape, advice, check_rl_memory, estimate_rl_memory


def test_parameter_count_matches_transformers():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for tie, kv in ((False, 2), (True, 4)):
        config = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=kv, vocab_size=300, tie_word_embeddings=tie)
        with torch.device("meta"):
            n = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
        shape = ModelShape.from_config(config)
        assert shape.params == n
        assert (shape.layers, shape.hidden, shape.kv_dim, shape.vocab) == (3, 64, kv * 16, 300)


# Qwen2.5-3B's shape (hidden 2048, 36 layers, 2 KV heads of 128, vocab 151 936, tied): 3.086e9 params
QWEN3B = ModelShape(params=3_085_938_688, layers=36, hidden=2048, kv_dim=256, vocab=151_936)


def test_ppo_3b_by_hand():
    """The gpu preset's PPO on one 80 GiB GPU: bf16, micro-batch 8 x 1536 tokens, KL, critic, vLLM 0.4."""
    e = estimate_rl_memory(QWEN3B, algorithm="ppo", critic="model", kl_coef=0.001, dtype="bf16",
                           micro_batch_size=8, seq_len=1536, backend="vllm", gpu_memory_utilization=0.4,
                           device_bytes=80 * GiB)
    P = 3_085_938_688
    assert e.parts["policy weights"] == P * 4 == 12_343_754_752
    assert e.parts["policy gradients"] == 12_343_754_752
    assert e.parts["policy AdamW states"] == 24_687_509_504
    # 36 layers x 12 288 tokens x 2048 x 34 x 2 bytes, + 12 288 tokens x 151 936 x 4 bytes x 2
    assert e.parts["policy activations"] == 61_605_937_152 + 14_935_916_544
    assert e.parts["reference weights"] == P * 2
    assert e.parts["critic weights+grads+AdamW"] == P * 16
    assert e.parts["critic activations"] == 61_605_937_152
    assert e.parts["vLLM share (weights + KV)"] == 32 * GiB
    assert not e.fits  # ≈ 258 GiB: the preset as written cannot run on one GPU
    kw = dict(algorithm="ppo", critic="model", kl_coef=0.001, dtype="bf16", micro_batch_size=8, seq_len=1536,
              backend="vllm", gpu_memory_utilization=0.4, device_bytes=80 * GiB)
    tip = advice(e, QWEN3B, **kw)
    assert "needs ≈ 258.4 GiB" in tip and "has 80.0 GiB" in tip and "FSDP over" in tip
    sharded = estimate_rl_memory(QWEN3B, **{**kw, "shards": 8, "micro_batch_size": 1})
    assert sharded.parts["policy AdamW states"] == 24_687_509_504 / 8


def test_tiny_grpo_on_cpu_by_hand():
    """The cpu preset's organism: 2 layers, width 64, GRPO, fp32, hf generation of 64 x 1024 tokens."""
    tiny = ModelShape(params=100_000, layers=2, hidden=64, kv_dim=64, vocab=512)
    e = estimate_rl_memory(tiny, algorithm="grpo", dtype="fp32", micro_batch_size=8, seq_len=1024, gen_batch=64,
                           backend="hf", device_bytes=8 * GiB)
    assert e.parts == {"policy weights": 400_000, "policy gradients": 400_000, "policy AdamW states": 800_000,
                       "policy activations": 2 * 8192 * 64 * 34 * 4 + 8192 * 512 * 8,  # 142 606 336 + 33 554 432
                       "KV cache (generation)": 2 * 2 * 64 * 4 * 64 * 1024}  # 67 108 864
    assert e.total == 400_000 * 4 + 142_606_336 + 33_554_432 + 67_108_864 and e.fits
    lora = estimate_rl_memory(tiny, lora_params=1_000, device_bytes=8 * GiB)
    assert lora.parts["policy AdamW states"] == 8_000 and lora.parts["policy weights"] == 400_000


def test_rl_run_refuses_a_preset_that_cannot_fit(tmp_path):
    from transformers import Qwen2Config

    from reasonlab.config import load_config
    from reasonlab.train.rl.config import RLConfig

    qwen = Qwen2Config(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151_936, tie_word_embeddings=True)
    cfg = RLConfig(model="x", algorithm="ppo", dtype="bf16", loss={"kl_coef": 0.001},
                   rollout={"max_new_tokens": 1024, "batch_size": 1024})
    with pytest.raises(MemoryError, match="will not fit") as err:
        check_rl_memory(cfg, qwen, "cpu")  # this machine's RAM
    assert "policy AdamW states" in str(err.value) and "Would fit" in str(err.value)
    small = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=512)
    assert check_rl_memory(cfg, small, "cpu").fits
