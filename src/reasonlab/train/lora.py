"""LoRA adapters (peft) for the RL engine, SFT and preference training: one config block, one wrapper.

A LoRA layer replaces the frozen weight W of a linear map by W + (α/r)·B·A, with A ∈ R^{r×in} and
B ∈ R^{out×r} trained and B = 0 at the start (Hu et al. 2021), so the adapted model starts as the base
model and only r·(in + out) numbers per targeted layer get gradients and AdamW states.

    lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear}   # or null (full fine-tuning)

Every trainer takes this block (``RLConfig.lora``, ``SFTSettings.lora``, ``PreferenceSettings.lora``).
Where a trainer needs a reference model (KL in RL, DPO/KTO), the reference is the policy with its
adapters disabled, not a second copy. Saved models: a plain HF folder with the adapters merged (what
evaluation, RL from an SFT checkpoint and verl read), and the adapters alone in peft's format
(``adapter_config.json`` + ``adapter_model.safetensors``), which ``peft.PeftModel.from_pretrained(base,
folder)`` loads on top of the base model.

peft is an optional extra: ``pip install 'reasonlab[lora]'``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from reasonlab.config import Strict

ALL_LINEAR = "all-linear"


class LoRASettings(Strict):
    r: int = Field(16, ge=1, description="adapter rank")
    alpha: float = Field(32.0, gt=0, description="scaling: the update is (alpha / r)·B·A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ALL_LINEAR, description="names (or name suffixes) of the linear layers to adapt, e.g. [q_proj, v_proj]; "
        "all-linear = every linear layer but the output head")

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v):
        if isinstance(v, list) and (not v or any(not isinstance(n, str) or not n.strip() for n in v)):
            raise ValueError("lora.target_modules must be 'all-linear' or a non-empty list of module names "
                             "such as [q_proj, k_proj, v_proj, o_proj]")
        return v


def require_peft():
    """The peft module, or an ImportError saying how to install it."""
    try:
        import peft
    except ImportError as e:
        raise ImportError("lora: is set but peft is not installed; install the extra with "
                          "pip install 'reasonlab[lora]' (or pip install peft), or set lora: null") from e
    return peft


def _output_head_names(model: Any) -> set[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {n for n, m in model.named_modules() if head is not None and m is head}


def target_linear_modules(model: Any, settings: LoRASettings) -> dict[str, Any]:
    """Name → nn.Linear the adapters go on (peft's rule: a module matches a target if its name is the
    target or ends with '.target'; all-linear skips the output head). Raises naming the field if none."""
    from torch import nn

    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if settings.target_modules == ALL_LINEAR:
        heads = _output_head_names(model)
        chosen = {n: m for n, m in linears.items() if n not in heads}
    else:
        chosen = {n: m for n, m in linears.items()
                  if any(n == t or n.endswith("." + t) for t in settings.target_modules)}
    if not chosen:
        kinds = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise ValueError(f"lora.target_modules {settings.target_modules} matches no linear layer of this model; "
                         f"its linear layers are named {kinds} (or use 'all-linear')")
    return chosen


def adapter_param_count(model_config: Any, settings: LoRASettings) -> int:
    """Trained parameters of the adapters, r·(in + out) per targeted layer, from a transformers config
    (the model is built on the meta device: no memory, no weights read)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return sum(settings.r * (m.in_features + m.out_features) for m in target_linear_modules(model, settings).values())


def peft_config(settings: LoRASettings, model: Any):
    """peft's LoraConfig for a causal LM, after checking the targets exist in ``model``."""
    peft = require_peft()
    target_linear_modules(model, settings)
    targets = settings.target_modules if settings.target_modules == ALL_LINEAR else list(settings.target_modules)
    return peft.LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                           target_modules=targets, bias="none", task_type="CAUSAL_LM")


def wrap(model: Any, settings: LoRASettings):
    """The model with adapters injected (a peft PeftModel); only adapter weights require grad."""
    peft = require_peft()
    return peft.get_peft_model(model, peft_config(settings, model))


def is_adapter_param(name: str) -> bool:
    return "lora_" in name


def merged_copy(peft_model: Any):
    """A plain transformers model with the adapters merged in; the training model is left untouched
    (merging in place and unmerging would round the frozen weights)."""
    return copy.deepcopy(peft_model).merge_and_unload()


def save_lora(peft_model: Any, folder: str | Path, *, merged: bool = True, adapter_dir: str = "adapter") -> None:
    """``folder``: the merged model (a plain HF folder) when ``merged``; ``folder/adapter_dir``: the adapters."""
    folder = Path(folder)
    peft_model.save_pretrained(folder / adapter_dir, safe_serialization=True)
    if merged:
        merged_copy(peft_model).save_pretrained(folder, safe_serialization=True)


def load_adapter_weights(peft_model: Any, adapter_folder: str | Path) -> None:
    """Load saved adapter weights into an already wrapped model (resume)."""
    peft = require_peft()
    from safetensors.torch import load_file

    sd = load_file(str(Path(adapter_folder) / "adapter_model.safetensors"))
    result = peft.set_peft_model_state_dict(peft_model, sd)
    if getattr(result, "unexpected_keys", None):
        raise RuntimeError(f"adapter in {adapter_folder} does not match the model: unexpected {result.unexpected_keys}")
