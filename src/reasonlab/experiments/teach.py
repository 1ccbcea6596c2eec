"""A programmatic code teacher: multi-turn Episodes in which the "teacher" writes a solver program,
runs it in the sandbox, reads the output and answers — SFT data from which a CPU model organism can
learn to use the interpreter.

For every problem of a task that has a solver (:attr:`Spec.solver` of the procedural tasks):

    assistant  a short plan + ```python <solver program for this instance> ```      (policy text)
    tool       what the sandbox printed, as the agent loop shows it                   (masked)
    assistant  "The program printed …" + the answer in the task's or protocol's form  (policy text)

The program really runs (the output is not made up), and the episode is scored by the task's own
scorer; only correct episodes are kept (``keep_incorrect=False``), so a broken solver cannot teach a
wrong answer. The layout is exactly the agent loop's, so ``reasonlab train sft`` masks the tool output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasonlab.episode import Episode, append_jsonl
from reasonlab.rollout.agent import format_output
from reasonlab.tasks import get_task
from reasonlab.tasks.suites import member_task


def has_solver(task: Any) -> bool:
    inner = getattr(task, "inner", task)
    spec = getattr(inner, "spec", None)
    return spec is not None and spec.solver is not None


def solver_tasks(task_names: list[str]) -> list[str]:
    return [t for t in task_names if has_solver(get_task(t))]


def teach_episodes(task: Any, problems: list, *, sandbox: Any, protocol: str = "answer",
                   keep_incorrect: bool = False) -> tuple[list[Episode], dict[str, int]]:
    """Code-teacher episodes for ``problems`` (those whose task has no solver are skipped)."""
    out: list[Episode] = []
    counts = {"problems": len(problems), "no_solver": 0, "incorrect": 0, "kept": 0}
    style = "r1ci" if protocol == "r1ci" else "fence"
    for p in problems:
        owner = member_task(getattr(task, "inner", task), p)
        if not has_solver(owner):
            counts["no_solver"] += 1
            continue
        code = owner.solver_code(p)
        res = sandbox.run(code)
        printed = (res.stdout or "").strip().splitlines()
        answer = printed[-1].strip() if printed else ""
        first = ("<think>This is mechanical to compute exactly, so I will write a program that solves it and "
                 "prints the answer.</think>\n" if protocol != "r1ci" else
                 "This is mechanical to compute exactly, so I will write a program that solves it and prints the answer.\n")
        first += f"```python\n{code.rstrip()}\n```\n"
        tool = format_output(res, 4096, style)
        final = f"The program printed {answer}, so that is the answer.\n"
        final += f"<<<{answer}>>>" if protocol == "r1ci" else f"<answer>{answer}</answer>"
        msgs = [dict(m) for m in task.messages(p, tools=["python"])]
        msgs += [{"role": "assistant", "content": first}, {"role": "tool", "content": tool},
                 {"role": "assistant", "content": final}]
        score = task.score(p, first + final)
        if not score.correct:
            counts["incorrect"] += 1
            if not keep_incorrect:
                continue
        out.append(Episode(task=p.task, problem_id=p.id, sample_index=0, messages=msgs, reward=score.reward,
                           correct=score.correct, format_ok=score.format_ok, answer=score.answer,
                           score_details=score.details,
                           stats={"turns": 2, "code_calls": 1, "code_errors": int(res.exit_code != 0 or res.timed_out),
                                  "code_timeouts": int(res.timed_out), "finish_reason": "eos", "teacher": "code"},
                           meta={"teacher": "code"}))
    counts["kept"] = len(out)
    return out, counts


def run_teach(task_name: str, out: str | Path, *, limit: int, split: str = "train", seed: int = 0,
              protocol: str = "answer") -> dict[str, Any]:
    """Write code-teacher episodes for ``limit`` problems of ``task_name`` (a task or a suite part) to ``out``.
    For a suite, only members with a solver are used (``limit`` spread over them)."""
    from reasonlab.sandbox import Sandbox, SandboxConfig
    from reasonlab.tasks.suites import SuiteTask, check_trainable

    task = get_task(task_name, protocol=protocol)
    inner = getattr(task, "inner", task)
    if isinstance(inner, SuiteTask):
        members = solver_tasks(inner.members)
        if not members:
            raise ValueError(f"no task of {task_name} has a solver program")
        from reasonlab.tasks.protocol import wrap_protocol

        task = wrap_protocol(SuiteTask(inner.suite, inner.part, tasks=members), protocol)
    elif not has_solver(task):
        from reasonlab.tasks.procedural import SPECS

        raise ValueError(f"task {task_name} has no solver program; tasks with one: "
                         f"{', '.join(n for n, s in SPECS.items() if s.solver)}")
    inner = getattr(task, "inner", task)
    if split == "train" and isinstance(inner, SuiteTask):  # a suite's held-out tasks never become SFT data
        check_trainable(inner.members, "code-teacher SFT data")
    problems = task.problems(split, limit, seed=seed)
    sandbox = Sandbox(SandboxConfig(timeout_s=10.0, memory_mb=512))
    try:
        eps, counts = teach_episodes(task, problems, sandbox=sandbox, protocol=protocol)
    finally:
        sandbox.close()
    out = Path(out)
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    append_jsonl(tmp, eps)
    tmp.replace(out)
    per: dict[str, int] = {}
    for e in eps:
        per[e.task] = per.get(e.task, 0) + 1
    return {**counts, "per_task": per, "out": str(out)}
