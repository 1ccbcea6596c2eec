"""EntroPO-DPO and EntroPO-KTO (Yu et al. 2025, arXiv 2509.12434) on TRL's DPOTrainer and KTOTrainer.

Objective. Over whole multi-turn trajectories y of a prompt x, the paper maximises

    J(π) = E_{y~π}[u(x, y)] + α_p·H(π) − β_p·H(π, π_ref),    H(π) = −E_π log π,  H(π, π_ref) = −E_π log π_ref.

Since H(π, π_ref) = H(π) + KL(π‖π_ref), this is

    J(π) = E_π[u] − β·KL(π‖π_ref) + α·H(π)        with   β = β_p,  α = α_p − β_p   (our symbols).

α = 0 (the paper's α_p = β_p) is the KL-regularised objective behind DPO and KTO; α > 0 is the extra
entropy bonus. (The paper's α_p = 0 would be no entropy at all: a deterministic argmax policy.)

Two parameterisations, one objective. Every entry point (the trainer configs, ``PreferenceSettings``,
``reasonlab train pref``, the ``entropo`` recipe) takes either ours, ``alpha``/``beta`` (α, β above),
or the paper's, ``entro_alpha``/``pref_beta`` (α_p, β_p, the names of its released configs), and
:func:`resolve_entropy` turns the paper's into ours: α = entro_alpha − pref_beta, β = pref_beta. The
paper's ``entro_alpha 0.11, pref_beta 0.1`` is α = 0.01, β = 0.1; typing 0.11 as ``alpha`` would
give eleven times the paper's entropy bonus (a warning says so whenever α ≥ β). Giving both forms is
an error unless they agree; the resolved pair is logged in both forms (:func:`describe_entropy`).

Optimal policy and implicit reward. Maximising J for each x gives, with τ = β/(β+α),

    π*(y|x) = π_ref(y|x)^τ · exp(u(x, y)/(β+α)) / Z(x)
    u(x, y) = (β+α)·[log π(y|x) − τ·log π_ref(y|x)] + c(x)  =  β·log(π/π_ref) + α·log π + c(x)

EntroPO is the KL-regularised problem at inverse temperature β+α against the tempered reference
π_ref^τ, and its solution is the α = 0 solution at temperature 1 + α/β: π*_α ∝ (π*_0)^τ. Tempering
flattens a distribution and raises its entropy; that is all α does to the solution. The losses below
inherit it: L_α(π^τ) = L_0(π) with π^τ the policy tempered over whole trajectories (DPO: on every
batch; KTO: on a batch of one prompt, while TRL's clamp of the KL estimate is inactive).

EntroPO-DPO (Bradley–Terry on u; c(x) cancels; Δf = f(x, y_w) − f(x, y_l)):

    L_DPO = −log σ( β·Δ[log π − log π_ref] + α·Δ log π ) = −log σ( (β+α)·Δ[log π − τ·log π_ref] )

A gradient step: ∇L_DPO = −(β+α)·σ(−z)·∇Δlog π, z the logit above. Each pair pushes in DPO's direction;
α re-weights the pairs, less on those whose winner the policy already finds likelier (z grows with
α·Δlog π). On a tie (two trajectories, each preferred once) DPO's gradient at π = π_ref is zero, while
EntroPO's moves Δlog π towards 0: it spreads mass over equally good trajectories.

EntroPO-KTO. KTO values each trajectory against a reference point z₀ = E_{y'~π}[r(x, y')], with
r = u − c(x) the implicit reward (TRL: r = β·log(π/π_ref), z₀ = β·KL). Here

    z₀ = E_π[(β+α)·log π − β·log π_ref] = (β+α)·KL(π‖π_ref) − α·H(π, π_ref)
    L_KTO = λ_D·(1 − σ(r(y) − z₀)) for desirable y,   λ_U·(1 − σ(z₀ − r(y))) for undesirable y

KL is TRL's estimate (mismatched (x, y') pairs of the batch, detached, clamped at 0 because KL ≥ 0);
H(π, π_ref) is estimated by −mean over the batch of log π_ref(y_i|x_i) (a constant: π_ref is frozen). So

    r(y) − z₀ = (β+α)·[log π(y) − (τ·log π_ref(y) + (1−τ)·mean_batch log π_ref) − KL̂]

Released EntroPO-KTO (``kto_form="released"``). The authors' released code differs from this
derivation: its per-example reward has no entropy term, r(y) = β·log(π(y)/π_ref(y)) (TRL's), and the
entropy enters only through the reference point, the same z₀ = β·KL(π‖π_ref) − α·H(π) as above:

    r(y) − z₀ = β·[log π(y) − log π_ref(y)] − (β+α)·KL̂ − α·mean_batch log π_ref

Its optimum is no longer the tempered policy (z₀ is a detached constant per batch, so α only shifts
the point desirable and undesirable trajectories are measured against: at π = π_ref, every
desirable example's logit is −α·mean log π_ref > 0). Reconstructed from the paper's description of
the released code; offered to compare against, not as the default. Implemented as TRL's KTO loss
with β unchanged and the reference log-probs shifted by (α/β)·(KL̂ + mean_batch log π_ref), KL̂ being
TRL's estimate (computed once more, without gradient, to know the shift).

Implementation. Both losses are TRL's own, with β ← β+α and the reference log-probs replaced by the
tempered reference of :func:`tempered_reference` (DPO: τ·log π_ref; KTO: τ·log π_ref + (1−τ)·batch
mean). With α = 0, τ = 1 and nothing changes: the losses are TRL's DPO ("sigmoid") and KTO exactly.
TRL's ``_compute_loss`` is one monolithic method; the narrowest hook into it is its precomputed-reference
input: ``compute_loss`` gets the reference log-probs from TRL (``compute_ref_log_probs``, or the ones TRL
precomputed with ``precompute_ref_log_probs``), tempers them, and hands them to TRL's loss as
precomputed. Reference model, optimiser, logging and checkpoints are TRL's; the logged ``rewards/*``
are the EntroPO implicit rewards (β+α)·(log π − log π̃_ref).

Sums, not means. log π(y|x) is the sum of log-probs over the trajectory's policy tokens, as TRL sums
the β term. The derivation needs one aggregation for both terms (a trajectory's entropy is the sum of
its per-token conditional entropies); length-normalising only the α term would optimise a per-token
entropy rate instead and lose the closed form above (and α = 0 fixes the β term to TRL's sum). The
price: α is per trajectory nat. At the start of training (π = π_ref) the α term shifts each logit by
α·Δlog π_ref (DPO) or α·(log π_ref(y) − batch mean) (KTO); choose α so that α × (spread of trajectory
log-probs) is O(1), and read α/β as the temperature increase of the solution.

Multi-turn trajectories. Tool outputs are environment transitions: log P(y|x) = Σ_policy log π +
Σ_tool log P_env, and the environment terms neither depend on θ nor differ between π and π_ref. So
only policy tokens (Episode mask 1) enter log π; tool outputs are context. (With deterministic tool
outputs, as code execution is, the soft-Bellman recursion of the entropy-regularised MDP telescopes to
the trajectory-level solution above exactly.) The collators below set TRL's ``completion_mask`` to the
Episode mask, so TRL's labels are −100 on prompt, tool output and padding.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

from reasonlab.config import Strict, dump_yaml
from reasonlab.rollout.hf import train_dtype
from reasonlab.train.lora import LoRASettings

log = logging.getLogger(__name__)


def tempered_reference(ref_logps: torch.Tensor, tau: float, centered: bool = False) -> torch.Tensor:
    """Sequence log-probs of the tempered reference π̃_ref = π_ref^τ (up to a per-prompt constant):
    τ·log π_ref, or τ·log π_ref + (1−τ)·mean(log π_ref) when ``centered`` (EntroPO-KTO, where the
    mean is the batch's −H(π, π_ref) term of the reference point). τ = 1 returns ``ref_logps`` exactly."""
    out = tau * ref_logps
    return out + (1.0 - tau) * ref_logps.mean() if centered else out


def _policy_mask(masks: list[list[int]], width: int, max_length: int | None,
                 keep_end: bool = False) -> torch.Tensor:
    """Right-padded (and truncated exactly like TRL's collators) policy masks."""
    out = torch.zeros(len(masks), width, dtype=torch.long)
    for i, m in enumerate(masks):
        if max_length is not None:
            m = m[-max_length:] if keep_end else m[:max_length]
        out[i, : len(m)] = torch.tensor(m, dtype=torch.long)
    return out


@dataclass
class EpisodePreferenceCollator(DataCollatorForPreference):
    """TRL's pair collator; ``completion_mask`` is the Episode policy mask when the examples carry
    ``chosen_policy_mask``/``rejected_policy_mask`` (else TRL's all-completion mask)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        if "chosen_policy_mask" in examples[0]:
            masks = [[0] * len(e["prompt_ids"]) + list(e[f"{side}_policy_mask"])
                     for side in ("chosen", "rejected") for e in examples]
            out["completion_mask"] = _policy_mask(masks, out["input_ids"].size(1), self.max_length,
                                                  self.truncation_mode == "keep_end")
        return out


@dataclass
class EpisodeUnpairedCollator(DataCollatorForUnpairedPreference):
    """TRL's KTO collator; ``completion_mask`` and ``KL_completion_mask`` are Episode policy masks when
    the examples carry ``completion_policy_mask`` (and ``KL_completion_policy_mask``)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        for prefix in ("", "KL_"):
            key = f"{prefix}completion_policy_mask"
            if key in examples[0] and f"{prefix}input_ids" in out:
                masks = [[0] * len(e["prompt_ids"]) + list(e[key]) for e in examples]
                width = out[f"{prefix}input_ids"].size(1)
                out[f"{prefix}completion_mask"] = _policy_mask(masks, width, self.max_length)
        return out


def _columns(dataset: Any) -> set[str]:
    return set(next(iter(dataset)).keys())


def _trainable(prompt_ids: list[int], policy_mask: list[int], max_length: int | None) -> bool:
    """Some policy token survives TRL's keep-start truncation (TRL itself only drops over-long prompts)."""
    if max_length is None:
        return 1 in policy_mask
    return len(prompt_ids) < max_length and 1 in policy_mask[: max_length - len(prompt_ids)]


def _check_alpha(alpha: float) -> float:
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0 (0 = plain DPO/KTO), got {alpha}")
    return float(alpha)


PAPER_EXAMPLE = "the paper's entro_alpha=0.11, pref_beta=0.1 is alpha=0.01, beta=0.1"


def resolve_entropy(alpha: float | None = None, beta: float | None = None, entro_alpha: float | None = None,
                    pref_beta: float | None = None, *, where: str = "", warn: bool = True) -> tuple[float, float]:
    """(α, β) in our parameterisation from either ours (``alpha``, ``beta``) or the paper's
    (``entro_alpha`` = α_p, ``pref_beta`` = β_p in α_p·H(π) − β_p·H(π, π_ref)); module docstring.

    ``None`` means "not given" (defaults: α = 0, β = 0.1). The paper's form needs both of its numbers
    and entro_alpha >= pref_beta (α_p = β_p is plain DPO/KTO; below it the objective rewards *less*
    entropy than DPO, which these losses do not implement). Giving both forms is refused unless
    they describe the same objective. ``warn=False`` drops the warning about α >= β (a sweep that
    means it).
    """
    at = f"{where}: " if where else ""
    if entro_alpha is None and pref_beta is None:
        a, b = (0.0 if alpha is None else float(alpha)), (0.1 if beta is None else float(beta))
        if not (math.isfinite(b) and b > 0):
            raise ValueError(f"{at}beta must be > 0, got {b}")
        a = _check_alpha(a)
        if a >= b and warn:
            log.warning("%salpha=%g >= beta=%g: alpha is reasonlab's α = α_p − β_p, the entropy bonus on top "
                        "of DPO/KTO (%s). To give the paper's numbers, set entro_alpha and pref_beta instead.",
                        at, a, b, PAPER_EXAMPLE)
        return a, b
    if entro_alpha is None or pref_beta is None:
        raise ValueError(f"{at}the paper's parameterisation needs both entro_alpha (α_p) and pref_beta (β_p); "
                         f"got entro_alpha={entro_alpha}, pref_beta={pref_beta} ({PAPER_EXAMPLE})")
    if not (math.isfinite(pref_beta) and pref_beta > 0 and math.isfinite(entro_alpha)):
        raise ValueError(f"{at}pref_beta must be > 0 and entro_alpha finite; got {pref_beta}, {entro_alpha}")
    if entro_alpha < pref_beta - 1e-12:
        raise ValueError(f"{at}entro_alpha={entro_alpha} < pref_beta={pref_beta}: α = entro_alpha − pref_beta "
                         "would be negative (less entropy than plain DPO/KTO), which is not implemented; "
                         f"entro_alpha = pref_beta is plain DPO/KTO ({PAPER_EXAMPLE})")
    a, b = round(entro_alpha - pref_beta, 12), float(pref_beta)
    if (alpha is not None and abs(alpha - a) > 1e-9) or (beta is not None and abs(beta - b) > 1e-9):
        raise ValueError(f"{at}both parameterisations given and they disagree: alpha={alpha}, beta={beta} "
                         f"(ours) vs entro_alpha={entro_alpha}, pref_beta={pref_beta} (the paper's, = alpha={a}, "
                         f"beta={b}); give one of them ({PAPER_EXAMPLE})")
    return a, b


def describe_entropy(alpha: float, beta: float) -> str:
    """Both parameterisations of one setting, for logs and reports."""
    return (f"alpha={alpha:g}, beta={beta:g} (reasonlab: E[u] − β·KL + α·H) = entro_alpha={alpha + beta:g}, "
            f"pref_beta={beta:g} (paper: α_p·H(π) − β_p·H(π, π_ref))")


def _tokenizer(processing_class: Any) -> Any:
    if processing_class is None:
        raise ValueError("pass processing_class: the tokenizer the dataset was tokenized with")
    tok = getattr(processing_class, "tokenizer", processing_class)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


_PAPER_HELP = ("The paper's α_p (with pref_beta = β_p): α = entro_alpha − pref_beta, β = pref_beta. "
               "Leave alpha at 0 (or give the same objective).")


def _resolve_config(cfg: Any) -> None:
    """Fold the paper's entro_alpha/pref_beta into alpha/beta (the dataclass cannot tell a β left at
    TRL's default from one typed in: a β equal to 0.1 counts as not given)."""
    if cfg.entro_alpha is None and cfg.pref_beta is None:
        return
    cfg.alpha, cfg.beta = resolve_entropy(cfg.alpha or None, None if cfg.beta == 0.1 else cfg.beta,
                                          cfg.entro_alpha, cfg.pref_beta, where=type(cfg).__name__)
    log.info("%s: %s", type(cfg).__name__, describe_entropy(cfg.alpha, cfg.beta))


@dataclass
class EntroPODPOConfig(DPOConfig):
    alpha: float = field(default=0.0, metadata={"help": "EntroPO entropy coefficient α >= 0; 0 = TRL's DPO."})
    entro_alpha: float | None = field(default=None, metadata={"help": _PAPER_HELP})
    pref_beta: float | None = field(default=None, metadata={"help": "The paper's β_p (see entro_alpha)."})

    def __post_init__(self):
        _resolve_config(self)
        super().__post_init__()


@dataclass
class EntroPOKTOConfig(KTOConfig):
    alpha: float = field(default=0.0, metadata={"help": "EntroPO entropy coefficient α >= 0; 0 = TRL's KTO."})
    entro_alpha: float | None = field(default=None, metadata={"help": _PAPER_HELP})
    pref_beta: float | None = field(default=None, metadata={"help": "The paper's β_p (see entro_alpha)."})
    kto_form: str = field(default="derived", metadata={
        "help": "'derived': entropy in the per-example reward and the reference point (ours); 'released': "
                "only in the reference point, as the authors' released code."})

    def __post_init__(self):
        if self.kto_form not in KTO_FORMS:
            raise ValueError(f"kto_form must be one of {KTO_FORMS}, got {self.kto_form!r}")
        _resolve_config(self)
        super().__post_init__()


KTO_FORMS = ("derived", "released")


class EntroPODPOTrainer(DPOTrainer):
    """TRL's DPOTrainer with the EntroPO-DPO loss (module docstring) and Episode policy masks.

    ``train_dataset`` may be :func:`reasonlab.train.preference_data.pairs_to_dataset` output
    (pre-tokenized, with policy masks) or any dataset TRL's DPOTrainer accepts.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "dpo", "entropo"]

    def __init__(self, model, ref_model=None, args: DPOConfig | None = None, data_collator=None,
                 train_dataset=None, eval_dataset=None, processing_class=None, **kwargs):
        args = args if args is not None else EntroPODPOConfig("entropo-dpo")
        self.alpha = _check_alpha(getattr(args, "alpha", 0.0))
        if self.alpha and (args.loss_type not in (["sigmoid"], ["sigmoid", "sft"])
                           or args.f_divergence_type != "reverse_kl"):
            raise ValueError("EntroPO-DPO is derived for loss_type=['sigmoid'] (optionally with the 'sft' term) "
                             f"with f_divergence_type='reverse_kl'; got {args.loss_type} / {args.f_divergence_type}")
        if data_collator is None:
            data_collator = EpisodePreferenceCollator(
                pad_token_id=_tokenizer(processing_class).pad_token_id, max_length=args.max_length,
                truncation_mode=args.truncation_mode, pad_to_multiple_of=args.pad_to_multiple_of)
        super().__init__(model, ref_model=ref_model, args=args, data_collator=data_collator,
                         train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)
        self.tau = self.args.beta / (self.args.beta + self.alpha)
        self.beta = self.args.beta + self.alpha  # TRL's β slot holds the EntroPO inverse temperature β+α

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "chosen_policy_mask" not in _columns(dataset):
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if args.truncation_mode == "keep_end":
            return dataset
        return dataset.filter(lambda e: _trainable(e["prompt_ids"], e["chosen_policy_mask"], args.max_length)
                              and _trainable(e["prompt_ids"], e["rejected_policy_mask"], args.max_length))

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "chosen_policy_mask", "rejected_policy_mask"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        if "ref_chosen_logps" in inputs:  # precomputed by TRL (precompute_ref_log_probs=True)
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(_reference(self), inputs)
        inputs["ref_chosen_logps"] = tempered_reference(ref_chosen, self.tau)
        inputs["ref_rejected_logps"] = tempered_reference(ref_rejected, self.tau)
        return _with_given_reference(self, super().compute_loss, model, inputs, return_outputs,
                                     num_items_in_batch)


class EntroPOKTOTrainer(KTOTrainer):
    """TRL's KTOTrainer with the EntroPO-KTO loss (module docstring) and Episode policy masks.

    ``train_dataset`` may be :func:`reasonlab.train.preference_data.unpaired_to_dataset` output
    (pre-tokenized, with policy masks) or any dataset TRL's KTOTrainer accepts.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "kto", "entropo"]

    def __init__(self, model, ref_model=None, args: KTOConfig | None = None, data_collator=None,
                 train_dataset=None, eval_dataset=None, processing_class=None, **kwargs):
        args = args if args is not None else EntroPOKTOConfig("entropo-kto")
        self.alpha = _check_alpha(getattr(args, "alpha", 0.0))
        if self.alpha and args.loss_type != "kto":
            raise ValueError(f"EntroPO-KTO is derived for loss_type='kto'; got {args.loss_type!r}")
        if data_collator is None:
            data_collator = EpisodeUnpairedCollator(pad_token_id=_tokenizer(processing_class).pad_token_id,
                                                    max_length=args.max_length,
                                                    pad_to_multiple_of=args.pad_to_multiple_of)
        super().__init__(model, ref_model=ref_model, args=args, data_collator=data_collator,
                         train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)
        self.kto_form = getattr(args, "kto_form", "derived")
        if self.kto_form == "released":
            if self.alpha and not self.calculate_KL:
                raise ValueError("the released EntroPO-KTO form needs TRL's KL estimate (loss_type='kto')")
            self.tau = 1.0  # per-example reward is TRL's β·log(π/π_ref); α only moves the reference point
        else:
            self.tau = self.args.beta / (self.args.beta + self.alpha)
            self.beta = self.args.beta + self.alpha  # TRL's β slot holds the EntroPO inverse temperature β+α

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "completion_policy_mask" not in _columns(dataset):
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        dataset = dataset.filter(
            lambda e: _trainable(e["prompt_ids"], e["completion_policy_mask"], args.max_length))
        if self.calculate_KL:
            # As TRL: the KL completion of example i is the completion of example i-1 of the same batch.
            def rotate(batch):
                for key in ("completion_ids", "completion_policy_mask"):
                    batch[f"KL_{key}"] = [batch[key][-1]] + batch[key][:-1]
                return batch

            dataset = dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "completion_policy_mask",
                                       "KL_completion_policy_mask"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        if "ref_logps" in inputs:  # precomputed by TRL (precompute_ref_log_probs=True)
            ref, ref_kl = inputs["ref_logps"], inputs.get("ref_KL_logps")
        else:
            ref, ref_kl = self.compute_ref_log_probs(_reference(self), inputs)
        if self.kto_form == "released" and self.alpha:
            inputs["ref_logps"] = ref + self.alpha / self.beta * (self._kl_estimate(model, inputs, ref_kl)
                                                                  + ref.mean())
        else:
            inputs["ref_logps"] = tempered_reference(ref, self.tau, centered=True)
        if ref_kl is not None:
            inputs["ref_KL_logps"] = ref_kl  # TRL's KL estimate stays the plain KL(π‖π_ref)
        return _with_given_reference(self, super().compute_loss, model, inputs, return_outputs,
                                     num_items_in_batch)


    def _kl_estimate(self, model, inputs, ref_kl: torch.Tensor) -> torch.Tensor:
        """TRL's KL̂ (mean over mismatched pairs, gathered, clamped at 0), without gradient."""
        with torch.no_grad():
            kl = (self._compute_kl_logps(model, inputs) - ref_kl).mean().detach()
        return self.accelerator.gather_for_metrics(kl).mean().clamp(min=0)


def _reference(trainer: DPOTrainer | KTOTrainer) -> torch.nn.Module:
    """The reference model as TRL's precompute uses it (the policy with adapters off under PEFT)."""
    return trainer.ref_model if trainer.ref_model is not None else trainer.model


def _with_given_reference(trainer, compute_loss, *args):
    """Run TRL's loss reading the reference log-probs from the inputs (its precomputed-reference path)."""
    saved, trainer.precompute_ref_logps = trainer.precompute_ref_logps, True
    try:
        return compute_loss(*args)
    finally:
        trainer.precompute_ref_logps = saved


# ---------------------------------------------------------------------------------------------------
# Python API: Episodes in, model out


class PreferenceSettings(Strict):
    model: str = Field(..., description="model to train (also the reference): name, HF folder or hub name")
    data: list[str] = Field(..., description="scored Episode JSONL files")
    out: str = Field("runs/preference", description="run directory")
    method: Literal["dpo", "kto"] = "dpo"
    alpha: float = Field(0.0, ge=0, description="EntroPO entropy coefficient (ours: α = α_p − β_p); "
                                                "0 = TRL's DPO/KTO")
    beta: float = Field(0.1, gt=0, description="KL coefficient")
    entro_alpha: float | None = Field(None, description="the paper's α_p, with pref_beta, instead of alpha/beta: "
                                                        "α = entro_alpha − pref_beta (0.11, 0.1 → α = 0.01)")
    pref_beta: float | None = Field(None, gt=0, description="the paper's β_p (= beta)")
    kto_form: Literal["derived", "released"] = Field(
        "derived", description="EntroPO-KTO: 'derived' (ours) or 'released' (entropy only in the reference point)")
    pairing: Literal["random", "all", "hardest"] = Field("random", description="DPO pairs per problem")
    sft_weight: float = Field(0.0, ge=0, description="DPO: weight of a negative log-likelihood term on the chosen "
                              "trajectory (RPO; TRL's loss_type 'sft'), which keeps DPO from lowering the "
                              "chosen trajectories' likelihood; 0 = plain DPO")
    max_pairs_per_problem: int | None = Field(None, ge=1,
                                              description="None = the pairing's default (1; all: no cap)")
    per_problem: int | None = Field(None, ge=1,
                                    description="KTO: cap on desirable, and on undesirable, per problem")
    desirable_weight: float = Field(1.0, gt=0, description="KTO λ_D")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO λ_U")
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    lr: float = Field(1e-6, gt=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(8, ge=1, description="pairs (DPO) or trajectories (KTO, >= 2) per device step")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8, description="tokens a trajectory, prompt included; the rest is cut")
    dtype: Literal["auto", "fp32", "bf16"] = Field("fp32", description="bf16 = autocast on fp32 master weights; "
                                                   "auto = bf16 where the hardware runs it fast, else fp32")
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(5, ge=1)
    seed: int = 0
    lora: LoRASettings | None = Field(None, description="LoRA adapters instead of full fine-tuning (null = full); "
                                      "the reference is then the model with adapters off, not a copy")

    @model_validator(mode="after")
    def _entropy(self):
        given = self.model_fields_set
        alpha, beta = resolve_entropy(self.alpha if "alpha" in given else None,
                                      self.beta if "beta" in given else None, self.entro_alpha, self.pref_beta)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)
        return self

    @model_validator(mode="after")
    def _kto_batch(self):
        if self.method == "kto" and self.sft_weight:
            raise ValueError("sft_weight: an NLL term on the chosen trajectory is a DPO option (RPO); KTO has no "
                             "chosen trajectory. Set sft_weight: 0 for KTO")
        if self.method == "kto" and self.batch_size < 2:
            raise ValueError("KTO needs batch_size >= 2: its KL reference point pairs each prompt with "
                             "another example's completion in the same batch")
        return self


def build_preference_dataset(cfg: PreferenceSettings, tokenizer: Any):
    """The training set of ``cfg`` (pairs for DPO, labelled trajectories for KTO) and its statistics."""
    from reasonlab.episode import read_episodes
    from reasonlab.train.preference_data import (
        make_pairs,
        make_unpaired,
        pairs_to_dataset,
        unpaired_to_dataset,
    )

    episodes, source = [], {}
    for path in cfg.data:
        if not Path(path).exists():
            raise FileNotFoundError(f"data file {path} does not exist")
        for e in read_episodes(path):
            source[id(e)] = Path(path).stem
            episodes.append(e)
    stats = {"episodes": len(episodes), "correct": sum(e.correct for e in episodes)}
    if cfg.method == "dpo":
        pairs = make_pairs(episodes, cfg.pairing, max_pairs_per_problem=cfg.max_pairs_per_problem,
                           seed=cfg.seed)
        stats["pairs"] = len(pairs)
        # which data file each side came from, e.g. {"teacher > eval": 97}: chosen from the teacher's file
        stats["pairs_by_source"] = dict(Counter(f"{source[id(c)]} > {source[id(r)]}" for c, r in pairs))
        return pairs_to_dataset(pairs, tokenizer), stats
    items = make_unpaired(episodes, per_problem=cfg.per_problem, seed=cfg.seed)
    n_d, n_u = sum(label for _, label in items), sum(not label for _, label in items)
    stats.update(desirable=n_d, undesirable=n_u, labels_by_source=dict(Counter(
        f"{source[id(e)]}:{'desirable' if label else 'undesirable'}" for e, label in items)))
    ratio = cfg.desirable_weight * n_d / (cfg.undesirable_weight * n_u) if n_u else math.inf
    if not 1 <= ratio <= 4 / 3:  # Eq. (8) of the KTO paper, as TRL checks it for text datasets
        log.warning("KTO data: %d desirable, %d undesirable; λ_D·n_D/(λ_U·n_U) = %.2f, the KTO paper "
                    "recommends [1, 4/3]: set desirable_weight/undesirable_weight", n_d, n_u, ratio)
    return unpaired_to_dataset(items, tokenizer), stats


def build_preference_trainer(cfg: PreferenceSettings, *, show_progress: bool = True):
    """The EntroPO-DPO/KTO trainer for ``cfg``, its tokenizer and data statistics. With ``cfg.lora`` TRL
    wraps the model with the adapters and, having no ref_model, uses it with adapters disabled as the reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonlab.models import CHATML_TEMPLATE, resolve_model

    out = Path(cfg.out)
    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset, stats = build_preference_dataset(cfg, tokenizer)
    log.warning("%s%s: %s", cfg.method.upper(), f" ({cfg.kto_form} form)" if cfg.method == "kto" else "",
                describe_entropy(cfg.alpha, cfg.beta))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = None
    if cfg.lora is not None:
        from reasonlab.train.lora import peft_config

        lora = peft_config(cfg.lora, model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_yaml(cfg))
    common = {
        "output_dir": str(out / "checkpoints"),
        "alpha": cfg.alpha,
        "beta": cfg.beta,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "learning_rate": cfg.lr,
        "lr_scheduler_type": cfg.lr_schedule,
        "warmup_steps": cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "max_length": cfg.max_length,
        "bf16": train_dtype(cfg.dtype) == "bf16",
        "use_cpu": not torch.cuda.is_available(),
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "logging_steps": cfg.logging_steps,
        "report_to": "none",
        "seed": cfg.seed,
        "disable_tqdm": not show_progress,
        "dataloader_num_workers": 0,
    }
    if cfg.method == "dpo":
        rpo = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]} if cfg.sft_weight else {}
        trainer = EntroPODPOTrainer(model=model, args=EntroPODPOConfig(**common, **rpo), train_dataset=dataset,
                                    processing_class=tokenizer, peft_config=lora)
    else:
        args = EntroPOKTOConfig(**common, desirable_weight=cfg.desirable_weight, kto_form=cfg.kto_form,
                                undesirable_weight=cfg.undesirable_weight)
        trainer = EntroPOKTOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                    peft_config=lora)
    if not show_progress:  # quiet: no per-log dict printed either (log_history.json keeps them)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer, tokenizer, stats


def train_preference(cfg: PreferenceSettings, *, show_progress: bool = True) -> Path:
    """EntroPO-DPO/KTO on scored Episodes; returns the final model folder ``out/final``.

    Checkpoints go to ``out/checkpoints`` (TRL/HF); a re-run resumes from the last one. With LoRA,
    checkpoints hold the adapters, ``out/final`` the merged model and ``out/final/adapter`` the adapters.
    """
    from reasonlab.train.sft import save_final

    out = Path(cfg.out)
    trainer, tokenizer, stats = build_preference_trainer(cfg, show_progress=show_progress)
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    resumed = str(ckpts[-1]) if ckpts else None
    if resumed:
        log.warning("resuming %s from %s", cfg.method.upper(), resumed)
    trainer.train(resume_from_checkpoint=resumed)
    final = out / "final"
    save_final(trainer, tokenizer, final, cfg.lora is not None)
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    (out / "preference_state.json").write_text(json.dumps({
        "method": cfg.method, "alpha": cfg.alpha, "beta": cfg.beta, "entro_alpha": cfg.alpha + cfg.beta,
        "pref_beta": cfg.beta, "kto_form": cfg.kto_form if cfg.method == "kto" else None, "resumed_from": resumed,
        "final": str(final),
        "examples": len(trainer.train_dataset), "global_step": trainer.state.global_step, **stats}))
    return final
