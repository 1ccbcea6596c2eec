"""Policy, value, KL and entropy terms. Shapes [B, T]; ``mask`` = Episode mask (1 = policy token).

Tokens with mask 0 (prompt, tool output, padding) are multiplied out of every term, so they receive
exactly zero gradient.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, norm_tokens: int | None = None) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar.

    - ``token``: mean over every policy token of the batch (DAPO; long answers weigh more);
    - ``sequence``: mean over sequences of each sequence's token mean (original GRPO);
    - ``sum_norm``: sum over tokens / a constant (Dr. GRPO; ``norm_tokens`` = max generation length).
    """
    m = mask.to(per_token.dtype)
    if mode == "token":
        return (per_token * m).sum() / m.sum().clamp(min=1)
    if mode == "sequence":
        return masked_mean(per_token, m, dim=1).mean()
    if mode == "sum_norm":
        return (per_token * m).sum() / (per_token.shape[0] * (norm_tokens or per_token.shape[1]))
    raise ValueError(f"unknown loss aggregation {mode!r}; allowed: token, sequence, sum_norm")


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token",
    norm_tokens: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """PPO clipped surrogate (Schulman et al. 2017), asymmetric clip allowed (DAPO's clip-higher):

        ρ_t = exp(log π(a_t) − log π_old(a_t))
        L = − E_t[ min(ρ_t A_t, clip(ρ_t, 1 − ε_low, 1 + ε_high) A_t) ]

    ``advantages`` is [B, T] (PPO) or [B] (GRPO/RLOO: broadcast to every token of the sequence).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logp)
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    loss = aggregate(per_token, mask, agg, norm_tokens)
    with torch.no_grad():
        m = mask.bool()
        stats = {
            "clip_frac": ((unclipped != clipped) & m).float().sum().item() / max(m.sum().item(), 1),
            "ratio_mean": masked_mean(ratio, mask).item(),
            "approx_kl_old": masked_mean(0.5 * (logp - old_logp) ** 2, mask).item(),
        }
    return loss, stats


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples of π (Schulman 2020, "Approximating KL"):

        k1 = log π − log π_ref                       (unbiased, high variance, can be negative)
        k3 = exp(log π_ref − log π) − (log π_ref − log π) − 1     (unbiased, ≥ 0, low variance)
    """
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"unknown KL estimator {kind!r}; allowed: k1, k3")


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float | None = 0.2
) -> torch.Tensor:
    """Clipped value loss of PPO:  ½ · max((V − R)², (clip(V, V_old ± ε) − R)²), masked mean."""
    err = (values - returns) ** 2
    if clip is not None:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        err = torch.maximum(err, (v_clip - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy H = −Σ p log p of the categorical given by ``logits`` [..., V]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(tokens[t] | tokens[<t]) aligned with ``tokens`` ([B, T]); position 0 gets 0.

    ``logits[:, t]`` predicts ``tokens[:, t + 1]``.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, tokens[:, 1:, None])[..., 0]
    return torch.cat([torch.zeros_like(picked[:, :1]), picked], dim=1)
