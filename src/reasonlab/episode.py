"""Core data shared by every stage: Problem, Score and Episode, plus JSONL I/O.

An Episode is the one interchange format between rollouts, training and analysis (see
ARCHITECTURE.md). It is a flat JSON object per line so that ``datasets.load_dataset("json")``,
``jq`` and pandas read it without help from reasonlab.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator


@dataclass
class Problem:
    """One task instance. ``answer``/``metadata`` hold whatever the task's scorer needs."""

    id: str
    task: str
    split: str
    question: str
    answer: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Score:
    """What a task says about one response.

    ``answer`` is the normalised final answer (for majority voting), ``None`` when absent.
    """

    reward: float
    correct: bool
    format_ok: bool
    answer: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    """One sampled trajectory for one problem, scored.

    ``tokens`` covers prompt and completion(s); ``mask[i]`` is 1 where token i was produced by the
    policy and 0 for prompt or tool-output tokens. ``logprobs`` (when recorded) is aligned with
    ``tokens`` and is 0.0 where ``mask`` is 0.
    """

    task: str
    problem_id: str
    sample_index: int
    messages: list[dict[str, str]]
    tokens: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    reward: float = 0.0
    correct: bool = False
    format_ok: bool = False
    answer: str | None = None
    score_details: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    behaviors: dict[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def completion(self) -> str:
        """Concatenated assistant text (the policy's output)."""
        return "".join(m["content"] for m in self.messages if m["role"] == "assistant")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Episode":
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("task", "problem_id", "sample_index", "messages") if n not in d]
        if missing:
            raise ValueError(f"episode is missing required field(s) {missing}")
        return cls(**{k: v for k, v in d.items() if k in names})


class JSONLError(ValueError):
    """A JSONL file has a line that is not valid JSON (names the file and line)."""


def read_jsonl(path: str | os.PathLike, *, tolerate_truncated_tail: bool = True) -> Iterator[dict]:
    """Yield one dict per line.

    A broken line raises :class:`JSONLError` naming the file and line number, except a broken
    *last* line without a trailing newline, which is what an interrupted writer leaves behind:
    it is skipped (``tolerate_truncated_tail``) so that resuming loses nothing that was complete.
    """
    path = Path(path)
    with path.open("rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    last_complete = data.endswith(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            is_tail = i == len(lines) and not last_complete
            if is_tail and tolerate_truncated_tail:
                return
            raise JSONLError(
                f"{path}:{i}: not valid JSON ({e.__class__.__name__}: {e}). "
                f"Fix or delete that line; every other line is intact."
            ) from None
        if not isinstance(obj, dict):
            raise JSONLError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        yield obj


def read_episodes(path: str | os.PathLike) -> list[Episode]:
    out = []
    for i, d in enumerate(read_jsonl(path), start=1):
        try:
            out.append(Episode.from_dict(d))
        except (TypeError, ValueError) as e:
            raise JSONLError(f"{path}: record {i}: {e}") from None
    return out


def append_jsonl(path: str | os.PathLike, records: Iterable[dict | Episode], *, fsync: bool = True) -> None:
    """Append records, each on its own line, flushed (and fsynced) so a crash loses at most the
    last partial line, which :func:`read_jsonl` ignores."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # If a previous writer died mid-line, start on a fresh line so the new record stays valid.
    needs_newline = False
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            needs_newline = f.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as f:
        if needs_newline:
            f.write("\n")
        for r in records:
            d = r.to_dict() if hasattr(r, "to_dict") else r
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
