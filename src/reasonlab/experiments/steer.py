"""CodeSteer (arXiv 2502.04350): a guide model steers a solver model between code and text.

    round 1   guide reads the question            → <<<Code>>> or <<<Text>>> + guidance
              solver answers with that guidance   → (code runs in the sandbox)
    round r   guide reads: the solver's answer, the code output, the symbolic checker's verdict
              and the self-answer checker's verdict → <<<Return Answer>>>, <<<Stop>>>, or new
              guidance (<<<Code>>>/<<<Text>>> + text)
    until the guide returns or stops, or ``max_rounds`` (1 + 5) rounds.

- **Symbolic checker** (:func:`symbolic_check`, no model): how much real computation the solver's
  code does — loops, comprehensions, function definitions, search/maths library calls — against
  printing hard-coded values. It parses the code with :mod:`ast` and never runs or evaluates it.
- **Self-answer checker**: the solver is asked for a program that checks its own answer against
  the question and prints ``True`` or ``False``; the program runs in the sandbox.

Both models are chat functions ``messages -> text``: :class:`EndpointChat` (any OpenAI-compatible
server, through reasonlab's client with retries and caching) or :class:`LocalChat` (a local HF model
through reasonlab's generation backend). A guide reply that follows none of the formats is counted
(``malformed_guide_replies``) and treated as guidance in the current mode, so one bad reply never
ends a run. The final answer is scored by the task's own scorer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Callable

from reasonlab.episode import Episode, append_jsonl, write_json_atomic
from reasonlab.rollout.agent import format_output
from reasonlab.tasks.protocol import extract_triple

ChatFn = Callable[[list[dict[str, str]]], str]

GUIDE_SYSTEM = (
    "You guide another model that solves a task. Decide whether it should solve the task by writing Python code or "
    "by reasoning in text. Start your reply with <<<Code>>> or <<<Text>>>, then give short guidance. In later rounds "
    "you see its answer, its code output and two checkers' verdicts: reply <<<Return Answer>>> if the answer is "
    "right, <<<Stop>>> to give up, or <<<Code>>>/<<<Text>>> with new guidance."
)
SOLVER_SYSTEM = (
    "Solve the task. If you are told to use code, write one ```python block that computes and prints the answer. "
    "Give the final answer as <<<answer>>>."
)
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
_COMPUTE_MODULES = {"itertools", "math", "fractions", "collections", "heapq", "functools", "re", "numpy", "sympy",
                    "datetime", "statistics"}


def parse_guide(reply: str) -> tuple[str, str, bool]:
    """(action, guidance, well_formed): action is code, text, return or stop."""
    low = reply.lower()
    for tag, action in (("<<<return answer>>>", "return"), ("<<<stop>>>", "stop"), ("<<<code>>>", "code"),
                        ("<<<text>>>", "text")):
        i = low.find(tag)
        if i >= 0:
            return action, reply[i + len(tag):].strip(), True
    return "", reply.strip(), False


def symbolic_check(code: str | None) -> dict[str, Any]:
    """How much computation a program does (static: the code is parsed, never run)."""
    if not code:
        return {"score": 0, "verdict": "no code was written"}
    try:
        tree = ast.parse(code[:20_000])
    except SyntaxError as e:
        return {"score": 0, "verdict": f"the code does not parse ({e.msg})"}
    counts = {"loops": 0, "comprehensions": 0, "functions": 0, "library": 0, "printed_literals": 0, "prints": 0}
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.While)):
            counts["loops"] += 1
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            counts["comprehensions"] += 1
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            counts["functions"] += 1
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            counts["library"] += sum(n.split(".")[0] in _COMPUTE_MODULES for n in names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
            counts["prints"] += 1
            if node.args and all(isinstance(a, ast.Constant) for a in node.args):
                counts["printed_literals"] += 1
    score = counts["loops"] + counts["comprehensions"] + counts["functions"] + counts["library"]
    if score == 0 and counts["prints"] and counts["printed_literals"] == counts["prints"]:
        verdict = "the code only prints hard-coded values: it computes nothing"
    elif score == 0:
        verdict = "the code does straight-line arithmetic only (no loops, search or functions)"
    else:
        verdict = (f"the code computes: {counts['loops']} loop(s), {counts['comprehensions']} comprehension(s), "
                   f"{counts['functions']} function(s), {counts['library']} maths/search import(s)")
    return {"score": score, "verdict": verdict, **counts}


def last_code(text: str) -> str | None:
    blocks = _BLOCK.findall(text[-100_000:])
    return blocks[-1] if blocks else None


class EndpointChat:
    """A model behind an OpenAI-compatible endpoint, as a chat function."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "none", max_tokens: int = 512,
                 temperature: float = 0.0, cache: str | Path | None = None, timeout_s: float = 300.0):
        from reasonlab.rollout.openai_client import OpenAIChat

        self.client = OpenAIChat(base_url, model, api_key=api_key, cache=cache, timeout_s=timeout_s, max_retries=3)
        self.params = {"max_tokens": max_tokens, "temperature": temperature}

    def __call__(self, messages: list[dict[str, str]]) -> str:
        (res,) = self.client.chat_many([(messages, self.params)])
        if isinstance(res, Exception):
            raise res
        return res.text

    def close(self) -> None:
        self.client.close()


class LocalChat:
    """A local HF model (any name ``reasonlab`` resolves), as a chat function."""

    def __init__(self, model: str, *, max_tokens: int = 512, temperature: float = 0.0, device: str = "auto"):
        from reasonlab.rollout.hf import HFBackend

        self.backend = HFBackend(model, dtype="auto", device=device, batch_size=1, compile="off")
        self.max_tokens, self.temperature = max_tokens, temperature

    def __call__(self, messages: list[dict[str, str]]) -> str:
        from reasonlab.rollout.base import SamplingParams
        from reasonlab.rollout.chat import encode_chat

        ids = encode_chat(self.backend.tokenizer, messages)
        params = SamplingParams(n=1, temperature=self.temperature, max_new_tokens=self.max_tokens, seed=0)
        return self.backend.generate([ids], params)[0][0].text

    def close(self) -> None:
        pass


def steer_problem(task: Any, problem: Any, guide: ChatFn, solver: ChatFn, sandbox: Any, *,
                  max_rounds: int = 6) -> Episode:
    """One problem through the CodeSteer loop; the transcript is the Episode's messages."""
    question = problem.question
    transcript: list[dict[str, str]] = [{"role": "user", "content": question}]
    guide_msgs = [{"role": "system", "content": GUIDE_SYSTEM}, {"role": "user", "content": f"Task:\n{question}"}]
    stats: dict[str, Any] = {"rounds": 0, "modes": [], "malformed_guide_replies": 0, "code_calls": 0,
                             "finish_reason": "max_rounds", "symbolic": [], "self_check": []}
    mode, answer = "code", None
    for rnd in range(max_rounds):
        stats["rounds"] += 1
        reply = guide(guide_msgs)
        guide_msgs.append({"role": "assistant", "content": reply})
        transcript.append({"role": "guide", "content": reply})
        action, guidance, ok = parse_guide(reply)
        if not ok:
            stats["malformed_guide_replies"] += 1
            action = mode  # treat it as guidance in the current mode
        if action in ("return", "stop") and rnd > 0:
            stats["finish_reason"] = action
            if action == "stop":
                answer = None
            break
        if action in ("return", "stop"):  # nothing to return yet in round 1
            action = mode
        mode = action
        stats["modes"].append(mode)
        ask = (f"{question}\n\nGuidance: {guidance or 'solve it'}\n" +
               ("Write one ```python block that computes and prints the answer, then give <<<answer>>>."
                if mode == "code" else "Reason in text, without code, and give <<<answer>>>."))
        text = solver([{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": ask}])
        transcript.append({"role": "assistant", "content": text})
        code = last_code(text) if mode == "code" else None
        output = ""
        if code:
            res = sandbox.run(code)
            stats["code_calls"] += 1
            output = format_output(res, 1024, "r1ci")
            transcript.append({"role": "tool", "content": output})
        answer = extract_triple(text)
        if answer is None and output:
            lines = output.removeprefix("Code Execution Results:").strip().splitlines()
            answer = lines[-1].strip() if lines else None
        sym = symbolic_check(code)
        stats["symbolic"].append(sym["score"])
        check_verdict = self_check(question, answer, solver, sandbox)
        stats["self_check"].append(check_verdict)
        stats["code_calls"] += int(check_verdict in ("True", "False"))
        guide_msgs.append({"role": "user", "content": (
            f"Round {rnd + 1}. The solver answered: {answer if answer is not None else '(no answer)'}\n"
            f"Code output: {output.strip() or '(no code run)'}\n"
            f"Symbolic checker: {sym['verdict']}\nSelf-answer checker: {check_verdict}\n"
            "Reply <<<Return Answer>>>, <<<Stop>>>, or <<<Code>>>/<<<Text>>> with new guidance.")})
    score = task.score(problem, f"<answer>{answer}</answer>" if answer is not None else "")
    return Episode(task=problem.task, problem_id=problem.id, sample_index=0, messages=transcript,
                   reward=score.reward, correct=score.correct, format_ok=score.format_ok, answer=score.answer,
                   score_details=score.details, stats=stats, meta={"method": "codesteer"})


def self_check(question: str, answer: str | None, solver: ChatFn, sandbox: Any) -> str:
    """The solver writes a program that checks ``answer``; its printed True/False is the verdict."""
    if answer is None:
        return "no answer to check"
    text = solver([{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": (
        f"{question}\n\nA proposed answer is: {answer}\nWrite one ```python block that checks whether this answer "
        "satisfies every condition of the task and prints True or False.")}])
    code = last_code(text)
    if not code:
        return "the checker wrote no code"
    res = sandbox.run(code)
    out = (res.stdout or "").strip().splitlines()
    last = out[-1].strip() if out else ""
    return last if last in ("True", "False") else f"inconclusive ({(last or res.stderr.strip()[-80:] or 'no output')})"


def run_steer(task_name: str, out: str | Path, *, guide: ChatFn, solver: ChatFn, limit: int, split: str = "test",
              seed: int = 0, max_rounds: int = 6) -> dict[str, Any]:
    """Steer ``limit`` problems; resumable (finished problems in ``episodes/steer.jsonl`` are skipped)."""
    from reasonlab.analysis.metrics import summarize
    from reasonlab.episode import read_episodes
    from reasonlab.sandbox import Sandbox, SandboxConfig
    from reasonlab.tasks import get_task

    task = get_task(task_name)
    problems = task.problems(split, limit, seed=seed)
    out = Path(out)
    path = out / "episodes" / "steer.jsonl"
    done = {e.problem_id for e in read_episodes(path)} if path.exists() else set()
    sandbox = Sandbox(SandboxConfig(timeout_s=10.0, memory_mb=512))
    try:
        for p in problems:
            if p.id not in done:
                append_jsonl(path, [steer_problem(task, p, guide, solver, sandbox, max_rounds=max_rounds)])
    finally:
        sandbox.close()
    wanted = {p.id for p in problems}
    eps = [e for e in read_episodes(path) if e.problem_id in wanted]
    s = summarize(eps)
    s.update({
        "task": task_name, "run_dir": str(out),
        "mean_rounds": sum(e.stats["rounds"] for e in eps) / max(len(eps), 1),
        "first_mode_code_rate": sum(bool(e.stats["modes"]) and e.stats["modes"][0] == "code" for e in eps) / max(len(eps), 1),
        "malformed_guide_replies": sum(e.stats["malformed_guide_replies"] for e in eps),
        "finish_reasons": {r: sum(e.stats["finish_reason"] == r for e in eps) for r in ("return", "stop", "max_rounds")},
    })
    write_json_atomic(out / "summary.json", s)
    return s
