"""Will an RL run fit? A memory estimate checked before the run starts.

Per GPU (or on the CPU), for a decoder-only transformer with P parameters, L layers, hidden size H,
key/value width H_kv = kv_heads · head_dim, and the run's batch:

    weights      P · b_w                       b_w = 4 (fp32 master weights; bf16 autocast keeps them)
    gradients    P · 4                         trained models only (policy, critic)
    optimizer    P · 8                         AdamW: two fp32 moments
    activations  L · T_mb · H · 34 · b_a / c   T_mb tokens per micro-batch, b_a = 2 in bf16 (4 fp32);
                                               c = 1, or ≈ √L with gradient checkpointing (not used)
    logits       T_mb · V · 4 · 2              fp32 logits and their gradient over the policy tokens
    KV cache     2 · L · H_kv · b_a · T_gen    T_gen = sequences decoded together × their length (hf);
                 vLLM instead reserves gpu_memory_utilization × the device's memory

The 34·H per token per layer is Korthikanti et al. (2022)'s count for a transformer layer without
recomputation (attention scores excluded: SDPA does not keep them). Models: the policy; a reference
model (weights only) when the KL coefficient is > 0; a critic (a full model with its own optimizer)
for PPO with ``critic: model``. FSDP/ZeRO-3 over N devices divides weights, gradients and optimizer by
N (reasonlab's engine with ``sharding: fsdp``, or verl's FSDP workers with ``--engine verl``); the
engine's hf sampler then keeps one whole copy per process. LoRA (``lora:``, P_a adapter parameters,
:func:`reasonlab.train.lora.adapter_param_count`) trains only adapters: gradients and optimizer shrink
to P_a, the adapters add P_a · 4 bytes, and the reference is the policy with adapters off (no copy);
the critic model gets its own adapters.

This is an estimate, typically within ~20 % of the peak; it exists so that a run that cannot fit
fails in a second with advice instead of after an hour with an out-of-memory error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GiB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    kv_dim: int  # kv_heads * head_dim
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> "ModelShape":
        """From a transformers config (Llama/Qwen/Mistral style), counting parameters from the shape."""
        h, L, v = config.hidden_size, config.num_hidden_layers, config.vocab_size
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or h // heads
        kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
        inter = config.intermediate_size
        attn = h * heads * head_dim + 2 * h * kv + heads * head_dim * h
        per_layer = attn + 3 * h * inter + 2 * h
        emb = v * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
        return cls(params=L * per_layer + emb + h, layers=L, hidden=h, kv_dim=kv, vocab=v)


@dataclass
class MemoryEstimate:
    parts: dict[str, float] = field(default_factory=dict)  # name → bytes
    available: float | None = None
    device: str = "cpu"

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= 0.9 * self.available

    def table(self) -> str:
        rows = [f"  {k:28s} {v / GiB:8.2f} GiB" for k, v in self.parts.items()]
        rows.append(f"  {'total':28s} {self.total / GiB:8.2f} GiB")
        if self.available is not None:
            rows.append(f"  {'available (' + self.device + ')':28s} {self.available / GiB:8.2f} GiB")
        return "\n".join(rows)


def estimate_rl_memory(
    shape: ModelShape,
    *,
    algorithm: str = "grpo",
    critic: str = "model",
    kl_coef: float = 0.0,
    dtype: str = "fp32",
    micro_batch_size: int = 8,
    seq_len: int = 1024,
    gen_batch: int = 64,
    backend: str = "hf",
    gpu_memory_utilization: float = 0.4,
    device_bytes: float | None = None,
    shards: int = 1,
    lora_params: int | None = None,
    full_sampler: bool = False,
) -> MemoryEstimate:
    """The estimate of the module docstring, in bytes, per device."""
    act_b = 2 if dtype == "bf16" else 4
    trained = lora_params if lora_params is not None else shape.params
    per_model = {"weights": shape.params * 4 / shards, "grads": trained * 4 / shards,
                 "optimizer": trained * 8 / shards}
    tokens = micro_batch_size * seq_len
    act = shape.layers * tokens * shape.hidden * 34 * act_b + tokens * shape.vocab * 4 * 2
    e = MemoryEstimate()
    e.parts["policy weights"] = per_model["weights"]
    e.parts["policy gradients"] = per_model["grads"]
    e.parts["policy AdamW states"] = per_model["optimizer"]
    e.parts["policy activations"] = act
    if lora_params is not None:
        e.parts["policy LoRA adapters"] = lora_params * 4 / shards
    if kl_coef > 0 and lora_params is None:  # under LoRA the reference is the policy with adapters off
        e.parts["reference weights"] = shape.params * (2 if dtype == "bf16" else 4) / shards
    if algorithm == "ppo" and critic == "model":
        e.parts["critic weights+grads+AdamW"] = (shape.params * 16 if lora_params is None
                                                 else shape.params * 4 + lora_params * 16) / shards
        e.parts["critic activations"] = shape.layers * tokens * shape.hidden * 34 * act_b
    if backend == "vllm":
        if device_bytes is not None:
            e.parts["vLLM share (weights + KV)"] = gpu_memory_utilization * device_bytes
    else:
        e.parts["KV cache (generation)"] = 2 * shape.layers * shape.kv_dim * act_b * gen_batch * seq_len
        if full_sampler:  # FSDP: the hf sampler is a whole (unsharded) copy
            e.parts["sampler copy (whole model)"] = shape.params * (2 if dtype == "bf16" else 4)
        elif dtype == "bf16":
            e.parts["bf16 sampler copy"] = shape.params * 2
    e.available = device_bytes
    return e


def device_memory(device: str) -> tuple[str, float | None]:
    """(name, bytes) of the device a run will use: the GPU's memory, or the machine's RAM."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        return torch.cuda.get_device_name(idx), float(torch.cuda.get_device_properties(idx).total_memory)
    try:
        import os

        return "cpu", float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return "cpu", None


def advice(e: MemoryEstimate, shape: ModelShape, **kw: Any) -> str:
    """What would fit: the first of LoRA, FSDP over more devices, smaller micro-batches, that does."""
    if e.fits:
        return "fits"
    tips = []
    lora = {"lora_params": max(1, shape.params // 200)}
    trials = [("micro_batch_size=1", {"micro_batch_size": 1}), ("LoRA (rank ~16)", lora),
              ("micro_batch_size=1 + LoRA", {"micro_batch_size": 1, **lora})]
    trials += [(f"micro_batch_size=1 + FSDP over {n} GPUs (sharding: fsdp, or --engine verl)", {"micro_batch_size": 1, "shards": n}) for n in (2, 4, 8)]
    trials += [(f"micro_batch_size=1 + LoRA + FSDP over {n} GPUs (--engine verl)", {"micro_batch_size": 1, "shards": n, **lora})
               for n in (2, 4, 8)]
    for name, change in trials:
        trial = estimate_rl_memory(shape, **{**kw, **change})
        if trial.fits:
            tips.append(f"{name} (≈ {trial.total / GiB:.1f} GiB)")
    tip = "; or ".join(tips[:3]) if tips else "a smaller model, or verl across several nodes (--engine verl)"
    return f"needs ≈ {e.total / GiB:.1f} GiB but {e.device} has {e.available / GiB:.1f} GiB. Would fit: {tip}"


def check_rl_memory(cfg: Any, model_config: Any, device: str, world: int = 1) -> MemoryEstimate:
    """Estimate for an RLConfig (its ``lora`` and ``sharding`` over ``world`` processes) and a transformers
    config; raises MemoryError with advice if it cannot fit."""
    shape = ModelShape.from_config(model_config)
    name, avail = device_memory(device)
    r = cfg.rollout
    seq = r.max_new_tokens + 512 if not r.tools else r.agent.max_total_tokens + 512
    lora = getattr(cfg, "lora", None)
    if lora is not None:
        from reasonlab.train.lora import adapter_param_count

        lora_params = adapter_param_count(model_config, lora)
    else:
        lora_params = None
    shards = world if getattr(cfg, "sharding", "none") == "fsdp" and world > 1 else 1
    from reasonlab.rollout.hf import train_dtype

    kw = dict(algorithm=cfg.algorithm, critic=cfg.critic, kl_coef=cfg.loss.kl_coef, dtype=train_dtype(cfg.dtype),
              micro_batch_size=cfg.optim.micro_batch_size, seq_len=seq, gen_batch=r.batch_size,
              backend=r.backend, gpu_memory_utilization=r.gpu_memory_utilization, device_bytes=avail,
              lora_params=lora_params, shards=shards, full_sampler=shards > 1)
    e = estimate_rl_memory(shape, **kw)
    e.device = name
    if not e.fits:
        raise MemoryError("this RL run will not fit in memory:\n" + e.table() + "\n" + advice(e, shape, **kw))
    return e
