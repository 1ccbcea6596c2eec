"""Chat messages → prompt token ids, via the tokenizer's chat template."""

from __future__ import annotations

from typing import Any


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` rendered by the chat template (plus the assistant header)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    if hasattr(out, "keys"):  # transformers >= 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)
