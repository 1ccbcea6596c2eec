"""`reasonlab train rl` config. Names follow TRL/verl where users already know them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from reasonlab.config import AgentSettings, Strict
from reasonlab.train.lora import LoRASettings


class RolloutSettings(Strict):
    prompts_per_step: int = Field(8, ge=1, description="problems sampled per RL step")
    n: int = Field(4, ge=1, description="rollouts per problem (the GRPO/RLOO group)")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1, description="tokens per generation turn")
    tools: list[Literal["python"]] = Field(default_factory=list)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    batch_size: int = Field(64, ge=1, description="sequences decoded together")
    compile: Literal["auto", "on", "off", "static"] = Field(
        "auto", description="hf decoding loop (see EvalConfig.compile); static = static KV cache, never compiled")
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="hf sampler weights: a bf16 copy of the policy (synced before each rollout) or the "
        "fp32 policy itself; auto = bf16 when training in bf16")
    backend: Literal["hf", "vllm"] = Field("hf", description="vllm: GPU generation, weights synced after each update")
    gpu_memory_utilization: float = Field(0.4, gt=0, le=1, description="vLLM's share of the GPU (colocated)")


class OptimSettings(Strict):
    lr: float = Field(1e-5, gt=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1, description="passes over each step's rollouts (PPO epochs)")
    minibatch_size: int | None = Field(None, ge=1, description="sequences per optimizer step (default: all)")
    micro_batch_size: int = Field(8, ge=1, description="sequences per forward/backward (gradient accumulation)")
    single_pass: bool = Field(False, description="with one epoch and one minibatch: the update's forward passes, kept "
                              "until the advantages are known, are also the old-policy and critic passes (exact; one "
                              "forward fewer per step; holds the whole step's activations at once: for small models)")


class LossSettings(Strict):
    clip_low: float = Field(0.2, ge=0)
    clip_high: float = Field(0.2, ge=0, description="> clip_low gives DAPO's clip-higher")
    agg: Literal["token", "sequence", "sum_norm"] = "token"
    kl_coef: float = Field(0.0, ge=0)
    kl_estimator: Literal["k1", "k3"] = "k3"
    kl_in_reward: bool = Field(False, description="True: −β·KL per token in the reward (PPO style); False: in the loss")
    kl_reward_norm: Literal["sum", "mean"] = Field(
        "sum", description="with kl_in_reward: 'sum' charges a response β·Σ_t KL_t (grows with its length); "
        "'mean' charges β·mean_t KL_t, spread over its tokens (length-neutral)")
    entropy_coef: float = Field(0.0, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    value_clip: float | None = 0.2
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    whiten_advantages: bool = True


class CurriculumSettings(Strict):
    """Problem sampling. ``uniform``: epoch-wise shuffles of the train pool (the ablation).
    ``potential``: R1-Code-Interpreter's curriculum — improvement potential Π = 4·p·(1−p) per problem from
    offline success rates p (Episodes of the starting model on the train pool, e.g. an eval run with
    ``--split train``), problems in ``groups`` equal groups by Π, stage s trains on groups 0..s (highest Π
    first), each stage ``stage_steps`` steps (default: steps / groups); the last stage runs to the end."""

    kind: Literal["uniform", "potential"] = "uniform"
    episodes: list[str] = Field(default_factory=list, description="Episode JSONL files giving p per problem")
    groups: int = Field(4, ge=1)
    stage_steps: int | None = Field(None, ge=1)


class RLConfig(Strict):
    model: str = Field(..., description="policy to start from: name, HF folder or hub name")
    task: str = "countdown"
    task_args: dict[str, Any] = Field(default_factory=dict)
    protocol: Literal["answer", "r1ci"] = Field("answer", description="prompt/answer style (see EvalConfig.protocol)")
    curriculum: CurriculumSettings = Field(default_factory=CurriculumSettings)
    algorithm: Literal["ppo", "grpo", "dr_grpo", "rloo"] = "grpo"
    critic: Literal["head", "model"] = Field("model", description="PPO value function: separate model or a head on the policy")
    steps: int = Field(100, ge=1)
    seed: int = 0
    dtype: Literal["auto", "fp32", "bf16"] = Field("fp32", description="bf16 = autocast on fp32 master weights; "
                                                   "auto = bf16 where the hardware runs it fast, else fp32")
    device: str = "auto"
    train_pool: int = Field(10_000, ge=1, description="distinct train problems cycled through")
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    optim: OptimSettings = Field(default_factory=OptimSettings)
    loss: LossSettings = Field(default_factory=LossSettings)
    lora: LoRASettings | None = Field(None, description="LoRA adapters on the policy (and critic); the reference is "
                                      "the policy with adapters off. null = full fine-tuning")
    sharding: Literal["none", "fsdp"] = Field(
        "none", description="fsdp: shard policy, critic and reference over the processes of `accelerate launch` "
        "/ torchrun (torch FSDP2); none: every process holds whole models")
    eval_every: int = Field(0, ge=0, description="steps between evaluations (0 = only at the end)")
    eval_limit: int = Field(32, ge=1)
    eval_n: int = Field(4, ge=1)
    eval_at_start: bool = Field(False, description="evaluate before the first update (logged as step 0)")
    eval_behaviors: bool = Field(False, description="count cognitive behaviors in eval responses (local classifier)")
    save_eval_episodes: bool = Field(True, description="keep every eval's episodes in episodes/eval-step-N.jsonl")
    save_every: int = Field(0, ge=0, description="steps between checkpoints (0 = only at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    tensorboard: bool = True
    wandb: bool = False
    out: str | None = Field(None, description="run directory (default runs/rl-<algorithm>-<task>)")

    @model_validator(mode="after")
    def _scale_options(self):
        if self.rollout.backend == "vllm" and self.lora is not None:
            raise ValueError("lora: is not supported with rollout.backend: vllm yet (vLLM would need the merged "
                             "weights after every update); use rollout.backend: hf, or lora: null")
        if self.rollout.backend == "vllm" and self.sharding == "fsdp":
            raise ValueError("sharding: fsdp is not supported with rollout.backend: vllm yet (the weight sync "
                             "reads whole tensors); use rollout.backend: hf, or sharding: none")
        if self.lora is not None and self.sharding == "fsdp":
            raise ValueError("lora: and sharding: fsdp together are not supported yet (untested); "
                             "choose one: LoRA on whole models, or FSDP with full fine-tuning")
        return self
