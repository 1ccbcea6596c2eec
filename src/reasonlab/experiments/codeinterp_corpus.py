"""The code organism's pretraining corpus and the two SFT teachers of `reasonlab run code-interpreter`.

What a base LM brings to R1-Code-Interpreter's tasks, in organism form, from the *train* tasks only
(a held-out test task never reaches any stage):

- **task documents**: a problem in the chat layout the rollouts use (no interpreter in the system
  prompt) with a direct answer, ``<answer>…</answer>``. The reference answer, so the model learns to
  read the problems and whatever of the answers it can compute in its head;
- **notebook documents**: a problem as a notebook would hold it — the question, the solver program,
  what it printed (really run in the sandbox) and the answer read off that output. Python syntax,
  copying a problem's data into a program and a program's output into an answer (what a base LM
  brings from code and notebooks on the web), but never in the chat layout and never as a tool call:
  using the interpreter inside a conversation is what SFT teaches, as in the paper (Qwen2.5 base →
  SFT on tool-use trajectories → GRPO).

- **copy documents** (``copy_share``): a problem's text, then the same text again. A base LM copies
  text it has just read (induction); the organism needs that to carry a problem's data into a
  program, and it did not learn it from the notebooks alone (below).

A first pilot used bare programs (no question, no answer line) as the code documents: after 300 SFT
steps the organism wrote the right program skeletons with the wrong data and answered with numbers
the program had not printed (4.7% accuracy with the interpreter); it had never seen a program's data
come from a question, nor an answer come from a program's output.

Teachers for SFT (both rejection-sampled: only correct episodes are kept):

- the **code teacher** (:func:`reasonlab.experiments.teach.teach_episodes`): writes the instance's
  solver program, runs it, answers with what it printed;
- the **text teacher** (:func:`text_episodes`): answers directly, with the reference answer — the
  text-only arm's SFT data, the same problems.
"""

from __future__ import annotations

import random
from typing import Any

from reasonlab.episode import Episode


def code_document(question: str, code: str, output: str) -> str:
    out = output.strip()
    return f"Problem: {question.strip()}\n\n```python\n{code.rstrip()}\n```\n```output\n{out}\n```\nAnswer: {out}\n"


def copy_document(question: str) -> str:
    return f"Problem: {question.strip()}\nThe same problem again: {question.strip()}\n"


def corpus_documents(tasks: list[str], per_task: int, *, code_share: float, seed: int, sandbox: Any,
                     copy_share: float = 0.0) -> list[str]:
    """``per_task`` documents per task (train split problems): ``code_share`` of them notebook
    documents, ``copy_share`` copy documents, the rest task documents with direct answers."""
    from reasonlab.organisms import chat_text
    from reasonlab.tasks import get_task

    rng = random.Random(f"code-corpus|{seed}")
    docs: list[str] = []
    for name in tasks:
        task = get_task(name)
        for p in task.problems("train", per_task, seed=seed):
            u = rng.random()
            if u >= code_share and u < code_share + copy_share:
                docs.append(copy_document(task.messages(p)[-1]["content"]))
            elif u < code_share:
                res = sandbox.run(task.solver_code(p))
                if res.exit_code != 0 or res.timed_out:
                    raise RuntimeError(f"{name}: the solver program failed on problem {p.id}: {res.error or res.stderr[-300:]}")
                docs.append(code_document(task.messages(p)[-1]["content"], task.solver_code(p), res.stdout))
            else:
                msgs = task.messages(p) + [{"role": "assistant", "content": f"<answer>{p.answer}</answer>"}]
                docs.append(chat_text(msgs))
    rng.shuffle(docs)
    return docs


def text_episodes(task: Any, problems: list) -> list[Episode]:
    """The text teacher: a direct, correct answer to each problem (no interpreter)."""
    out = []
    for p in problems:
        final = f"<answer>{p.answer}</answer>"
        score = task.score(p, final)
        if not score.correct:  # a reference the scorer does not accept is not SFT data
            continue
        msgs = task.messages(p) + [{"role": "assistant", "content": final}]
        out.append(Episode(task=p.task, problem_id=p.id, sample_index=0, messages=msgs, reward=score.reward,
                           correct=True, format_ok=score.format_ok, answer=score.answer, score_details=score.details,
                           stats={"turns": 1, "code_calls": 0, "finish_reason": "eos", "teacher": "text"},
                           meta={"teacher": "text"}))
    return out
