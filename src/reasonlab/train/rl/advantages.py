"""Advantage estimators. Each is one short function with its equation.

Shapes: a batch of B sequences padded to T tokens; ``mask[b, t] = 1`` where token t was produced by
the policy (Episode mask), 0 for prompt, tool output and padding. Outcome rewards are scalars per
sequence; token-level rewards (e.g. a KL penalty folded into the reward) are [B, T].
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (Shao et al. 2024), one advantage per sequence, groups of ``group_size`` consecutive rows:

        A_i = (r_i − mean(r_group)) / (std(r_group) + ε)        (scale=True, GRPO)
        A_i =  r_i − mean(r_group)                              (scale=False, Dr. GRPO, Liu et al. 2025)

    ``std`` is the population standard deviation (unbiased=False);
    a group whose rewards are all equal gets advantage 0.
    """
    r = rewards.view(-1, group_size).float()
    centered = r - r.mean(dim=1, keepdim=True)
    if scale:
        centered = centered / (r.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centered.reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): leave-one-out baseline within each group of k samples:

        A_i = r_i − (1/(k−1)) Σ_{j≠i} r_j  =  k/(k−1) · (r_i − mean(r))
    """
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    r = rewards.view(-1, group_size).float()
    baseline = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
    return (r - baseline).reshape(-1)


def gae(
    token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016) over the policy's tokens.

        δ_t = r_t + γ V(s_{t+1}) − V(s_t),      A_t = Σ_l (γλ)^l δ_{t+l},      R_t = A_t + V(s_t)

    Only positions with ``mask = 1`` are steps of the MDP: tool-output tokens between two policy
    tokens are part of the environment's transition, so the recursion skips them (t+1 means the
    next *policy* token). The value after the last policy token is 0 (the episode ends).
    Returns (advantages, returns), both [B, T] and zero where mask is 0.
    """
    B, T = mask.shape
    adv = torch.zeros(B, T, dtype=torch.float32, device=values.device)
    m = mask.float()
    next_value = torch.zeros(B, device=values.device)
    next_adv = torch.zeros(B, device=values.device)
    for t in range(T - 1, -1, -1):
        mt = m[:, t]
        delta = token_rewards[:, t].float() + gamma * next_value - values[:, t].float()
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * mt
        # where this token is not a policy step, carry the next step's quantities through unchanged
        next_value = torch.where(mt > 0, values[:, t].float(), next_value)
        next_adv = torch.where(mt > 0, a, next_adv)
    returns = (adv + values.float()) * m
    return adv, returns


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put each sequence's scalar reward on its last policy token ([B] → [B, T])."""
    T = mask.shape[1]
    idx = torch.arange(T, device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, idx, torch.full_like(idx, -1)).max(dim=1).values
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    has = last >= 0
    out[has.nonzero(as_tuple=True)[0], last[has]] = rewards[has].float()
    return out


def kl_reward_penalty(kl_tok: torch.Tensor, mask: torch.Tensor, coef: float, norm: str = "sum") -> torch.Tensor:
    """The in-reward KL charge per token ([B, T]), to subtract from the token rewards.

    ``sum``: coef·KL_t on every policy token, so a response pays coef·Σ_t KL_t in all — a tax that grows
    with its length at equal per-token divergence (PPO/InstructGPT and verl's ``use_kl_in_reward``).
    ``mean``: coef·KL_t / n_tokens, so a response pays coef × its mean per-token KL whatever its length."""
    pen = coef * kl_tok.float() * mask.float()
    if norm == "mean":
        pen = pen / mask.float().sum(1, keepdim=True).clamp(min=1)
    elif norm != "sum":
        raise ValueError(f"kl_reward_norm must be 'sum' or 'mean', got {norm!r}")
    return pen


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` over the masked positions (used on PPO advantages)."""
    m = mask.float()
    n = m.sum().clamp(min=1)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / n
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m
