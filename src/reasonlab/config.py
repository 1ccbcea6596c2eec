"""Configs: pydantic models loaded from YAML, with errors that name the bad field and the fix.

A config file is plain YAML; command-line options override its fields. Unknown fields are errors
(a typo must not silently fall back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config could not be read or validated; the message says where and what to do."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingConfig(Strict):
    temperature: float = Field(1.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = off")
    max_new_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)


class AgentSettings(Strict):
    """Multi-turn code-interpreter limits (used when ``tools`` includes python)."""

    max_turns: int = Field(6, ge=1)
    max_code_calls: int = Field(4, ge=0)
    max_total_tokens: int = Field(1024, ge=1, description="generated + tool-output tokens per episode")
    max_output_chars: int = Field(1024, ge=16, description="interpreter output shown to the model")
    code_timeout_s: float = Field(5.0, gt=0)
    code_memory_mb: int = Field(512, ge=32)


class EvalConfig(Strict):
    """`reasonlab eval`: sample n responses per problem and score them."""

    task: str = "countdown"
    task_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the task")
    model: str = "smollm2-135m"
    split: Literal["train", "test"] = "test"
    limit: int = Field(100, ge=1, description="number of problems")
    n: int = Field(16, ge=1, description="samples per problem")
    seed: int = 0
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    backend: Literal["hf", "vllm"] = Field("hf", description="vllm needs a CUDA GPU and the vllm extra")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device: str = "auto"
    batch_size: int = Field(64, ge=1, description="sequences decoded together")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="hf decoding loop: static KV cache, torch.compile-d once the job is big enough "
        "(auto), always compiled (on), or the plain reference loop (off)")
    out: str | None = Field(None, description="run directory (default runs/eval-<task>-<model>)")
    tools: list[Literal["python"]] = Field(default_factory=list, description="tools the model may call")
    agent: AgentSettings = Field(default_factory=AgentSettings)
    protocol: Literal["answer", "r1ci"] = Field(
        "answer", description="prompt/answer style: the task's own <answer> tags, or R1-Code-Interpreter's "
        "(<<<answer>>>, 'Code Execution Results:', at most 8 code calls, turn-format reward)")


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at the nested location ``loc`` (for 'unknown field' errors)."""
    cur: Any = model
    for part in loc[:-1]:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cur = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if cur is None:
            return []
    return list(getattr(cur, "model_fields", {}))


def format_validation_error(e: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid config ({e.error_count()} problem{'s' if e.error_count() > 1 else ''}):"]
    for err in e.errors():
        loc = tuple(err["loc"])
        name = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed(model, loc)
            lines.append(f"  - {name}: unknown field; allowed: {', '.join(allowed)}")
        elif err["type"] == "literal_error":
            lines.append(f"  - {name}: {err['input']!r} is not allowed; allowed: {err['ctx']['expected']}")
        else:
            lines.append(f"  - {name}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def validate(model: type[M], data: dict[str, Any], source: str = "config") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, source)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of field: value, got {type(data).__name__}")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "sampling.temperature", 0.7)``."""
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"cannot set {key}: {p} is not a mapping")
    cur[parts[-1]] = value


def load_config(model: type[M], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> M:
    """YAML file (optional) + dotted overrides (``None`` values ignored) → validated config."""
    data = load_yaml(path) if path else {}
    for k, v in (overrides or {}).items():
        if v is not None:
            set_dotted(data, k, v)
    return validate(model, data, str(path) if path else "options")


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
