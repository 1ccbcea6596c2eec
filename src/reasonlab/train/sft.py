"""Supervised fine-tuning on Episodes through TRL's SFTTrainer, loss only where the mask is 1.

Episodes are re-tokenized from their ``messages`` with the *trained model's* tokenizer (the
messages are the source of truth; an Episode may come from another model or from the synthetic
priming generator), in exactly the layout the agent loop produces:

    chat-template(prompt messages, with the assistant header)   mask 0
    assistant text                                                mask 1
    tool output (```output block), inline in the same turn        mask 0
    assistant text … end-of-turn token                            mask 1

The mask goes to TRL as the ``assistant_masks`` column of a pre-tokenized dataset, which TRL turns
into labels (−100 where the mask is 0); multi-turn conversations are handled the same way.
Checkpoints are TRL/HF checkpoints in ``out/checkpoints``; a re-run resumes from the last one; the
final model is written to ``out/final`` (a plain HF folder). With ``lora:`` (see
:mod:`reasonlab.train.lora`) only adapters train; checkpoints hold the adapters, ``out/final`` the
merged model and ``out/final/adapter`` the adapters alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from reasonlab.config import Strict, dump_yaml
from reasonlab.episode import Episode, read_episodes
from reasonlab.rollout.chat import encode_chat
from reasonlab.rollout.hf import train_dtype
from reasonlab.train.lora import LoRASettings

log = logging.getLogger(__name__)


class SFTSettings(Strict):
    model: str = Field(..., description="model to fine-tune: name, HF folder or hub name")
    data: list[str] = Field(..., description="Episode JSONL files")
    out: str = Field("runs/sft", description="run directory")
    only_correct: bool = Field(False, description="keep only episodes with correct = true (rejection sampling)")
    cap_per_task: int | None = Field(None, ge=1, description="keep at most this many episodes per task (R1-CI: 70)")
    suite: str | None = Field(None, description="keep only episodes of this suite's train tasks, e.g. r1ci; "
                              "its held-out test tasks never reach training")
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    lr: float = Field(1e-5, gt=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8)
    dtype: Literal["auto", "fp32", "bf16"] = Field("fp32", description="bf16 = autocast on fp32 master weights; "
                                                   "auto = bf16 where the hardware runs it fast, else fp32")
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(5, ge=1)
    seed: int = 0
    lora: LoRASettings | None = Field(None, description="LoRA adapters instead of full fine-tuning (null = full)")


def tokenize_episode(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) for a conversation, in the agent loop's layout (see module docstring)."""
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    prompt = messages[:first]
    ids = encode_chat(tokenizer, prompt) if prompt else []
    mask = [0] * len(ids)
    for m in messages[first:]:
        piece = tokenizer(m["content"], add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [1 if m["role"] == "assistant" else 0] * len(piece)
    if first < len(messages):
        eot = end_of_turn_id(tokenizer)
        ids.append(eot)
        mask.append(1)  # the model must learn to stop
    return ids, mask


def end_of_turn_id(tokenizer: Any) -> int:
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
        return tid
    return tokenizer.eos_token_id


def episodes_to_dataset(episodes: list[Episode], tokenizer: Any, max_length: int):
    from datasets import Dataset

    rows = {"input_ids": [], "assistant_masks": []}
    dropped = 0
    for e in episodes:
        ids, mask = tokenize_episode(tokenizer, e.messages)
        if 1 not in mask[:max_length]:
            dropped += 1  # nothing to learn within max_length (or no assistant turn)
            continue
        rows["input_ids"].append(ids[:max_length])
        rows["assistant_masks"].append(mask[:max_length])
    if dropped:
        log.warning("%d episode(s) have no assistant tokens within max_length=%d and were skipped", dropped, max_length)
    if not rows["input_ids"]:
        raise ValueError("no trainable episodes: every episode lacks assistant text (or max_length is too small)")
    return Dataset.from_dict(rows)


def select_episodes(eps: list[Episode], *, only_correct: bool = False, cap_per_task: int | None = None,
                    suite: str | None = None, seed: int = 0) -> tuple[list[Episode], dict[str, int]]:
    """Rejection sampling and per-task caps for SFT data, and a suite's task-level split.

    With ``suite``, episodes of tasks outside the suite's *train* tasks are dropped (and counted),
    so a held-out test task never reaches training. Without it, data that mixes a suite's train
    tasks with its held-out test tasks gets a warning (the same tasks may be trained on outside
    the suite's protocol, so it is not refused).
    The cap keeps, per task, the first ``cap_per_task`` episodes of a seeded shuffle (spread over
    problems rather than the first problem's samples).
    """
    import random

    from reasonlab.tasks.base import stable_hash
    from reasonlab.tasks.suites import parse_suite, suite_tasks

    counts = {"read": len(eps), "not_in_suite_train": 0, "incorrect": 0, "over_cap": 0}
    if suite is not None:
        name, _ = parse_suite(suite, "train")
        train = set(suite_tasks(name, "train"))
        keep = [e for e in eps if e.task in train]
        counts["not_in_suite_train"] = len(eps) - len(keep)
        eps = keep
    mixed = _suite_members_seen(eps)
    if mixed:
        log.warning("SFT data holds held-out test tasks of a suite (%s) next to its train tasks; pass suite=NAME "
                    "(--suite) to drop them", ", ".join(sorted(mixed)[:5]))
    if only_correct:
        keep = [e for e in eps if e.correct]
        counts["incorrect"] = len(eps) - len(keep)
        eps = keep
    if cap_per_task is not None:
        order = list(range(len(eps)))
        random.Random(stable_hash("sft-cap", seed)).shuffle(order)
        taken: dict[str, int] = {}
        chosen = []
        for i in order:
            t = eps[i].task
            if taken.get(t, 0) < cap_per_task:
                taken[t] = taken.get(t, 0) + 1
                chosen.append(i)
        counts["over_cap"] = len(eps) - len(chosen)
        eps = [eps[i] for i in sorted(chosen)]
    counts["kept"] = len(eps)
    return eps, counts


def _suite_members_seen(eps: list[Episode]) -> list[str]:
    """Tasks of the data that a suite holds out, when the data also has that suite's train tasks."""
    from reasonlab.tasks.suites import SUITES, suite_tasks

    tasks = {e.task for e in eps}
    out = []
    for name, s in SUITES.items():
        if tasks & set(suite_tasks(name, "train")):
            out += [t for t in s["test"] if t in tasks]
    return out


def load_training_episodes(cfg: SFTSettings) -> list[Episode]:
    eps: list[Episode] = []
    for path in cfg.data:
        if not Path(path).exists():
            raise FileNotFoundError(f"data file {path} does not exist")
        eps += read_episodes(path)
    eps, counts = select_episodes(eps, only_correct=cfg.only_correct, cap_per_task=cfg.cap_per_task,
                                  suite=cfg.suite, seed=cfg.seed)
    if counts["kept"] < counts["read"]:
        log.warning("SFT data: kept %d of %d episodes (%s)", counts["kept"], counts["read"],
                    ", ".join(f"{k}: {v}" for k, v in counts.items() if k not in ("read", "kept") and v))
    if not eps:
        raise ValueError(f"no episodes to train on in {cfg.data}" + (" (only_correct=true)" if cfg.only_correct else "")
                         + (f" (suite={cfg.suite}: only its train tasks)" if cfg.suite else ""))
    return eps


def build_sft_trainer(cfg: SFTSettings, *, show_progress: bool = True):
    """TRL's SFTTrainer for ``cfg`` (the model wrapped with LoRA adapters when ``cfg.lora`` is set)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from reasonlab.models import CHATML_TEMPLATE, resolve_model

    out = Path(cfg.out)
    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not show_progress:  # quiet: no datasets map bars (TRL tokenises and truncates through them)
        import datasets

        datasets.disable_progress_bars()
    dataset = episodes_to_dataset(load_training_episodes(cfg), tokenizer, cfg.max_length)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = None
    if cfg.lora is not None:
        from reasonlab.train.lora import peft_config

        lora = peft_config(cfg.lora, model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_yaml(cfg))
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_schedule,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length,
        bf16=train_dtype(cfg.dtype) == "bf16",
        use_cpu=not torch.cuda.is_available(),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to="none",
        seed=cfg.seed,
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora)
    if not show_progress:  # quiet: no per-log dict printed either (the loss history is saved below)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer, tokenizer, dataset


def save_final(trainer, tokenizer, final: Path, lora: bool) -> None:
    """``final``: a plain HF folder; with LoRA the adapters merged in, and alone in ``final/adapter``."""
    if lora:
        from reasonlab.train.lora import save_lora

        save_lora(trainer.accelerator.unwrap_model(trainer.model), final)
    else:
        trainer.save_model(str(final))
    tokenizer.save_pretrained(final)


def train_sft(cfg: SFTSettings, *, show_progress: bool = True) -> Path:
    """Fine-tune and return the folder of the final model (``out/final``)."""
    out = Path(cfg.out)
    trainer, tokenizer, dataset = build_sft_trainer(cfg, show_progress=show_progress)
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    resumed = str(ckpts[-1]) if ckpts else None
    if resumed:
        log.warning("resuming SFT from %s", resumed)
    trainer.train(resume_from_checkpoint=resumed)
    final = out / "final"
    save_final(trainer, tokenizer, final, cfg.lora is not None)
    import json

    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    (out / "sft_state.json").write_text(json.dumps({"resumed_from": resumed, "final": str(final),
                                                    "episodes": len(dataset), "global_step": trainer.state.global_step}))
    return final
