"""A reasonlab RL config → verl's `main_ppo` settings, and everything verl needs written to one folder.

:func:`verl_overrides` maps :class:`~reasonlab.train.rl.config.RLConfig` onto the Hydra keys that
verl 0.9.1's ``verl.trainer.main_ppo`` reads (its ``ppo_trainer.yaml``), so a study's settings carry
over instead of being retyped:

    reasonlab                     verl 0.9.1
    algorithm ppo                 algorithm.adv_estimator=gae + critic.* (a separate value model)
    algorithm grpo / rloo         adv_estimator=grpo / rloo
    algorithm dr_grpo             adv_estimator=grpo, norm_adv_by_std_in_grpo=False, seq-mean-token-sum-norm
    loss.kl_in_reward=true        algorithm.use_kl_in_reward=True, algorithm.kl_ctrl.kl_coef, kl_penalty
    loss.kl_coef>0, in the loss   actor.use_kl_loss=True, actor.kl_loss_coef, actor.kl_loss_type
    loss.kl_estimator k1 / k3     kl / low_var_kl
    rollout.tools [python]        multi_turn.enable, tool_config_path (verl_tool.py), agent tool_agent
    optim.minibatch_size (seqs)   actor.ppo_mini_batch_size (prompts: sequences / n)

Interpreter output is masked out of the loss by verl itself: its tool agent loop gives tool-response
tokens ``response_mask`` 0. The keys are written fully qualified and new keys are never added with
``+``, so verl's Hydra config rejects any key it does not know; the tests compose every key with
verl's own config in strict mode.

:func:`export_rl` writes the data (reasonlab's verl parquet), the reward module, the tool config
when the run uses the interpreter, ``overrides.yaml`` and ``run_verl.sh`` (the command).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from reasonlab.train.rl.config import RLConfig

VERL_VERSION = "0.9.1"
KL_PENALTY = {"k1": "kl", "k3": "low_var_kl"}
LOSS_AGG = {"token": "token-mean", "sequence": "seq-mean-token-mean", "sum_norm": "seq-mean-token-sum-norm"}
TOOL_PARSER = "reasonlab_python"  # registered by reasonlab.export.verl_tool


def _hydra_value(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if v is None:
        return "null"
    if isinstance(v, list):
        return "[" + ",".join(_hydra_value(x) for x in v) + "]"
    if isinstance(v, float):
        t = format(v, ".10g")
        return t if any(c in t for c in ".einf") else t + ".0"
    return str(v)


def verl_overrides(
    cfg: RLConfig,
    *,
    data_dir: str | Path,
    model_path: str | None = None,
    n_gpus: int = 1,
    nnodes: int = 1,
    max_prompt_length: int = 512,
    experiment_name: str | None = None,
    tool_config_path: str | Path | None = None,
) -> dict[str, Any]:
    """verl `main_ppo` overrides (fully qualified key → value) for ``cfg``."""
    d = Path(data_dir).resolve()
    r, o, loss = cfg.rollout, cfg.optim, cfg.loss
    model = model_path or cfg.model
    turns = r.agent.max_turns if r.tools else 1
    response_length = r.max_new_tokens if not r.tools else r.agent.max_total_tokens
    minibatch_prompts = max(1, (o.minibatch_size or r.prompts_per_step * r.n) // r.n)
    ov: dict[str, Any] = {
        "algorithm.adv_estimator": {"ppo": "gae", "grpo": "grpo", "dr_grpo": "grpo", "rloo": "rloo"}[cfg.algorithm],
        "algorithm.gamma": loss.gamma,
        "algorithm.lam": loss.lam,
        "data.train_files": str(d / "train.parquet"),
        "data.val_files": str(d / "test.parquet"),
        "data.train_batch_size": r.prompts_per_step,
        "data.max_prompt_length": max_prompt_length,
        "data.max_response_length": response_length,
        "data.filter_overlong_prompts": True,
        "data.seed": cfg.seed,
        "reward.custom_reward_function.path": str(d / "reasonlab_reward.py"),
        "reward.custom_reward_function.name": "compute_score",
        "actor_rollout_ref.model.path": model,
        "actor_rollout_ref.actor.optim.lr": o.lr,
        "actor_rollout_ref.actor.optim.weight_decay": o.weight_decay,
        "actor_rollout_ref.actor.ppo_mini_batch_size": minibatch_prompts,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": o.micro_batch_size,
        "actor_rollout_ref.actor.ppo_epochs": o.epochs,
        "actor_rollout_ref.actor.grad_clip": o.max_grad_norm,
        "actor_rollout_ref.actor.clip_ratio_low": loss.clip_low,
        "actor_rollout_ref.actor.clip_ratio_high": loss.clip_high,
        "actor_rollout_ref.actor.loss_agg_mode": LOSS_AGG[loss.agg],
        "actor_rollout_ref.actor.entropy_coeff": loss.entropy_coef,
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.n": r.n,
        "actor_rollout_ref.rollout.temperature": r.temperature,
        "actor_rollout_ref.rollout.top_p": r.top_p,
        "actor_rollout_ref.rollout.gpu_memory_utilization": r.gpu_memory_utilization,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": o.micro_batch_size * 2,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": o.micro_batch_size * 2,
        "trainer.total_training_steps": cfg.steps,
        "trainer.test_freq": cfg.eval_every or cfg.steps,
        "trainer.save_freq": cfg.save_every or cfg.steps,
        "trainer.val_before_train": cfg.eval_at_start,
        "trainer.logger": ["console"] + (["wandb"] if cfg.wandb else []) + (["tensorboard"] if cfg.tensorboard else []),
        "trainer.project_name": "reasonlab",
        "trainer.experiment_name": experiment_name or f"{cfg.algorithm}-{cfg.task.replace('/', '-')}",
        "trainer.n_gpus_per_node": n_gpus,
        "trainer.nnodes": nnodes,
    }
    if cfg.algorithm == "dr_grpo":
        ov["algorithm.norm_adv_by_std_in_grpo"] = False
        ov["actor_rollout_ref.actor.loss_agg_mode"] = LOSS_AGG["sum_norm"]
    # KL: exactly one of the two places, and really on when kl_coef > 0
    kl_on = loss.kl_coef > 0
    in_reward = kl_on and loss.kl_in_reward
    ov["algorithm.use_kl_in_reward"] = in_reward
    ov["actor_rollout_ref.actor.use_kl_loss"] = kl_on and not in_reward
    if in_reward and loss.kl_reward_norm != "sum":
        raise ValueError("loss.kl_reward_norm: verl's in-reward KL is the per-token sum (kl_reward_norm: sum); "
                         "'mean' has no verl equivalent — set it to sum, or put the KL in the loss (kl_in_reward: false)")
    if in_reward:
        ov["algorithm.kl_ctrl.type"] = "fixed"
        ov["algorithm.kl_ctrl.kl_coef"] = loss.kl_coef
        ov["algorithm.kl_penalty"] = KL_PENALTY[loss.kl_estimator]
    elif kl_on:
        ov["actor_rollout_ref.actor.kl_loss_coef"] = loss.kl_coef
        ov["actor_rollout_ref.actor.kl_loss_type"] = KL_PENALTY[loss.kl_estimator]
    if cfg.algorithm == "ppo":
        ov["critic.model.path"] = model
        ov["critic.optim.lr"] = float(f"{o.lr * 10:.6g}")  # TinyZero: critic 1e-5 for actor 1e-6
        ov["critic.ppo_micro_batch_size_per_gpu"] = o.micro_batch_size
        ov["critic.cliprange_value"] = loss.value_clip if loss.value_clip is not None else 1e9
    if r.tools:
        if tool_config_path is None:
            raise ValueError("rollout.tools is set: pass tool_config_path (export_rl writes it)")
        ov.update({
            "actor_rollout_ref.rollout.multi_turn.enable": True,
            "actor_rollout_ref.rollout.multi_turn.tool_config_path": str(Path(tool_config_path).resolve()),
            "actor_rollout_ref.rollout.multi_turn.format": TOOL_PARSER,
            "actor_rollout_ref.rollout.multi_turn.max_assistant_turns": turns,
            "actor_rollout_ref.rollout.multi_turn.max_user_turns": r.agent.max_code_calls,
            "actor_rollout_ref.rollout.multi_turn.max_tool_response_length": r.agent.max_output_chars,
            "actor_rollout_ref.rollout.agent.default_agent_loop": "tool_agent",
        })
    return ov


def study_rl_config(algorithm: str, task: str = "countdown", task_args: dict | None = None,
                    model: str = "Qwen/Qwen2.5-3B") -> RLConfig:
    """The documented verl settings: the cognitive-behaviors study's PPO, or GRPO with the KL in the loss.

    PPO (Gandhi et al. 2025 on TinyZero): critic + GAE (γ = λ = 1), 4 rollouts per prompt, 256 prompts
    per step, KL 0.001 (k1) in the reward, lr 1e-6, 1024 new tokens. GRPO: the same batch, no critic,
    KL 0.001 as a loss term with the k3 (low-variance) estimator.
    """
    common = {"model": model, "task": task, "task_args": dict(task_args or {}), "algorithm": algorithm,
              "steps": 250, "eval_every": 10, "save_every": 25,
              "rollout": {"prompts_per_step": 256, "n": 4, "max_new_tokens": 1024, "gpu_memory_utilization": 0.5},
              "optim": {"lr": 1e-6, "minibatch_size": 256, "micro_batch_size": 8}}
    if algorithm == "ppo":
        loss = {"kl_coef": 0.001, "kl_estimator": "k1", "kl_in_reward": True, "gamma": 1.0, "lam": 1.0}
    else:
        loss = {"kl_coef": 0.001, "kl_estimator": "k3", "kl_in_reward": False}
    return RLConfig(**common, loss=loss, tensorboard=False)


def command(overrides: dict[str, Any]) -> str:
    lines = ["python3 -m verl.trainer.main_ppo"] + [shlex.quote(f"{k}={_hydra_value(v)}") for k, v in overrides.items()]
    return " \\\n  ".join(lines)


TOOL_CONFIG = """# verl tool config (actor_rollout_ref.rollout.multi_turn.tool_config_path): reasonlab's sandbox
# as a verl BaseTool. Loaded by verl.tools.tool_registry; the tool module also registers the
# `reasonlab_python` ToolParser for ```python fenced blocks.
tools:
  - class_name: reasonlab.export.verl_tool.PythonSandboxTool
    config:
      type: native
      timeout_s: {timeout_s}
      memory_mb: {memory_mb}
      idle_timeout_s: {idle_timeout_s}
      max_output_chars: {max_output_chars}
"""


def export_rl(
    cfg: RLConfig,
    out_dir: str | Path,
    *,
    model_path: str | None = None,
    n_gpus: int = 1,
    nnodes: int = 1,
    n_test: int = 500,
    experiment_name: str | None = None,
) -> dict[str, Path]:
    """Data, reward, tool config (with tools), ``overrides.yaml`` and ``run_verl.sh`` for ``cfg``."""
    import yaml

    from reasonlab.export.verl import export_verl

    out = Path(out_dir)
    paths = export_verl(cfg.task, out, n_train=cfg.train_pool, n_test=n_test, seed=cfg.seed, task_args=cfg.task_args,
                        tools=list(cfg.rollout.tools) or None)
    tool_path = None
    if cfg.rollout.tools:
        tool_path = out / "tool_config.yaml"
        tool_path.write_text(TOOL_CONFIG.format(timeout_s=5.0, memory_mb=512, idle_timeout_s=300,
                                                max_output_chars=cfg.rollout.agent.max_output_chars))
        paths["tool_config"] = tool_path
    ov = verl_overrides(cfg, data_dir=out, model_path=model_path, n_gpus=n_gpus, nnodes=nnodes,
                        experiment_name=experiment_name, tool_config_path=tool_path)
    paths["overrides"] = out / "overrides.yaml"
    paths["overrides"].write_text(yaml.safe_dump(ov, sort_keys=False))
    paths["command"] = out / "run_verl.sh"
    paths["command"].write_text("#!/usr/bin/env bash\n# verl " + VERL_VERSION + " run written by reasonlab; "
                                "reasonlab must be importable on every node (reward + tool).\nset -euo pipefail\n"
                                + command(ov) + ' "$@"\n')
    paths["command"].chmod(0o755)
    return paths
