"""LoRA in each trainer (RL, SFT, DPO/KTO): only adapter weights change, the adapters do change, the
reference is the base model (adapters off), saved models load; bad settings fail naming the field."""

import pytest
import torch

pytest.importorskip("peft")

from reasonlab.episode import append_jsonl  # noqa: E402
from reasonlab.train.lora import LoRASettings, adapter_param_count, is_adapter_param  # noqa: E402

LORA = {"r": 4, "alpha": 8, "target_modules": "all-linear"}


def split(named):
    """(base, adapter) parameters as detached copies, by name."""
    base, ada = {}, {}
    for n, p in named:
        (ada if is_adapter_param(n) else base)[n] = p.detach().clone()
    return base, ada


def assert_only_adapters_moved(before, after):
    (b0, a0), (b1, a1) = before, after
    assert a0 and b0.keys() == b1.keys() and a0.keys() == a1.keys()
    for n in b0:
        assert torch.equal(b0[n], b1[n]), f"base weight {n} changed"
    moved = [n for n in a0 if not torch.equal(a0[n], a1[n])]
    # B starts at 0, so A's gradient is 0 on the first step: B moves first
    assert any("lora_B" in n for n in moved), moved


def test_settings_and_adapter_count(tiny_model):
    from transformers import AutoConfig, AutoModelForCausalLM

    from reasonlab.train.lora import wrap

    with pytest.raises(ValueError, match="target_modules"):
        LoRASettings(target_modules=[])
    with pytest.raises(ValueError, match="r"):
        LoRASettings(r=0)
    s = LoRASettings(r=4, target_modules=["q_proj", "v_proj"])
    model = wrap(AutoModelForCausalLM.from_pretrained(tiny_model), s)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trained == adapter_param_count(AutoConfig.from_pretrained(tiny_model), s) > 0
    with pytest.raises(ValueError, match=r"lora.target_modules \['qkv'\] matches no linear layer.*q_proj"):
        wrap(AutoModelForCausalLM.from_pretrained(tiny_model), LoRASettings(target_modules=["qkv"]))


def test_rl_lora_trains_only_adapters_and_the_reference_is_the_base(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from reasonlab.train.memory import check_rl_memory
    from reasonlab.train.rl.config import RLConfig
    from reasonlab.train.rl.engine import RLTrainer, collate

    cfg = RLConfig(model=tiny_model, task="countdown", steps=1, train_pool=16, tensorboard=False, out=str(tmp_path / "rl"),
                   algorithm="grpo", lora=LORA, loss={"kl_coef": 0.1},
                   rollout={"prompts_per_step": 2, "n": 4, "max_new_tokens": 8}, optim={"lr": 5e-2})
    tr = RLTrainer(cfg)
    assert tr.ref is None and tr.ref_is_base  # no second copy
    before = split(tr.lora_model.named_parameters())
    eps = tr.rollout(0)
    eps[0].reward, eps[1].reward = 1.0, 0.0  # a group with distinct rewards: a nonzero advantage
    row = tr.update(eps)
    assert "kl" in row
    assert_only_adapters_moved(before, split(tr.lora_model.named_parameters()))
    # the reference log-probs are the untouched start model's
    b = collate(eps, tr.pad_id)
    idx = torch.arange(len(eps))
    start = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        ref = tr.ref_logp(b, idx)
        want = tr.forward_logp(start, b, idx)[1]
        now = tr.forward_logp(tr.policy, b, idx)[1]
    assert torch.allclose(ref, want, atol=1e-6) and not torch.allclose(now, want, atol=1e-4)
    # the checkpoint: merged model (loads as a plain HF model and gives the trained log-probs) + adapters
    ckpt = tr.save()
    assert (ckpt / "adapter" / "adapter_model.safetensors").exists() and not (ckpt / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(tr.forward_logp(merged, b, idx)[1], now, atol=1e-5)
    fresh = RLTrainer(cfg)
    fresh.load(ckpt)
    for (n, p), (_, q) in zip(fresh.lora_model.named_parameters(), tr.lora_model.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    # the memory estimate counts the adapters and no reference copy
    from transformers import AutoConfig

    e = check_rl_memory(cfg, AutoConfig.from_pretrained(tiny_model), "cpu")
    n_lora = sum(p.numel() for p in tr.lora_model.parameters() if p.requires_grad)
    assert e.parts["policy AdamW states"] == n_lora * 8 and "reference weights" not in e.parts


def test_rl_lora_refused_with_vllm_and_fsdp(tiny_model):
    from pydantic import ValidationError

    from reasonlab.train.rl.config import RLConfig

    with pytest.raises(ValidationError, match="lora: is not supported with rollout.backend: vllm"):
        RLConfig(model=tiny_model, lora=LORA, rollout={"backend": "vllm"})
    with pytest.raises(ValidationError, match="lora: and sharding: fsdp"):
        RLConfig(model=tiny_model, lora=LORA, sharding="fsdp")
    with pytest.raises(ValidationError, match="lora.r"):
        RLConfig.model_validate({"model": tiny_model, "lora": {"r": 0}})


def test_sft_lora_trains_only_adapters(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from reasonlab.train.sft import SFTSettings, build_sft_trainer, save_final
    from test_sft import trace_episodes

    data = tmp_path / "traces.jsonl"
    append_jsonl(data, trace_episodes(8))
    cfg = SFTSettings(model=tiny_model, data=[str(data)], out=str(tmp_path / "sft"), max_steps=3, lr=1e-2,
                      batch_size=4, logging_steps=1, max_length=128, lora=LORA)
    trainer, tok, _ = build_sft_trainer(cfg, show_progress=False)
    before = split(trainer.model.named_parameters())
    trainer.train()
    assert_only_adapters_moved(before, split(trainer.model.named_parameters()))
    save_final(trainer, tok, tmp_path / "final", lora=True)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "final")  # a plain HF folder
    assert (tmp_path / "final" / "adapter" / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_lora_trains_only_adapters_against_the_base(method, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from reasonlab.train.preference import PreferenceSettings, build_preference_trainer
    from test_preference import scored_episodes

    data = tmp_path / "episodes.jsonl"
    append_jsonl(data, scored_episodes())
    cfg = PreferenceSettings(model=tiny_model, data=[str(data)], out=str(tmp_path / "run"), method=method,
                             alpha=0.05, beta=0.1, lr=1e-2, max_steps=2, batch_size=3 if method == "kto" else 2,
                             logging_steps=1, max_length=256, lora=LORA)
    trainer, _, _ = build_preference_trainer(cfg, show_progress=False)
    assert trainer.ref_model is None  # the reference is the policy with adapters off, not a copy
    before = split(trainer.model.named_parameters())
    trainer.train()
    assert_only_adapters_moved(before, split(trainer.model.named_parameters()))
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad(), trainer.model.disable_adapter():
        off = trainer.model(input_ids=ids).logits
    with torch.no_grad():
        on = trainer.model(input_ids=ids).logits
        want = base(input_ids=ids).logits
    assert torch.allclose(off, want, atol=1e-6) and not torch.allclose(on, want, atol=1e-5)
