"""Export a task to verl's RL data format, with a reward function backed by reasonlab's scorers.

verl (cluster-scale PPO/GRPO, https://github.com/verl-project/verl) trains from parquet files whose
rows look like this (its ``examples/data_preprocess/gsm8k.py`` and ``countdown.py``, checked at v0.9.0):

    data_source   "reasonlab/countdown"       which task scores the row
    prompt        [{"role", "content"}, ...]  chat messages; verl applies the model's chat template
    ability       "math" | "reasoning" | ...  a free-form label
    reward_model  {"style": "rule", "ground_truth": ...}
    extra_info    {"split", "index", "problem_id", "task_args"}

and calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` on every response.
The reward module written next to the data is a shim over :func:`compute_score` below, so verl
scores with exactly the code that reasonlab's own trainers and evaluations use; scoring never
evaluates model text.

Ground truth, per task family (see :func:`verl_format`):

- ``countdown``: ``{"numbers": [...], "target": int}``, the layout of verl's own Countdown example.
- ``gym/*``: the reasoning-gym entry (question, answer, metadata) as a JSON string. Entries differ in
  shape across datasets and rows, which one parquet struct column cannot hold; tuples (ARC grids)
  are tagged so that they come back as tuples, because some gym scorers compare them with ``==``.
- ``toy/letter``: the letter.

Tasks whose scorer needs more than data (``humaneval`` runs code in reasonlab's sandbox) are refused
with an error that says so.

``data_source`` is ``reasonlab/<task>`` rather than verl's ``countdown`` on purpose: if the custom
reward function is left out, verl's default scorer raises instead of silently scoring with other
rules. ``task_args`` travel in ``extra_info`` as a JSON string (a parquet struct cannot be empty), so
one reward module scores rows of several exports mixed in one run.

Before the files are moved into place, the first rows of each split are read back from parquet and
scored through :func:`compute_score` on the reference answer; the export fails if that differs from
scoring the original problem, so a format that loses information is caught here, not in a GPU run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from reasonlab.episode import Problem
from reasonlab.tasks import get_task

DATA_SOURCE_PREFIX = "reasonlab/"
VERL_VERSION_CHECKED = "v0.9.0 (tagged 2026-08-14) and on main at 0.10.0.dev (commit 1dda039)"
SUPPORTED = "countdown, gym/<dataset> (every reasoning-gym dataset), toy/letter"
logger = logging.getLogger("reasonlab.export.verl")


# ----------------------------------------------------------------------------- tagged JSON


def dumps_tagged(obj: Any) -> str:
    """JSON that keeps tuples and non-string dict keys, which plain JSON turns into lists/strings."""

    def enc(x: Any) -> Any:
        if x is None or isinstance(x, (str, bool, int, float)):
            return x
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x) and not {"__tuple__", "__items__"} & x.keys():
                return {k: enc(v) for k, v in x.items()}
            return {"__items__": [[enc(k), enc(v)] for k, v in x.items()]}
        raise TypeError(f"{type(x).__name__} value {x!r:.80} cannot be stored as JSON")

    return json.dumps(enc(obj), ensure_ascii=False, allow_nan=True)


def loads_tagged(s: str) -> Any:
    def hook(d: dict) -> Any:
        if d.keys() == {"__tuple__"}:
            return tuple(d["__tuple__"])
        if d.keys() == {"__items__"}:
            return {k: v for k, v in d["__items__"]}
        return d

    return json.loads(s, object_hook=hook)


# ----------------------------------------------------------------------------- per-task formats


@dataclass(frozen=True)
class VerlFormat:
    """How one task family's problems become verl rows and come back for scoring."""

    ability: str
    ground_truth: Callable[[Problem], Any]  # Problem → a parquet-friendly value
    problem: Callable[[str, Any], Problem]  # (task name, ground truth as verl passes it) → Problem
    reference: Callable[[Problem], str]  # a response text built from the reference answer


def _countdown_gt(p: Problem) -> dict:
    return {"numbers": [int(n) for n in p.metadata["numbers"]], "target": int(p.metadata["target"])}


def _countdown_problem(task: str, gt: Any) -> Problem:
    if isinstance(gt, str):
        gt = json.loads(gt)
    # verl hands over lists as Python lists (datasets) or numpy arrays (pandas): int() takes both
    numbers, target = [int(n) for n in gt["numbers"]], int(gt["target"])
    return Problem("verl", task, "", "", target, {"numbers": numbers, "target": target})


def _gym_problem(task: str, gt: Any) -> Problem:
    entry = loads_tagged(gt)
    return Problem("verl", task, "", entry.get("question", ""), entry.get("answer"), {"entry": entry})


def _letter_problem(task: str, gt: Any) -> Problem:
    return Problem("verl", task, "", "", str(gt), {"letter": str(gt)})


_COUNTDOWN = VerlFormat("math", _countdown_gt, _countdown_problem,
                        lambda p: f"<think>reference</think> <answer>{p.metadata['solution']}</answer>")
_GYM = VerlFormat("reasoning", lambda p: dumps_tagged(p.metadata["entry"]), _gym_problem,
                  lambda p: f"<think>reference</think> <answer>{p.answer}</answer>")
_LETTER = VerlFormat("toy", lambda p: p.metadata["letter"], _letter_problem,
                     lambda p: p.metadata["letter"] * 16)


def verl_format(task_name: str) -> VerlFormat:
    """The format of ``task_name``; a ValueError naming the supported tasks if there is none."""
    if task_name == "countdown":
        return _COUNTDOWN
    if task_name.startswith("gym/"):
        return _GYM
    if task_name == "toy/letter":
        return _LETTER
    why = ""
    if task_name == "humaneval":
        why = " Its scorer runs the model's code in reasonlab's sandbox, which verl's reward workers lack."
    raise ValueError(f"cannot export task {task_name!r} to verl.{why} Supported: {SUPPORTED}.")


# ----------------------------------------------------------------------------- reward function


@lru_cache(maxsize=64)
def _task(task_name: str, task_args_json: str):
    return get_task(task_name, **json.loads(task_args_json))


TINYZERO_SOURCE = "countdown"  # TinyZero's examples/data_preprocess/countdown.py writes this data_source
_DIGITS = re.compile(r"[0-9]+")
_warned: set[str] = set()


def known_data_sources() -> str:
    return f"{TINYZERO_SOURCE!r} (TinyZero's Countdown rows) and {DATA_SOURCE_PREFIX}<task> for {SUPPORTED}"


def score_tinyzero_countdown(solution_str: str, ground_truth: Any, *, format_score: float = 0.1,
                             score: float = 1.0) -> float:
    """TinyZero's Countdown rule, on reasonlab's safe evaluator.

    TinyZero's scorer, as it reads: the text after the assistant marker ("Assistant:" or
    "<|im_start|>assistant"), only its *last line*, the last ``<answer>…</answer>`` on that line;
    none → 0. The integers in the answer must be exactly the given numbers (each once), else
    ``format_score``; an answer that does not evaluate → ``format_score``; value within 1e-5 of the
    target → ``score``, otherwise ``format_score``.

    Two deliberate differences. TinyZero got prompt + response and returned 0 when no assistant
    marker was found; verl ≥ 0.2 passes the response only, so without a marker the whole response is
    read (with a marker, what follows the first one). TinyZero ``eval``s the answer, so ``2**3`` and
    ``7//2`` count there (and ``9**9**9`` hangs it); here only ``+ - * /``, parentheses and integers
    are evaluated (exactly, over fractions), and anything else scores ``format_score``.
    """
    from reasonlab.tasks.countdown import ExpressionError, evaluate_expression

    if isinstance(ground_truth, str):
        ground_truth = json.loads(ground_truth)
    numbers, target = sorted(int(n) for n in ground_truth["numbers"]), int(ground_truth["target"])
    text = solution_str if isinstance(solution_str, str) else ""
    for marker in ("Assistant:", "<|im_start|>assistant"):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    last_line = text[-200_000:].split("\n")[-1]
    close = last_line.rfind("</answer>")
    start = last_line.rfind("<answer>", 0, close) if close >= 0 else -1
    if start < 0:
        return 0.0
    equation = last_line[start + len("<answer>"):close].strip()
    if sorted(int(n) for n in _DIGITS.findall(equation[:10_000])) != numbers:
        return float(format_score)
    try:
        value = evaluate_expression(equation).value
    except ExpressionError:
        return float(format_score)
    if value is None or abs(float(value) - target) >= 1e-5:
        return float(format_score)
    return float(score)


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
) -> float:
    """verl's reward-function signature: the task's reward for one response, as a float.

    ``data_source`` names the task: ``reasonlab/<task>`` (rows of ``reasonlab export verl``) or
    ``countdown`` (TinyZero's rows, scored by TinyZero's rule: :func:`score_tinyzero_countdown`).
    ``ground_truth`` is the row's ``reward_model.ground_truth``, ``extra_info["task_args"]`` the
    task's arguments as JSON (the task's defaults when absent). Extra keyword arguments that verl
    passes (``reward_router_address``, ``reward_kwargs``, …) are accepted and ignored.

    A data source this module does not know scores 0.0 and logs, once per source, a message listing
    the known ones: verl's reward managers do not catch exceptions, and one unknown row must not end a
    GPU run. Malformed ground truth for a known source still raises: that is a broken export.
    """
    if not isinstance(solution_str, str):
        solution_str = "" if solution_str is None else str(solution_str)
    if data_source == TINYZERO_SOURCE:
        return score_tinyzero_countdown(solution_str, ground_truth)
    task_name = data_source[len(DATA_SOURCE_PREFIX):] if isinstance(data_source, str) else ""
    try:
        if not isinstance(data_source, str) or not data_source.startswith(DATA_SOURCE_PREFIX):
            raise ValueError("not written by `reasonlab export verl`")
        fmt = verl_format(task_name)
    except ValueError as e:
        key = repr(data_source)
        if key not in _warned:
            _warned.add(key)
            logger.error("reasonlab reward: data_source %s is unknown (%s); its rows score 0.0. Known data "
                         "sources: %s. Point verl's reward at the module written with those rows.",
                         key, str(e).split(" Supported:")[0], known_data_sources())
        return 0.0
    task_args = (extra_info or {}).get("task_args") or "{}"
    task = _task(task_name, task_args)
    problem = fmt.problem(task_name, ground_truth)
    return float(task.score(problem, solution_str).reward)


# ----------------------------------------------------------------------------- export

REWARD_MODULE = '''"""verl reward function for data written by `reasonlab export verl`.

verl loads this file by path (reward.custom_reward_function.path in verl >= 0.7.1) and calls
compute_score on every response; it also scores TinyZero's own Countdown rows (data_source 'countdown'). It delegates to reasonlab's own
scorers, so reasonlab must be importable where verl computes rewards (pip install it in the same
environment on every node). Scoring never evaluates model text.
"""

from reasonlab.export.verl import compute_score as _reasonlab_compute_score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    return _reasonlab_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
'''


def _row(task_name: str, fmt: VerlFormat, task: Any, p: Problem, index: int, task_args_json: str,
         tools: list[str] | None = None) -> dict:
    return {
        "data_source": DATA_SOURCE_PREFIX + task_name,
        "prompt": task.messages(p, tools=tools) if tools else task.messages(p),
        "ability": fmt.ability,
        "reward_model": {"style": "rule", "ground_truth": fmt.ground_truth(p)},
        "extra_info": {"split": p.split, "index": index, "problem_id": p.id, "task_args": task_args_json},
    }


def _check_round_trip(path: Path, task: Any, fmt: VerlFormat, problems: list[Problem]) -> None:
    """Score the reference answer of the first rows as verl will (read back from parquet)."""
    import pandas as pd

    df = pd.read_parquet(path).head(len(problems))
    for p, (_, r) in zip(problems, df.iterrows()):
        text = fmt.reference(p)
        want = float(task.score(p, text).reward)
        got = compute_score(r["data_source"], text, r["reward_model"]["ground_truth"], r["extra_info"])
        if got != want:
            raise RuntimeError(
                f"{p.task} problem {p.id} does not survive the export: the reference answer scores {got} "
                f"from the parquet row but {want} from the task; this task cannot be exported"
            )


def export_verl(
    task_name: str,
    out_dir: str | Path,
    *,
    n_train: int = 10_000,
    n_test: int = 500,
    seed: int = 0,
    task_args: dict[str, Any] | None = None,
    check_rows: int = 16,
    tools: list[str] | None = None,
) -> dict[str, Path]:
    """Write train.parquet, test.parquet, reasonlab_reward.py and README.md into ``out_dir``.

    ``tools=["python"]`` writes prompts that offer the Python interpreter (for verl's tool agent loop).

    Returns the paths by name (``train``, ``test``, ``reward``, ``readme``).
    """
    import pandas as pd

    if n_train < 1 or n_test < 1:
        raise ValueError("n_train and n_test must be at least 1 (verl needs both files)")
    fmt = verl_format(task_name)  # refuse before generating anything
    task_args = dict(task_args or {})
    try:
        task_args_json = json.dumps(task_args, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"task_args must be JSON values: {e}") from None
    task = get_task(task_name, **task_args)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        problems = task.problems(split, n, seed=seed)
        try:
            rows = [_row(task_name, fmt, task, p, i, task_args_json, tools) for i, p in enumerate(problems)]
        except TypeError as e:
            msg = f"cannot export task {task_name!r}: a problem holds data parquet cannot store ({e})"
            raise ValueError(msg) from None
        final, tmp = out / f"{split}.parquet", out / f".{split}.parquet.tmp"
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        try:
            _check_round_trip(tmp, task, fmt, problems[:check_rows])
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        paths[split] = final
    paths["reward"] = out / "reasonlab_reward.py"
    paths["reward"].write_text(REWARD_MODULE)
    paths["readme"] = out / "README.md"
    text = readme(task_name, out, n_train=n_train, n_test=n_test, seed=seed, task_args=task_args)
    paths["readme"].write_text(text)
    return paths


def readme(task_name: str, out: Path, *, n_train: int, n_test: int, seed: int, task_args: dict) -> str:
    """The README written next to the data: what is in it and the verl commands that train on it."""
    from reasonlab.export.verl_config import VERL_VERSION, command, study_rl_config, verl_overrides

    d = out.resolve()
    args = "".join(f" --task-arg {k}={json.dumps(v)}" for k, v in task_args.items())
    ppo = command(verl_overrides(study_rl_config("ppo", task_name, task_args), data_dir=d, n_gpus=4))
    grpo = command(verl_overrides(study_rl_config("grpo", task_name, task_args), data_dir=d, n_gpus=4))
    return f"""# verl data for reasonlab task `{task_name}`

Written by
`reasonlab export verl --task {task_name} --out {out} --n-train {n_train} --n-test {n_test} --seed {seed}{args}`.

| file | content |
|---|---|
| `train.parquet` | {n_train} problems from reasonlab's `train` split |
| `test.parquet` | {n_test} problems from reasonlab's `test` split (never overlaps `train`) |
| `reasonlab_reward.py` | `compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float` |

Columns (verl's RL schema): `data_source`, `prompt` (chat messages), `ability`,
`reward_model` = {{"style": "rule", "ground_truth": ...}}, `extra_info` = {{split, index, problem_id, task_args}}.

`data_source` is `reasonlab/{task_name}`: verl's built-in scorers do not know it, so a run without the
custom reward function fails at the first reward instead of scoring with other rules. The reward module
also scores TinyZero's own Countdown rows (`data_source` "countdown") by TinyZero's rule; a data source
it does not know scores 0.0 and logs, once, the sources it knows.

## Requirements

verl {VERL_VERSION}, and reasonlab installed in the same Python environment on every node: the reward
module imports reasonlab, so rewards are computed by exactly the code reasonlab's trainers and
evaluations use. No model text is ever evaluated. Every key below is composed with verl {VERL_VERSION}'s
own Hydra config in strict mode by reasonlab's tests (`tests/test_verl_compat.py`).

## PPO with a critic (GAE) and the KL penalty in the reward, as in the cognitive-behaviors study

`algorithm.use_kl_in_reward=True` is what turns the KL penalty (and the reference model) on in verl
{VERL_VERSION}; `algorithm.kl_ctrl.kl_coef` alone does nothing.

```bash
{ppo}
```

## GRPO (no critic, KL as a loss term)

```bash
{grpo}
```

Set `trainer.n_gpus_per_node` / `trainer.nnodes` to your cluster and the batch sizes to your memory.
The reward keys are `reward.custom_reward_function.*` (verl >= 0.7.1): verl {VERL_VERSION}'s
`main_ppo` does not move the old top-level `custom_reward_function.*` keys under `reward.` (only its
fully-async entry point does), so the old spelling silently leaves the reward unset there.
`Qwen/Qwen2.5-3B` is the base model of the cognitive-behaviors study; any Hugging Face causal LM works.
For a whole study with the interpreter (multi-turn GRPO, tool output masked), use
`reasonlab train rl --config R.yaml --engine verl --out DIR` (docs/scale.md).

## Check the reward function without verl

```python
import importlib.util, pandas as pd
spec = importlib.util.spec_from_file_location("reasonlab_reward", "{d}/reasonlab_reward.py")
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
r = pd.read_parquet("{d}/test.parquet").iloc[0]
print(mod.compute_score(r.data_source, "<answer>...</answer>", r.reward_model["ground_truth"], r.extra_info))
```
"""
