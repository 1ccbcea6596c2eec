"""Advantage estimators and losses against hand-computed values; masked tokens get zero gradient."""

import math

import pytest
import torch

from reasonlab.train.rl.advantages import (gae, group_advantages, kl_reward_penalty, outcome_token_rewards,
                                           rloo_advantages)
from reasonlab.train.rl.losses import aggregate, clipped_policy_loss, kl_penalty, token_logprobs, value_loss


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    a = group_advantages(r, 4)
    # group 1: mean 0.5, population std 0.5 → ±1
    assert torch.allclose(a[:4], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)
    assert torch.all(a[4:] == 0)  # equal rewards → no signal
    dr = group_advantages(r, 4, scale=False)
    assert torch.allclose(dr[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_rloo_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    a = rloo_advantages(r, 4)
    # A_0 = 1 - mean(0,0,0) = 1 ; A_1 = 0 - mean(1,0,0) = -1/3
    assert torch.allclose(a, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    assert torch.allclose(a, 4 / 3 * (r - r.mean()))
    with pytest.raises(ValueError):
        rloo_advantages(r, 1)


def test_in_reward_kl_sum_taxes_length_and_mean_does_not():
    # two responses with the same per-token KL 0.2: 2 policy tokens (after a prompt token) and 6
    mask = torch.tensor([[0, 1, 1, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1]])
    kl = torch.full(mask.shape, 0.2) * mask
    total = kl_reward_penalty(kl, mask, 0.05, "sum").sum(1)
    assert torch.allclose(total, torch.tensor([0.05 * 0.4, 0.05 * 1.2]))  # grows with length
    pen = kl_reward_penalty(kl, mask, 0.05, "mean")
    assert torch.allclose(pen.sum(1), torch.tensor([0.05 * 0.2, 0.05 * 0.2]))  # β × mean KL for both
    assert torch.all(pen[mask == 0] == 0)
    with pytest.raises(ValueError, match="kl_reward_norm"):
        kl_reward_penalty(kl, mask, 0.05, "max")


def test_gae_by_hand_with_tool_tokens_skipped():
    # tokens: [prompt, a1, tool, a2, a3]; reward 1 on a3; values per position
    mask = torch.tensor([[0, 1, 0, 1, 1]])
    values = torch.tensor([[9.0, 0.5, 9.0, 0.6, 0.8]])
    rewards = outcome_token_rewards(torch.tensor([1.0]), mask)
    assert rewards.tolist() == [[0, 0, 0, 0, 1.0]]
    g, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, gamma=g, lam=lam)
    d3 = 1.0 + 0 - 0.8
    d2 = 0 + g * 0.8 - 0.6
    d1 = 0 + g * 0.6 - 0.5  # the tool token (value 9) is skipped
    a3, a2 = d3, d2 + g * lam * d3
    a1 = d1 + g * lam * a2
    assert torch.allclose(adv, torch.tensor([[0, a1, 0, a2, a3]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0, a1 + 0.5, 0, a2 + 0.6, a3 + 0.8]]), atol=1e-6)


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    mask = torch.tensor([[1, 1, 1, 0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 0.0]])
    adv, _ = gae(outcome_token_rewards(torch.tensor([2.0]), mask), values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv[0, :3], 2.0 - values[0, :3])


def test_clipped_loss_values_and_asymmetric_clip():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    old = torch.zeros(1, 3)
    mask = torch.ones(1, 3)
    loss, st = clipped_policy_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.2)
    # A>0: min(ρA, clip(ρ)A) = [1.2, 0.5, 1.0]
    assert loss.item() == pytest.approx(-(1.2 + 0.5 + 1.0) / 3)
    assert st["clip_frac"] == pytest.approx(2 / 3)  # ratios 1.5 and 0.5 lie outside [0.8, 1.2]
    loss, _ = clipped_policy_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-(1.28 + 0.5 + 1.0) / 3)
    loss, _ = clipped_policy_loss(logp, old, torch.tensor([-1.0]), mask)
    # A<0: min(-ρ, -clip(ρ)) = [-1.5, -0.8, -1.0]
    assert loss.item() == pytest.approx((1.5 + 0.8 + 1.0) / 3)


def test_aggregation_modes():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert aggregate(x, m, "token").item() == pytest.approx(8 / 5)
    assert aggregate(x, m, "sequence").item() == pytest.approx((1 + 4) / 2)
    assert aggregate(x, m, "sum_norm", norm_tokens=8).item() == pytest.approx(8 / 16)
    with pytest.raises(ValueError, match="allowed"):
        aggregate(x, m, "mean")


def test_kl_estimators():
    logp = torch.log(torch.tensor([0.5, 0.2]))
    ref = torch.log(torch.tensor([0.25, 0.4]))
    k1 = kl_penalty(logp, ref, "k1")
    k3 = kl_penalty(logp, ref, "k3")
    assert torch.allclose(k1, torch.tensor([math.log(2), math.log(0.5)]))
    r = torch.tensor([0.5, 2.0])
    assert torch.allclose(k3, r - torch.log(r) - 1)
    assert torch.all(k3 >= 0)
    assert kl_penalty(logp, logp, "k3").abs().max() == 0


def test_value_loss_clip():
    v, old, ret, m = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]]), torch.ones(1, 1)
    assert value_loss(v, old, ret, m, clip=0.2).item() == pytest.approx(0.5)  # max(1, 0.04)
    assert value_loss(v, old, torch.tensor([[1.0]]), m, clip=0.2).item() == pytest.approx(0.5 * 0.64)


def test_masked_tokens_get_exactly_zero_gradient(tiny_model):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokens = torch.randint(5, 100, (2, 12))
    mask = torch.zeros(2, 12, dtype=torch.long)
    mask[:, 4:7] = 1  # policy tokens
    mask[:, 9:11] = 1  # more policy tokens after a "tool output" span 7..8
    logits = model(tokens).logits
    logp = token_logprobs(logits, tokens)
    logp.retain_grad()
    loss, _ = clipped_policy_loss(logp, logp.detach() - 0.1, torch.tensor([1.0, -2.0]), mask)
    kl = (kl_penalty(logp, logp.detach() + 0.05, "k3") * mask).sum()
    (loss + kl).backward()
    g = logp.grad
    assert torch.all(g[mask == 0] == 0)
    assert torch.all(g[mask == 1] != 0)
