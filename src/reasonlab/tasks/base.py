"""Task protocol, registry, and the split rule shared by every task.

A Task turns a seed into Problems, a Problem into chat messages, and a response text into a Score.
Scoring never ``eval``s model text.

Splits never overlap *by construction*: every candidate instance is hashed on its canonical
content (e.g. sorted numbers + target) into one of 100 buckets; buckets below ``test_percent``
belong to ``test``, the rest to ``train``. A generator walks a seeded stream and keeps only the
candidates of the requested split, so the same instance can never appear in both.
"""

from __future__ import annotations

import difflib
import hashlib
from typing import Any, Callable, Protocol, runtime_checkable

from reasonlab.episode import Problem, Score

SPLITS = ("train", "test")


@runtime_checkable
class Task(Protocol):
    name: str
    description: str

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]: ...

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]: ...

    def score(self, problem: Problem, text: str) -> Score: ...


def stable_hash(*parts: Any) -> int:
    """A 64-bit hash that is the same across processes and Python versions (unlike ``hash``)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def split_of(key: str, test_percent: int = 10) -> str:
    """The split an instance with canonical ``key`` belongs to."""
    return "test" if stable_hash("split", key) % 100 < test_percent else "train"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


TOOL_PROMPT = (
    "You can run Python code: write it in a block that starts with ```python and ends with ```. "
    "The block runs as soon as you close it and its output is shown to you in an ```output block; "
    "variables persist between your blocks. Use code when it helps, then give the final answer."
)


def system_prompt(base: str, tools: list[str] | None) -> str:
    """A task's system prompt, plus how to call the tools it is given."""
    return f"{base} {TOOL_PROMPT}" if tools and "python" in tools else base


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Task]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_LAZY: list[Callable[[], None]] = []


def register(name: str, description: str = "") -> Callable:
    """Decorator: ``@register("countdown")`` on a factory (class or function) returning a Task."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().split("\n")[0]
        return factory

    return deco


def register_lazy(loader: Callable[[], None]) -> None:
    """Register a function that registers many tasks when first needed (e.g. reasoning-gym)."""
    _LAZY.append(loader)


def _load_lazy() -> None:
    while _LAZY:
        _LAZY.pop(0)()


def list_tasks() -> dict[str, str]:
    """Name → one-line description of every registered task."""
    _load_lazy()
    return dict(sorted(_DESCRIPTIONS.items()))


def get_task(name: str, **kwargs: Any) -> Task:
    """Instantiate a registered task; unknown names get suggestions. ``file:PATH`` and ``hf:NAME``
    import an exact-answer dataset (:mod:`reasonlab.tasks.fileimport`); a ``protocol`` keyword
    (``answer`` or ``r1ci``) selects the prompt/answer style (:mod:`reasonlab.tasks.protocol`)."""
    protocol = kwargs.pop("protocol", "answer")
    if protocol != "answer":
        from reasonlab.tasks.protocol import wrap_protocol

        return wrap_protocol(get_task(name, **kwargs), protocol)
    if name.startswith("mix:"):  # an ad-hoc suite: mix:TASK,TASK,...
        from reasonlab.tasks.suites import mix_task

        return mix_task(name, **kwargs)
    if name.startswith(("file:", "hf:")):
        from reasonlab.tasks.fileimport import FileTask

        try:
            return FileTask(name, **kwargs)
        except TypeError as e:
            raise ValueError(f"bad arguments for task {name!r}: {e}") from None
    if name not in _REGISTRY:
        _load_lazy()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown task {name!r}.{hint} Run `reasonlab tasks list` to see all tasks.")
    try:
        return _REGISTRY[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad arguments for task {name!r}: {e}") from None


def answer_or_fail(text: str, max_chars: int = 4096):
    """The last ``<answer>`` of ``text``, or the zero Score to return when there is none or it is too long:
    ``(answer, None)`` or ``(None, score)`` (the shared first step of the exact-answer scorers)."""
    from reasonlab.episode import Score

    answer = extract_tag(text, "answer")
    if answer is None:
        return None, Score(0.0, False, False, None, {"error": "no <answer>...</answer>"})
    if len(answer) > max_chars:
        return None, Score(0.0, False, False, None, {"error": f"answer longer than {max_chars} chars"})
    return answer, None


def extract_tag(text: str, tag: str, *, max_chars: int = 200_000) -> str | None:
    """Content of the *last* ``<tag>…</tag>`` in ``text`` (as TinyZero does), or None.

    Linear time: uses ``rfind`` rather than a regex, so adversarial text cannot make it slow.
    """
    text = text[-max_chars:]
    close = text.rfind(f"</{tag}>")
    if close < 0:
        return None
    open_ = text.rfind(f"<{tag}>", 0, close)
    if open_ < 0:
        return None
    return text[open_ + len(tag) + 2 : close].strip()
