"""Exact-answer datasets from files: ``--task file:PATH`` (JSONL, JSON, Parquet) and ``hf:NAME``.

Shapes read without any option:

- BIG-Bench-Hard's own task files: ``{"examples": [{"input": ..., "target": ...}, ...]}``;
- question/answer rows (JSONL, a JSON list, or Parquet): the question from the first of
  ``question, input, problem, prompt``, the answer from the first of ``answer, target, solution``;
- GSM8K: ``{"question", "answer": "...reasoning... #### 72"}`` — the part after ``####`` is the answer.

``question_field``/``answer_field`` pick other columns. Scorers (``scorer=``): ``exact`` (normalised:
case, spaces, a trailing period), ``numeric`` (relative/absolute tolerance ``tolerance``; ``1,234``,
``$5``, ``50%`` and ``3/4`` read as numbers), ``choice`` (multiple choice: ``(B)``, ``B`` or ``B)``
match the target ``(B)``), or ``python:FILE.py:FUNC`` / ``python:module:FUNC``, a per-dataset checker
``FUNC(answer: str, target: str, row: dict) -> bool | float``. The default, ``auto``, picks ``choice``
when every target looks like ``(X)``, ``numeric`` when every target is a number, else ``exact``.

The model answers inside ``<answer>…</answer>`` (or ``<<<…>>>`` with the R1-CI protocol). Rows are
split into train/test by hashing the question (``test_percent``, default 10; 100 = all test).
A malformed file gets an error naming the file, the line (or record) and the missing field.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from reasonlab.episode import Problem, Score
from reasonlab.tasks.base import answer_or_fail, check_split, split_of, stable_hash, system_prompt
from reasonlab.tasks.procedural import norm

QUESTION_FIELDS = ("question", "input", "problem", "prompt")
ANSWER_FIELDS = ("answer", "target", "solution")
SYSTEM_PROMPT = (
    "You are a helpful assistant. Think step by step inside <think> </think> tags, then give only the "
    "final answer inside <answer> </answer> tags."
)
MAX_ANSWER_CHARS = 4096


class DatasetFileError(ValueError):
    """A dataset file is unreadable or a record lacks a field; the message names file, line and field."""


# ----------------------------------------------------------------------------- reading


def read_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs; ``where`` is ``FILE:LINE`` for JSONL, ``FILE: record N`` otherwise."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DatasetFileError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        rows = pq.read_table(path).to_pylist()
        return [(f"{path}: row {i + 1}", r) for i, r in enumerate(rows)]
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl" or (suffix != ".json" and "\n{" in text.strip()):
        out = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetFileError(f"{path}:{i}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DatasetFileError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
            out.append((f"{path}:{i}", rec))
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict) and "examples" in data:  # BIG-Bench(-Hard) task file
        data = data["examples"]
    if not isinstance(data, list):
        raise DatasetFileError(f"{path}: expected a list of records or {{\"examples\": [...]}}, got {type(data).__name__}")
    out = []
    for i, rec in enumerate(data, start=1):
        if not isinstance(rec, dict):
            raise DatasetFileError(f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}")
        out.append((f"{path}: record {i}", rec))
    return out


def _field(rec: dict, where: str, explicit: str | None, candidates: tuple[str, ...], what: str) -> Any:
    if explicit:
        if explicit not in rec:
            raise DatasetFileError(f"{where}: missing field {explicit!r} (the {what}); fields present: {sorted(rec)}")
        return rec[explicit]
    for c in candidates:
        if c in rec:
            return rec[c]
    raise DatasetFileError(
        f"{where}: missing field {candidates[0]!r} (the {what}; also accepted: {', '.join(candidates[1:])}); "
        f"fields present: {sorted(rec)}. Name the column with --task-arg {what}_field=NAME")


def gsm8k_answer(text: str) -> str:
    """GSM8K's reference ``"...#### 72"`` → ``"72"`` (unchanged when there is no ``####``)."""
    return text.rsplit("####", 1)[1].strip() if "####" in text else text


# ----------------------------------------------------------------------------- scorers

_NUM = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")


def parse_number(s: str) -> Fraction | None:
    """The last number in ``s`` (``1,234``, ``$5``, ``50%``, ``3/4``, ``-2.5``), exactly; None if there is none."""
    found = _NUM.findall(s[-400:])
    if not found:
        return None
    tok = found[-1].replace(",", "")
    try:
        return Fraction(tok)
    except (ValueError, ZeroDivisionError):
        return None


def numeric_match(answer: str, target: str, tolerance: float = 1e-6) -> bool:
    a, t = parse_number(answer), parse_number(target)
    if a is None or t is None:
        return False
    return abs(a - t) <= tolerance * max(1, abs(t))


def choice_letter(s: str) -> str | None:
    s = s.strip()
    m = re.fullmatch(r"\(?([A-Za-z])\)?(?:[\s.:)].*)?", s, re.S)
    return m.group(1).upper() if m else None


def choice_match(answer: str, target: str) -> bool:
    a, t = choice_letter(answer), choice_letter(target)
    return a is not None and a == t


def exact_match(answer: str, target: str) -> bool:
    return norm(answer) == norm(target)


def load_checker(spec: str) -> Callable[[str, str, dict], Any]:
    """``python:FILE.py:FUNC`` or ``python:package.module:FUNC`` → the function."""
    body = spec[len("python:"):]
    where, _, func = body.rpartition(":")
    if not where or not func:
        raise ValueError(f"scorer {spec!r}: expected python:FILE.py:FUNC or python:module:FUNC")
    if where.endswith(".py"):
        path = Path(where)
        if not path.exists():
            raise FileNotFoundError(f"scorer {spec!r}: no such file {path}")
        mod_spec = importlib.util.spec_from_file_location(f"reasonlab_checker_{stable_hash(path.resolve())}", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(where)
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise ValueError(f"scorer {spec!r}: {where} has no function {func!r}")
    return fn


SCORERS = ("auto", "exact", "numeric", "choice")


# ----------------------------------------------------------------------------- the Task


class FileTask:
    """Rows of a dataset file as a Task (see the module docstring)."""

    def __init__(self, source: str, question_field: str | None = None, answer_field: str | None = None,
                 scorer: str = "auto", tolerance: float = 1e-6, test_percent: int = 10, hf_split: str = "test",
                 system: str | None = None, format_reward: float = 0.0):
        if scorer not in SCORERS and not scorer.startswith("python:"):
            raise ValueError(f"unknown scorer {scorer!r}; allowed: {', '.join(SCORERS)} or python:FILE.py:FUNC")
        self.source = source
        self.name = source
        self.description = f"exact-answer dataset {source}"
        self.tolerance = tolerance
        self.test_percent = test_percent
        self.system = system or SYSTEM_PROMPT
        self.format_reward = format_reward
        rows = self._load(source, hf_split)
        self.rows: list[dict] = []
        for where, rec in rows:
            q = _field(rec, where, question_field, QUESTION_FIELDS, "question")
            a = _field(rec, where, answer_field, ANSWER_FIELDS, "answer")
            if not isinstance(q, str) or not q.strip():
                raise DatasetFileError(f"{where}: field {question_field or 'question'!r} is empty or not text")
            if a is None or (isinstance(a, str) and not a.strip()):
                raise DatasetFileError(f"{where}: the answer field is empty")
            self.rows.append({"question": q, "target": gsm8k_answer(str(a)), "row": rec, "where": where})
        if not self.rows:
            raise DatasetFileError(f"{source}: no records")
        if scorer == "auto":
            targets = [r["target"] for r in self.rows]
            if all(re.fullmatch(r"\([A-Za-z]\)", t.strip()) for t in targets):
                scorer = "choice"
            elif all(re.fullmatch(r"[-+$]?[\d,]*\.?\d+%?", t.strip()) for t in targets):
                scorer = "numeric"
            else:
                scorer = "exact"
        self.scorer = scorer
        self._checker = load_checker(scorer) if scorer.startswith("python:") else None

    @staticmethod
    def _load(source: str, hf_split: str) -> list[tuple[str, dict]]:
        if source.startswith("hf:"):
            name = source[3:]
            try:
                from datasets import load_dataset

                ds = load_dataset(name, split=hf_split)
            except Exception as e:  # no hub here, a wrong name, a missing config
                raise DatasetFileError(f"{source}: could not load from the Hugging Face hub ({e.__class__.__name__}: "
                                       f"{str(e)[:200]}); download the file and use file:PATH instead") from None
            return [(f"{source}: row {i + 1}", dict(r)) for i, r in enumerate(ds)]
        return read_records(Path(source[len("file:"):] if source.startswith("file:") else source))

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        check_split(split)
        pool = [r for r in self.rows
                if (split == "test" if self.test_percent >= 100 else split_of(r["question"], self.test_percent) == split)]
        if not pool:
            raise ValueError(f"{self.name} has no {split} rows with test_percent={self.test_percent} "
                             "(use --task-arg test_percent=100 to evaluate on every row)")
        if seed:
            import random

            pool = pool[:]
            random.Random(stable_hash(self.name, seed)).shuffle(pool)
        return [Problem(id=f"{Path(self.name).name}-{stable_hash(r['question']) % 10**10:010d}", task=self.name,
                        split=split, question=r["question"], answer=r["target"], metadata={"row": r["row"]})
                for r in pool[:n]]

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]:
        return [{"role": "system", "content": system_prompt(self.system, tools)},
                {"role": "user", "content": problem.question}]

    def match(self, answer: str, problem: Problem) -> float:
        t = str(problem.answer)
        if self._checker is not None:
            return float(self._checker(answer, t, problem.metadata["row"]))
        if self.scorer == "numeric":
            return float(numeric_match(answer, t, self.tolerance))
        if self.scorer == "choice":
            return float(choice_match(answer, t))
        return float(exact_match(answer, t))

    def score(self, problem: Problem, text: str) -> Score:
        answer, failed = answer_or_fail(text, MAX_ANSWER_CHARS)
        if failed is not None:
            return failed
        try:
            value = self.match(answer, problem)
        except Exception as e:  # a user's checker must not crash a run over odd model text
            return Score(self.format_reward, False, True, norm(answer), {"error": f"checker raised {e!r}"[:300]})
        correct = value >= 1.0 - 1e-9
        return Score(value if value > 0 else self.format_reward, correct, True, norm(answer), {"score": value})
