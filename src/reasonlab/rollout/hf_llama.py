"""A hand-written one-token decoding step for Llama-architecture models (the organisms, SmolLM2).

For a tiny model (4 layers, width 128) a decode step of batch 32 is ~40 small tensor ops of a few
microseconds each, and the transformers forward wraps every one in module calls, kwargs
plumbing, config look-ups and attention-interface dispatch: per step ~15 ms of CPU time, of which
the arithmetic is well under 1 ms. This step runs the same math as ``LlamaForCausalLM`` over a
:class:`~reasonlab.rollout.hf_static.SlotCache` as a flat function of the weights:

- q/k/v projections in one matmul and gate/up in one matmul (weights concatenated once per
  ``generate`` call, :meth:`LlamaStep.prepare`, so the policy's in-place weight updates are seen);
- the rotary cos/sin from the model's own ``rotary_emb`` (every rope type), once per step;
- K/V written in place at the cache's write position, attention as in
  :func:`~reasonlab.rollout.hf_static.decode_attention` (grouped heads, fp32 softmax);
- RMSNorm, rotary, SiLU·mul and the residuals in the same ops and dtypes as transformers, so fp32
  greedy tokens equal ``model.generate``'s (tests/test_backend_fast.py checks it).

Interface as :class:`~reasonlab.rollout.hf_static.StaticStep`: ``step(ids, pos, mask, cache)`` →
fp32 logits [B, V]. Only exact ``LlamaForCausalLM`` models with default-shaped layers are taken
(:func:`unsupported_reason`); everything else keeps the transformers step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def unsupported_reason(model: Any) -> str | None:
    """Why :class:`LlamaStep` cannot run this model (None when it can)."""
    if type(model).__name__ != "LlamaForCausalLM":
        return f"{type(model).__name__} is not LlamaForCausalLM"
    cfg = model.config
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r}"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    if type(model.model.layers[0]).__name__ != "LlamaDecoderLayer":
        return f"decoder layer {type(model.model.layers[0]).__name__}"
    if getattr(model, "_hf_hook", None) is not None:
        return "model dispatched with accelerate hooks"
    return None


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm, op for op."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _cat_bias(*mods: Any) -> torch.Tensor | None:
    if all(m.bias is None for m in mods):
        return None
    return torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.weight.shape[0]) for m in mods])


class LlamaStep:
    """The one-token forward of a ``LlamaForCausalLM`` over a SlotCache, without module dispatch."""

    compiled = False
    compile_failed = False
    compile_s = 0.0

    def __init__(self, model: Any):
        self.model = model
        cfg = model.config
        self.H = cfg.num_attention_heads
        self.Hkv = getattr(cfg, "num_key_value_heads", None) or self.H
        self.D = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        self.eps = cfg.rms_norm_eps
        self.layers: list[tuple] = []

    @torch.no_grad()
    def prepare(self) -> None:
        """(Re)build the concatenated q/k/v and gate/up weights from the model's current weights."""
        self.layers = []
        for layer in self.model.model.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append((
                layer.input_layernorm.weight,
                torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                _cat_bias(a.q_proj, a.k_proj, a.v_proj),
                a.o_proj.weight, a.o_proj.bias, a.scaling,
                layer.post_attention_layernorm.weight,
                torch.cat([m.gate_proj.weight, m.up_proj.weight]),
                _cat_bias(m.gate_proj, m.up_proj),
                m.down_proj.weight, m.down_proj.bias,
            ))

    def __call__(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        if not self.layers:
            self.prepare()
        base = self.model.model
        H, Hkv, D, eps = self.H, self.Hkv, self.D, self.eps
        r = H // Hkv
        B = ids.shape[0]
        x = F.embedding(ids[:, 0], base.embed_tokens.weight)  # [B, hidden]
        cos, sin = base.rotary_emb(x[:, None], pos)  # [B, 1, D]
        cos, sin = cos[:, :, None], sin[:, :, None]  # broadcast over heads: [B, 1, 1, D]
        K = mask.shape[-1]
        mask = mask.reshape(B, 1, 1, K)
        blocked = ~mask
        widx = cache.write_pos
        for (ln1, wqkv, bqkv, wo, bo, scaling, ln2, wgu, bgu, wd, bd), slot in zip(self.layers, cache.layers):
            h = _rms_norm(x, ln1, eps)
            qkv = F.linear(h, wqkv, bqkv)
            q = qkv[:, : H * D].view(B, Hkv, r, D)  # heads h = g*r + j share KV head g
            k = qkv[:, H * D : (H + Hkv) * D].view(B, Hkv, 1, D)
            v = qkv[:, (H + Hkv) * D :].view(B, Hkv, 1, D)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            slot.keys.index_copy_(2, widx, k)
            slot.values.index_copy_(2, widx, v)
            keys, values = slot.keys, slot.values
            if K != keys.shape[2]:
                keys, values = keys[:, :, :K], values[:, :, :K]
            if keys.dtype == torch.float32:  # as decode_attention: fp32 tokens equal transformers'
                scores = torch.matmul(q, keys.transpose(-1, -2)) * scaling  # [B, Hkv, r, K]
                probs = scores.masked_fill(blocked, float("-inf")).softmax(dim=-1)
                o = torch.matmul(probs, values).reshape(B, H * D)
            else:  # bf16/fp16: SDPA's fused kernel reads the cache once (2.5x faster at organism size)
                o = F.scaled_dot_product_attention(q.reshape(B, H, 1, D), keys, values, attn_mask=mask,
                                                   scale=scaling, enable_gqa=r > 1).reshape(B, H * D)
            x = x + F.linear(o, wo, bo)
            h = _rms_norm(x, ln2, eps)
            g, u = F.linear(h, wgu, bgu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(g) * u, wd, bd)
        x = _rms_norm(x, base.norm.weight, eps)
        cache.write_pos += 1
        return F.linear(x, self.model.lm_head.weight, self.model.lm_head.bias).float()
