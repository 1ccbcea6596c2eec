"""The on-policy RL loop: PPO, GRPO, Dr. GRPO and RLOO over (multi-turn, tool-masked) rollouts.

One step, readable top to bottom in :meth:`RLTrainer.step`:

    problems (position = step) → rollouts through the agent loop, n per problem
    → rewards from the task → old log-probs, reference log-probs, values (no grad)
    → advantages (GAE with a critic, or group-relative) → epochs × minibatches of clipped updates
    → metrics.jsonl / TensorBoard → periodic eval → atomic checkpoint

The loss mask is the Episode mask: prompt and tool-output tokens get exactly zero gradient. Losses
within a minibatch are normalised by the *minibatch's* token or sequence count before gradient
accumulation, so micro-batching does not change the update.

Everything that decides a step — the problems, the sampling seed, the minibatch order — is derived
from (seed, step), and a checkpoint holds model, optimizer, scheduler, RNG states and the step, so
a run killed at any point and resumed logs the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonlab.analysis.metrics import per_task, summarize
from reasonlab.config import dump_yaml
from reasonlab.episode import Episode, append_jsonl, read_episodes
from reasonlab.rollout.agent import AgentConfig, run_agent
from reasonlab.rollout.base import SamplingParams
from reasonlab.rollout.hf import accepts_logits_to_keep, train_dtype
from reasonlab.tasks import get_task
from reasonlab.tasks.base import stable_hash
from reasonlab.tasks.suites import SuiteTask, check_trainable
from reasonlab.train.rl import advantages as A
from reasonlab.train.rl import losses as L
from reasonlab.train.rl.config import RLConfig
from reasonlab.train.rl.curriculum import Curriculum, success_rates

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- value function


class ValueHead(nn.Module):
    """V(s_t) = w·h_t + b on a transformer's last hidden state."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h.float())[..., 0]


class Critic(nn.Module):
    """A separate value model: a copy of the policy's backbone plus a value head (PPO's critic)."""

    def __init__(self, backbone: nn.Module, hidden: int):
        super().__init__()
        self.backbone = backbone
        self.head = ValueHead(hidden)

    def forward(self, input_ids, attention_mask):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self.head(out.hidden_states[-1])


# ----------------------------------------------------------------------------- processes
# `accelerate launch --num_processes W` (or torchrun) starts W copies; gloo on CPU, NCCL on GPU.


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_distributed() -> None:
    """Join the process group when launched with several processes (no-op otherwise)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    if world() > 1:
        import torch.distributed as dist

        dist.barrier()


def dist_sum(x: float) -> float:
    if world() == 1:
        return x
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item()


def all_reduce_grads(params: list[torch.Tensor]) -> None:
    """Sum gradients over ranks (each rank's loss is already divided by the global count)."""
    if world() == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def whiten_global(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise advantages over the policy tokens of *all* ranks."""
    m = mask.float()
    n = dist_sum(m.sum().item())
    mean = dist_sum((x * m).sum().item()) / max(n, 1)
    var = dist_sum((((x - mean) * m) ** 2).sum().item()) / max(n, 1)
    return (x - mean) * m / math.sqrt(var + eps)


# ----------------------------------------------------------------------------- batching


def collate(episodes: list[Episode], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token sequences; mask 0 on padding."""
    T = max(len(e.tokens) for e in episodes)
    B = len(episodes)
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    for i, e in enumerate(episodes):
        n = len(e.tokens)
        tokens[i, :n] = torch.tensor(e.tokens)
        mask[i, :n] = torch.tensor(e.mask)
        attn[i, :n] = 1
    rewards = torch.tensor([e.reward for e in episodes], dtype=torch.float32)
    return {"tokens": tokens, "mask": mask, "attn": attn, "rewards": rewards}


def chunks(idx: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return f


# ----------------------------------------------------------------------------- trainer


class RLTrainer:
    """Holds the policy, optional critic/reference, optimizer and run directory."""

    def __init__(self, cfg: RLConfig, *, out: str | Path | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from reasonlab.models import resolve_model
        from reasonlab.rollout.hf import HFBackend

        init_distributed()
        self.cfg = cfg
        self.dtype = train_dtype(cfg.dtype)  # auto resolved on this machine: bf16 only where it is fast
        self.out = Path(out or cfg.out or f"runs/rl-{cfg.algorithm}-{cfg.task.replace('/', '-')}")
        self.device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.task = get_task(cfg.task, protocol=cfg.protocol, **cfg.task_args)
        if isinstance(getattr(self.task, "inner", self.task), SuiteTask):  # a suite's held-out tasks never train
            check_trainable(self.task.members, f"RL training on {cfg.task}")
        path = resolve_model(cfg.model)
        from transformers import AutoConfig

        from reasonlab.train.memory import check_rl_memory

        # fail in a second with advice rather than after an hour with an out-of-memory error
        self.memory = check_rl_memory(cfg, AutoConfig.from_pretrained(path), self.device, world())
        torch.manual_seed(cfg.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        load = lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(self.device)  # noqa: E731
        # LoRA: self.lora_model is peft's wrapper (saving, adapters on/off); self.policy is the transformers
        # model inside it, whose linear layers now carry the adapters (the engine calls it directly).
        self.lora_model = None
        self.policy = load()
        if cfg.lora is not None:
            from reasonlab.train.lora import wrap

            self.lora_model = wrap(self.policy, cfg.lora)
            self.policy = self.lora_model.get_base_model()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        hidden = self.policy.config.hidden_size
        self.critic: nn.Module | None = None
        self.value_head: ValueHead | None = None
        if cfg.algorithm == "ppo":
            if cfg.critic == "model":
                backbone = load()
                if cfg.lora is not None:  # the critic's own adapters; its value head trains whole
                    from reasonlab.train.lora import wrap

                    backbone = wrap(backbone, cfg.lora).get_base_model()
                self.critic = Critic(backbone, hidden).to(self.device)
            else:
                self.value_head = ValueHead(hidden).to(self.device)
        # The KL reference: a frozen copy, or under LoRA the policy itself with its adapters disabled.
        self.ref = None
        self.ref_is_base = cfg.loss.kl_coef > 0 and self.lora_model is not None
        if cfg.loss.kl_coef > 0 and not self.ref_is_base:
            self.ref = load().eval()
            self.ref.requires_grad_(False)
        self.sharded = cfg.sharding == "fsdp" and world() > 1
        if self.sharded:
            self.check_shardable()
            from reasonlab.train.fsdp import shard_model

            # the sampler is an unsharded copy (every forward of a sharded model is a collective, and
            # ranks generate different lengths); it is refreshed from the gathered weights before rollouts
            self.full_copy = copy.deepcopy(self.policy).eval().requires_grad_(False)
            for m in (self.policy, self.critic, self.ref):
                if m is not None:
                    shard_model(m)
        params = [p for m in (self.policy, self.critic, self.value_head) if m is not None
                  for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.optim.lr_schedule, cfg.optim.warmup_steps, cfg.steps)
        )
        if cfg.rollout.backend == "vllm":
            from reasonlab.rollout.vllm_backend import VLLMBackend

            self.backend = VLLMBackend(path, gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, seed=cfg.seed)
        else:
            # The sampler: the policy itself, or a bf16 copy of it refreshed before every rollout (a
            # bf16 decode step runs ~2x faster on CPUs with bf16 units, and on GPUs).
            sampler_bf16 = cfg.rollout.dtype == "bf16" or (cfg.rollout.dtype == "auto" and self.dtype == "bf16")
            if self.sharded:
                self.sampler = self.full_copy.to(torch.bfloat16) if sampler_bf16 else self.full_copy
            else:
                self.sampler = copy.deepcopy(self.policy).to(torch.bfloat16).eval() if sampler_bf16 else None
            if self.sampler is not None:
                self.sampler.requires_grad_(False)
            self.backend = HFBackend(self.sampler if self.sampler is not None else self.policy, self.tokenizer,
                                     device=self.device, batch_size=cfg.rollout.batch_size, compile=cfg.rollout.compile)
        self.pool = self.task.problems("train", cfg.train_pool, seed=cfg.seed)
        cur = cfg.curriculum
        rates = None
        if cur.kind == "potential":
            eps = [e for path in cur.episodes for e in read_episodes(path)]
            rates = success_rates(eps)
        self.curriculum = Curriculum(self.pool, seed=cfg.seed, steps=cfg.steps, kind=cur.kind, rates=rates,
                                     groups=cur.groups, stage_steps=cur.stage_steps)
        self.eval_problems = self.task.problems("test", cfg.eval_limit, seed=cfg.seed)[rank():: world()]
        self.sandbox = None
        if cfg.rollout.tools:
            from reasonlab.sandbox import Sandbox, SandboxConfig

            a = cfg.rollout.agent
            self.sandbox = Sandbox(SandboxConfig(timeout_s=a.code_timeout_s, memory_mb=a.code_memory_mb))
        self.step_idx = 0
        self.tb = None
        self.skip_old_forward = True  # see update(); tests turn it off to check the shortcut is exact

    # ------------------------------------------------------------------ helpers

    def autocast(self):
        if self.dtype == "bf16":
            return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.split(":")[0], enabled=False)

    def agent_config(self, single_budget: int | None = None) -> AgentConfig:
        r = self.cfg.rollout
        if not r.tools:
            return AgentConfig(max_turns=1, max_code_calls=0, max_total_tokens=single_budget or r.max_new_tokens)
        a = r.agent
        return AgentConfig(a.max_turns, a.max_code_calls, a.max_total_tokens, a.max_output_chars)

    def problems_for(self, step: int) -> list:
        """Data position is a function of the step: the curriculum's (or uniform) epoch-wise shuffles."""
        out = self.curriculum.problems_for(step, self.cfg.rollout.prompts_per_step)
        return out[rank():: world()]  # with several processes each rollouts its share of whole groups

    def cut_padding(self, b: dict, idx: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(T, tokens, attention mask) of micro-batch ``idx`` cut to its longest sequence, on the device.

        Right padding past it never changes an earlier position (causal attention), so callers
        zero-pad their outputs back to the batch's width."""
        T = int(b["attn"][idx].sum(1).max())
        return T, b["tokens"][idx, :T].to(self.device), b["attn"][idx, :T].to(self.device)

    def forward_logp(self, model: nn.Module, b: dict, idx: torch.Tensor, *, hidden: bool = False,
                     entropy: str | None = None):
        """log π(tokens[t] | tokens[<t]) as [B, T] (0 before the first policy token of the micro-batch),
        the entropy of the distribution each token was drawn from (``entropy='grad'`` keeps its
        graph, ``'value'`` does not, None skips it), and the last hidden state if asked.

        Logits are computed only from the first policy token of the micro-batch on
        (``logits_to_keep``): prompt positions never enter the loss, and the LM head plus a
        log-softmax over a 49k vocabulary at every prompt position was most of a CPU step's
        non-matmul time. ``log π = x[tok] − logsumexp(x)`` avoids materialising the log-softmax.
        """
        T_full = b["tokens"].shape[1]
        T, tokens, attn = self.cut_padding(b, idx)
        B = tokens.shape[0]
        policy_pos = b["mask"][idx][:, 1:].any(0).nonzero()  # positions (minus 1) of policy tokens
        first = int(policy_pos[0]) + 1 if len(policy_pos) else T - 1
        kw = {"logits_to_keep": T - first + 1} if accepts_logits_to_keep(model) else {}
        with self.autocast():
            out = model(input_ids=tokens, attention_mask=attn, output_hidden_states=hidden, **kw)
        logits = out.logits.float() / self.cfg.rollout.temperature
        start = T - logits.shape[1]  # logits[:, j] sits at position start + j and predicts token start + j + 1
        pred = logits[:, :-1]
        lse = torch.logsumexp(pred, dim=-1)
        picked = pred.gather(-1, tokens[:, start + 1 :, None])[..., 0] - lse
        pad = torch.zeros(B, start + 1, device=picked.device, dtype=picked.dtype)
        logp = torch.cat([pad, picked], dim=1)
        ent = None
        if entropy is not None:
            with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
                x = pred if entropy == "grad" else pred.detach()
                e = (lse if entropy == "grad" else lse.detach()) - (torch.softmax(x, dim=-1) * x).sum(-1)
            ent = torch.cat([pad, e], dim=1)
        h = out.hidden_states[-1] if hidden else None
        if T < T_full:
            logp = nn.functional.pad(logp, (0, T_full - T))
            ent = nn.functional.pad(ent, (0, T_full - T)) if ent is not None else None
            h = nn.functional.pad(h, (0, 0, 0, T_full - T)) if h is not None else None
        return ent, logp, h

    def values_for(self, b: dict, idx: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
        if self.critic is not None:
            T, tokens, attn = self.cut_padding(b, idx)
            with self.autocast():
                v = self.critic(tokens, attn)
            return nn.functional.pad(v, (0, b["tokens"].shape[1] - T))
        return self.value_head(hidden)

    # ------------------------------------------------------------------ one step

    @torch.no_grad()
    def sync_sampler(self) -> None:
        """Copy the policy's current weights into the sampler: the bf16 copy, or the unsharded copy
        under FSDP (gathered, a collective); a no-op when the policy samples itself."""
        if getattr(self, "sampler", None) is None:
            return
        if self.sharded:
            from reasonlab.train.fsdp import copy_full_weights

            copy_full_weights(self.sampler, self.policy)
            return
        for dst, src in zip(self.sampler.parameters(), self.policy.parameters(), strict=True):
            dst.copy_(src)

    def check_shardable(self) -> None:
        """FSDP needs the same number of forwards on every rank: equal whole groups per rank."""
        r = self.cfg.rollout
        if r.prompts_per_step % world() or (self.cfg.optim.minibatch_size or 0) % world():
            raise ValueError(f"sharding: fsdp over {world()} processes needs rollout.prompts_per_step "
                             f"({r.prompts_per_step}) and optim.minibatch_size ({self.cfg.optim.minibatch_size}) "
                             f"divisible by {world()}; change them or the number of processes")

    def ref_logp(self, b: dict, idx: torch.Tensor) -> torch.Tensor:
        """log π_ref of the tokens: the frozen copy, or the policy with its LoRA adapters disabled."""
        if self.ref is not None:
            return self.forward_logp(self.ref, b, idx)[1]
        with self.lora_model.disable_adapter():
            return self.forward_logp(self.policy, b, idx)[1]

    def rollout(self, step: int) -> list[Episode]:
        self.sync_sampler()
        r = self.cfg.rollout
        params = SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens,
                                seed=stable_hash(self.cfg.seed, "rollout", step) % (2**31))
        self.policy.eval()
        with torch.no_grad():
            groups = run_agent(self.backend, self.task, self.problems_for(step), params, sandbox=self.sandbox,
                               config=self.agent_config(), tools=r.tools)
        return [e for g in groups for e in g]

    def step(self) -> dict[str, Any]:
        """One RL step: this rank's rollouts, then the (globally normalised) update."""
        t0 = time.perf_counter()
        episodes = self.rollout(self.step_idx)
        t_roll = time.perf_counter() - t0
        row = self.update(episodes)
        gen_tokens = dist_sum(float(sum(e.stats["generated_tokens"] for e in episodes)))
        row["time_rollout_s"] = round(t_roll, 3)
        row["rollout_tok_per_s"] = round(gen_tokens / max(t_roll, 1e-9), 1)
        return row

    def update(self, episodes: list[Episode]) -> dict[str, Any]:
        """Advantages and clipped updates on this rank's episodes (whole groups).

        With several processes every normaliser (token and sequence counts, advantage whitening,
        logged means) is summed over ranks and the gradients are summed with all-reduce, so W
        processes make exactly the update one process makes on the union of their batches.
        """
        cfg, step = self.cfg, self.step_idx
        t0 = time.perf_counter()
        b = collate(episodes, self.pad_id)
        B = len(episodes)
        mask = b["mask"].to(self.device)
        mask[:, 0] = 0
        mbs = cfg.optim.micro_batch_size
        # micro-batches of similar length: each is cut to its own longest sequence (forward_logp),
        # so a 30-token answer is not padded to a 448-token search's width
        lengths = b["attn"].sum(1)
        by_len = lambda ix: ix[torch.argsort(lengths[ix], stable=True)]  # noqa: E731
        allidx = by_len(torch.arange(B))

        mb_size = cfg.optim.minibatch_size // world() if cfg.optim.minibatch_size else B
        # Exactly on-policy (one epoch, one minibatch, no value or in-reward KL needing the old
        # policy first): the behaviour policy *is* the policy being differentiated, so
        # old log π = log π.detach() in the loss and the no-grad forward is skipped (as TRL does).
        has_ref = self.ref is not None or self.ref_is_base
        on_policy = (self.skip_old_forward and cfg.optim.epochs == 1 and mb_size >= B and cfg.algorithm != "ppo"
                     and not (has_ref and cfg.loss.kl_in_reward))

        # One pass (optim.single_pass, one epoch and one minibatch): the update's own forward passes,
        # with their graphs kept until the advantages are known, are the behaviour policy's and the
        # critic's passes (the same weights and inputs, so the same numbers): one forward fewer per step.
        single = cfg.optim.single_pass and cfg.optim.epochs == 1 and mb_size >= B and not self.sharded
        ent_mode = "grad" if cfg.loss.entropy_coef > 0 else "value"
        ppo = cfg.algorithm == "ppo"

        # --- quantities of the behaviour policy, the reference and the critic (no grad)
        old_logp = torch.zeros(b["tokens"].shape, device=self.device)
        ref_logp = torch.zeros_like(old_logp)
        values = torch.zeros_like(old_logp)
        kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        if single:
            self.policy.train()
            for idx in chunks(allidx, mbs):
                ent, lp, h = self.forward_logp(self.policy, b, idx, hidden=self.value_head is not None, entropy=ent_mode)
                v = self.values_for(b, idx, h).float() if ppo else None
                old_logp[idx] = lp.detach()
                if v is not None:
                    values[idx] = v.detach()
                if has_ref:
                    with torch.no_grad():
                        ref_logp[idx] = self.ref_logp(b, idx)
                kept.append((idx, ent, lp, v))
        self.policy.eval()
        needs_pass = not single and (not on_policy or has_ref)
        with torch.no_grad():
            for idx in chunks(allidx, mbs) if needs_pass else []:
                if not on_policy:
                    _, lp, h = self.forward_logp(self.policy, b, idx, hidden=self.value_head is not None)
                    old_logp[idx] = lp
                if has_ref:
                    ref_logp[idx] = self.ref_logp(b, idx)
                if cfg.algorithm == "ppo":
                    values[idx] = self.values_for(b, idx, h).float()
        rewards = b["rewards"].to(self.device)
        kl_tok = L.kl_penalty(old_logp, ref_logp, cfg.loss.kl_estimator) * mask if has_ref else None

        # --- advantages
        if cfg.algorithm == "ppo":
            token_rewards = A.outcome_token_rewards(rewards, mask)
            if kl_tok is not None and cfg.loss.kl_in_reward:
                token_rewards = token_rewards - A.kl_reward_penalty(kl_tok, mask, cfg.loss.kl_coef, cfg.loss.kl_reward_norm)
            adv, returns = A.gae(token_rewards, values, mask, cfg.loss.gamma, cfg.loss.lam)
            if cfg.loss.whiten_advantages:
                adv = whiten_global(adv, mask)
        else:
            r = rewards
            if kl_tok is not None and cfg.loss.kl_in_reward:
                r = r - A.kl_reward_penalty(kl_tok, mask, cfg.loss.kl_coef, cfg.loss.kl_reward_norm).sum(1)
            if cfg.algorithm == "rloo":
                seq_adv = A.rloo_advantages(r, cfg.rollout.n)
            else:
                seq_adv = A.group_advantages(r, cfg.rollout.n, scale=cfg.algorithm == "grpo")
            adv = seq_adv[:, None] * mask
            returns = None

        # --- updates
        t1 = time.perf_counter()
        self.policy.train()
        g = torch.Generator().manual_seed(stable_hash(cfg.seed, "minibatch", step, rank()) % (2**31))
        stats: dict[str, list[float]] = {}

        def passes(mb: torch.Tensor):
            """(indices, entropy, log-probs, values) of each micro-batch, with grad."""
            if single:
                yield from kept
                return
            for idx in chunks(by_len(mb), mbs):
                ent, logp, h = self.forward_logp(self.policy, b, idx, hidden=self.value_head is not None, entropy=ent_mode)
                yield idx, ent, logp, (self.values_for(b, idx, h).float() if ppo else None)

        for _epoch in range(cfg.optim.epochs):
            for mb in chunks(torch.randperm(B, generator=g), mb_size):
                self.optimizer.zero_grad(set_to_none=True)
                n_tok = torch.tensor(dist_sum(mask[mb].sum().item())).clamp(min=1)
                n_seq = int(dist_sum(len(mb)))
                for idx, ent, logp, v in passes(mb):
                    m = mask[idx]
                    old = logp.detach() if on_policy else old_logp[idx]
                    pg, st = self.pg_loss(logp, old, adv[idx], m, n_tok, n_seq)
                    loss = pg
                    if kl_tok is not None and not cfg.loss.kl_in_reward:
                        kl = L.kl_penalty(logp, ref_logp[idx], cfg.loss.kl_estimator)
                        loss = loss + cfg.loss.kl_coef * self.agg(kl, m, n_tok, n_seq)
                        st["kl"] = L.masked_mean(kl.detach(), m).item()
                    # entropy of the distribution each policy token was drawn from (logged; a bonus if coef > 0)
                    if cfg.loss.entropy_coef > 0:
                        loss = loss - cfg.loss.entropy_coef * self.agg(ent, m, n_tok, n_seq)
                    st["entropy"] = L.masked_mean(ent.detach(), m).item()
                    if v is not None:
                        vl = L.value_loss(v, values[idx], returns[idx], m, cfg.loss.value_clip)
                        w = m.sum() / n_tok  # token-weighted, so accumulation equals the full batch
                        loss = loss + cfg.loss.vf_coef * vl * w
                        st["value_loss"] = vl.item()
                    loss.backward()
                    st["loss"] = loss.item()
                    for k, v_ in st.items():
                        stats.setdefault(k, []).append(v_)
                params = [p for grp in self.optimizer.param_groups for p in grp["params"]]
                if self.sharded:  # FSDP reduce-scattered the sharded gradients; the rest are all-reduced
                    from reasonlab.train.fsdp import clip_grad_norm, is_dtensor, sum_sharded_grads

                    sum_sharded_grads(params, world())
                    all_reduce_grads([p for p in params if not is_dtensor(p)])
                    gn = clip_grad_norm(params, cfg.optim.max_grad_norm)
                else:
                    all_reduce_grads(params)
                    gn = torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
                stats.setdefault("grad_norm", []).append(gn.item())
                self.optimizer.step()
        self.scheduler.step()
        if hasattr(self.backend, "sync_weights"):  # vLLM holds its own copy of the weights
            self.backend.sync_weights(self.policy)
        t_train = time.perf_counter() - t1
        t_prepare = t1 - t0
        self.step_idx += 1

        n_all = dist_sum(float(B))
        mean = lambda xs: dist_sum(float(sum(xs))) / n_all  # noqa: E731
        row: dict[str, Any] = {
            "step": self.step_idx,
            "reward": mean(e.reward for e in episodes),
            "accuracy": mean(e.correct for e in episodes),
            "format_rate": mean(e.format_ok for e in episodes),
            "response_length": mean(e.stats["generated_tokens"] for e in episodes),
            "lr": self.scheduler.get_last_lr()[0],
            "time_train_s": round(t_train, 3),
            "time_prepare_s": round(t_prepare, 3),  # collation, old/reference/critic passes, advantages
        }
        if cfg.rollout.tools:
            row["code_calls"] = mean(e.stats.get("code_calls", 0) for e in episodes)
        if cfg.curriculum.kind != "uniform":
            row["curriculum_stage"] = self.curriculum.stage(step)
        if len({e.task for e in episodes}) > 1:  # per-task accuracy and reward (this rank's rollouts)
            for t, v in per_task(episodes).items():
                row[f"task/{t}/accuracy"] = v["accuracy"]
                row[f"task/{t}/reward"] = v["mean_reward"]
        for k, v_ in stats.items():
            row[k] = dist_sum(sum(v_) / len(v_)) / world()
        if kl_tok is not None and cfg.loss.kl_in_reward:  # per-token KL to the reference, before the update
            row["kl"] = dist_sum(kl_tok.sum().item()) / max(dist_sum(mask.sum().item()), 1)
        return row

    def agg(self, per_token: torch.Tensor, m: torch.Tensor, n_tok: torch.Tensor, n_seq: int) -> torch.Tensor:
        """Partial aggregation of a micro-batch against the whole minibatch's normaliser."""
        mode = self.cfg.loss.agg
        mf = m.to(per_token.dtype)
        if mode == "token":
            return (per_token * mf).sum() / n_tok
        if mode == "sequence":
            return ((per_token * mf).sum(1) / mf.sum(1).clamp(min=1)).sum() / n_seq
        return (per_token * mf).sum() / (n_seq * self.cfg.rollout.max_new_tokens)

    def pg_loss(self, logp, old_logp, adv, m, n_tok, n_seq):
        c = self.cfg.loss
        ratio = torch.exp(logp - old_logp)
        unclipped = ratio * adv
        clipped = ratio.clamp(1 - c.clip_low, 1 + c.clip_high) * adv
        per_token = -torch.minimum(unclipped, clipped)
        with torch.no_grad():
            st = {
                "clip_frac": ((unclipped != clipped) & m.bool()).float().sum().item() / max(m.sum().item(), 1),
                "ratio": L.masked_mean(ratio, m).item(),
            }
        return self.agg(per_token, m, n_tok, n_seq), st

    # ------------------------------------------------------------------ eval

    def evaluate(self) -> dict[str, Any]:
        self.sync_sampler()
        r = self.cfg.rollout
        params = SamplingParams(n=self.cfg.eval_n, temperature=r.temperature, top_p=r.top_p,
                                max_new_tokens=r.max_new_tokens, seed=stable_hash(self.cfg.seed, "eval") % (2**31))
        self.policy.eval()
        with torch.no_grad():
            groups = run_agent(self.backend, self.task, self.eval_problems, params, sandbox=self.sandbox,
                               config=self.agent_config(), tools=r.tools)
        eps = [e for g in groups for e in g]
        if world() > 1:  # every rank evaluated its share of the problems
            import torch.distributed as dist

            parts: list[Any] = [None] * world()
            dist.all_gather_object(parts, eps)
            eps = [e for part in parts for e in part]
        s = summarize(eps)
        row = {"eval/accuracy": s["accuracy"], "eval/reward": s["mean_reward"],
               "eval/response_length": s["mean_generated_tokens"]}
        for k, v in s["pass@k"].items():
            row[f"eval/pass@{k}"] = v
        for t, v in s.get("per_task", {}).items():
            row[f"eval/task/{t}/accuracy"] = v["accuracy"]
            row[f"eval/task/{t}/reward"] = v["mean_reward"]
        if self.cfg.eval_behaviors:
            from reasonlab.analysis.behaviors import BEHAVIORS, count_behaviors_local

            for e in eps:
                e.behaviors = dict(count_behaviors_local(e.completion))
            for b in BEHAVIORS:
                row[f"eval/{b}"] = sum(e.behaviors[b] for e in eps) / max(len(eps), 1)
        if self.cfg.save_eval_episodes and rank() == 0:
            append_jsonl(self.out / "episodes" / f"eval-step-{self.step_idx:06d}.jsonl", eps, fsync=False)
        return row

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def trained_modules(self) -> nn.ModuleList:
        """The modules the optimizer updates, as one module (FSDP's optimizer state dict maps names through it)."""
        return nn.ModuleList([m for m in (self.policy, self.critic, self.value_head) if m is not None])

    def save(self) -> Path:
        """Write checkpoints/step-N atomically (temporary folder, then rename); rank 0 writes.

        The folder is a plain HF model (with LoRA: the adapters merged in, and the adapters alone in
        ``adapter/``); under FSDP the whole weights and optimizer state are gathered first (a collective)."""
        final = self.checkpoint_dir() / f"step-{self.step_idx:06d}"
        if self.sharded:
            from reasonlab.train.fsdp import full_optimizer_state, full_state_dict

            policy_sd = full_state_dict(self.policy)
            critic_sd = full_state_dict(self.critic) if self.critic is not None else None
            optim_sd = full_optimizer_state(self.trained_modules(), self.optimizer)
        if rank() != 0:
            barrier()
            return final
        tmp = self.checkpoint_dir() / f".tmp-step-{self.step_idx:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.lora_model is not None:
            from reasonlab.train.lora import save_lora

            save_lora(self.lora_model, tmp)
        elif self.sharded:
            self.policy.save_pretrained(tmp, state_dict=policy_sd, safe_serialization=True)
        else:
            self.policy.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        state = {
            "step": self.step_idx,
            "optimizer": optim_sd if self.sharded else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "value_head": self.value_head.state_dict() if self.value_head is not None else None,
            "critic": critic_sd if self.sharded else (self.critic.state_dict() if self.critic is not None else None),
        }
        torch.save(state, tmp / "trainer_state.pt")
        with open(tmp / "trainer_state.pt", "rb") as f:
            os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        done = sorted(p for p in self.checkpoint_dir().glob("step-*") if p.is_dir())
        for old in done[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        barrier()
        return final

    def latest_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.checkpoint_dir().glob("step-*") if (p / "trainer_state.pt").exists())
        return done[-1] if done else None

    def load(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        if self.lora_model is not None:  # the base is the start model; only the adapters were trained
            from reasonlab.train.lora import load_adapter_weights

            load_adapter_weights(self.lora_model, ckpt / "adapter")
        else:
            sd = {}
            for f in sorted(ckpt.glob("*.safetensors")):
                sd.update(load_file(f))
            if self.sharded:
                from reasonlab.train.fsdp import load_full_state_dict

                if "lm_head.weight" not in sd and self.policy.config.tie_word_embeddings:
                    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
                load_full_state_dict(self.policy, sd)
            else:
                missing, unexpected = self.policy.load_state_dict(sd, strict=False)
                if unexpected or [k for k in missing if "lm_head" not in k]:
                    raise RuntimeError(f"checkpoint {ckpt} does not match the model: missing={missing} "
                                       f"unexpected={unexpected}")
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])
        if self.sharded:
            from reasonlab.train.fsdp import load_full_optimizer_state, load_full_state_dict

            if self.critic is not None:
                load_full_state_dict(self.critic, state["critic"])
            load_full_optimizer_state(self.trained_modules(), self.optimizer, state["optimizer"])
        else:
            if self.critic is not None:
                self.critic.load_state_dict(state["critic"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.step_idx = state["step"]

    # ------------------------------------------------------------------ logging

    def log(self, row: dict[str, Any]) -> None:
        if rank() != 0:
            return
        append_jsonl(self.out / "metrics.jsonl", [row], fsync=False)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row["step"])


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if row.get("step", 0) <= last_step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


def train_rl(cfg: RLConfig, *, resume: bool = False, show_progress: bool = True, stop_after: int | None = None,
             on_step: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run (or resume) an RL job; returns the run directory. ``stop_after``: stop after that many
    steps of this call (for tests and time-boxed runs); the run can be resumed later. ``on_step``
    gets each step's logged row (with the eval metrics on eval steps), on the main process."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    trainer = RLTrainer(cfg)
    out = trainer.out
    cfg_path = out / "config.yaml"
    if out.exists() and (out / "metrics.jsonl").exists() and not resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    barrier()
    if rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(dump_yaml(cfg))
    if resume:
        ckpt = trainer.latest_checkpoint()
        if ckpt is not None:
            trainer.load(ckpt)
            if hasattr(trainer.backend, "sync_weights"):
                trainer.backend.sync_weights(trainer.policy)
            log.warning("resumed from %s (step %d)", ckpt, trainer.step_idx)
        if rank() == 0:
            # forget what was logged after the checkpoint (it is redone); at step 0, everything
            keep_upto = trainer.step_idx if trainer.step_idx > 0 else -1
            _truncate_metrics(out / "metrics.jsonl", keep_upto)
            for f in (out / "episodes").glob("eval-step-*.jsonl"):
                if int(f.stem.split("-")[-1]) > keep_upto:
                    f.unlink()
    if cfg.tensorboard and rank() == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            trainer.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            trainer.tb = None
    done_here = 0
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("reward {task.fields[reward]}"), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*cols, disable=not show_progress or rank() != 0) as progress:
            bar = progress.add_task(f"{cfg.algorithm} {cfg.task}", total=cfg.steps, completed=trainer.step_idx, reward="-")
            if cfg.eval_at_start and trainer.step_idx == 0:
                trainer.log({"step": 0, **trainer.evaluate()})
            while trainer.step_idx < cfg.steps:
                row = trainer.step()
                s = trainer.step_idx
                if (cfg.eval_every and s % cfg.eval_every == 0) or s == cfg.steps:
                    row.update(trainer.evaluate())
                trainer.log(row)
                if (cfg.save_every and s % cfg.save_every == 0) or s == cfg.steps:
                    trainer.save()
                progress.update(bar, completed=s, reward=f"{row['reward']:.3f}")
                if on_step is not None and rank() == 0:
                    on_step(row)
                done_here += 1
                if stop_after is not None and done_here >= stop_after:
                    break
    finally:
        if trainer.sandbox is not None:
            trainer.sandbox.close()
        if trainer.tb is not None:
            trainer.tb.close()
    return out
