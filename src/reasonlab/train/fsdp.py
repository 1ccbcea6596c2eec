"""Sharded models for the RL engine: torch FSDP2 (``fully_shard``) over the launched processes.

With ``sharding: fsdp`` each of the W processes keeps 1/W of every weight, gradient and AdamW state
of the policy, the critic and the reference model (ZeRO-3's partition). A forward or backward
all-gathers one decoder layer at a time and frees it after; gradients are reduce-scattered. The
engine divides every loss by the *global* token or sequence count, so the gradient it wants is the
sum over ranks, while FSDP's reduce-scatter averages: :func:`sum_sharded_grads` multiplies the
sharded gradients by W after the backward passes (exact for W a power of two). (FSDP2's
``set_gradient_divide_factor(1.0)`` would sum directly, but it reduces with PREMUL_SUM, which gloo
does not support.)

Why torch's FSDP2 directly rather than accelerate's FSDP plugin: the RL engine is a plain PyTorch loop
(it owns the optimizer step, the all-reduce of normalisers and the gradient clip), and FSDP2 is one
call per module with no wrapper class to thread through it; it runs on CPU with gloo and on GPUs with
NCCL alike.

Rules that come with it (checked by the engine): every forward through a sharded model is a
collective, so all ranks run the same number of forwards (equal batches per rank); generation runs on
an unsharded sampler copy refreshed from the gathered weights before each rollout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def shard_model(model: nn.Module) -> nn.Module:
    """fully_shard each transformer block (the classes in ``_no_split_modules``), then the root."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or [])
    inner = getattr(model, "backbone", model)  # the critic: a causal LM plus a value head
    blocks |= set(getattr(inner, "_no_split_modules", None) or [])
    for m in list(model.modules()):
        if m is not model and type(m).__name__ in blocks:
            fully_shard(m)
    fully_shard(model)
    return model


@torch.no_grad()
def sum_sharded_grads(params: list[torch.Tensor], world: int) -> None:
    """FSDP averaged the sharded gradients over the ranks; the engine wants their sum."""
    for p in params:
        if p.grad is not None and is_dtensor(p.grad):
            p.grad.mul_(float(world))


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict on CPU; a collective: every rank calls it, rank 0 gets it
    (the others get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Shard a whole state dict (read by every rank) into the model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, strict=True))


def full_optimizer_state(modules: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(modules, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(modules: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not state.get("state"):  # no per-parameter state yet (or a stateless optimizer): only the hyperparameters
        for group, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
            group.update({k: v for k, v in saved.items() if k != "params"})
        return
    set_optimizer_state_dict(modules, optimizer, state, options=StateDictOptions(full_state_dict=True))


@torch.no_grad()
def copy_full_weights(dst: nn.Module, src: nn.Module) -> None:
    """dst (an unsharded copy) ← src (sharded): each parameter all-gathered in turn. A collective."""
    for d, s in zip(dst.parameters(), src.parameters(), strict=True):
        d.copy_(s.full_tensor() if is_dtensor(s) else s)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch's clip_grad_norm_ (‖g‖ over all parameters, scale by min(1, max/(‖g‖+1e-6))) for a mix of
    sharded (DTensor) and replicated parameters; returns the total norm as a plain tensor."""
    grads = [p.grad for p in params if p.grad is not None]
    sq = torch.zeros((), dtype=torch.float64)
    for g in grads:
        n = torch.linalg.vector_norm(g, 2)
        n = n.full_tensor() if is_dtensor(n) else n
        sq += n.double().cpu() ** 2
    total = sq.sqrt().float()
    coef = min(1.0, max_norm / (total.item() + 1e-6))
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total
