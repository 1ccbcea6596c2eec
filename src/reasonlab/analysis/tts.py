"""Test-time scaling: sample N trajectories per problem, pick one, and see how accuracy grows with N.

A **selector** is a function ``select(candidates: list[Episode], **ctx) -> int`` returning the index
of the chosen candidate. ``ctx`` carries what some selectors need and the others ignore:
``problem`` (the :class:`~reasonlab.episode.Problem`), ``rng`` (a ``random.Random``), ``scorer``
(a :class:`VerifierScorer`), ``judge`` (an :class:`LLMJudge`), ``sandbox``, ``tests``, ``per_test_s``.
Bind options with ``functools.partial`` (``partial(weighted, scorer=s, w_c=0.5)``).

Selectors (``SELECTORS`` maps the names to the functions; ``"execution"`` is ``execution_public``):

- ``majority``: the most frequent :func:`~reasonlab.analysis.diversity.solution_key` (normalised
  answer, or normalised program for code). Candidates without an answer do not vote. A tie goes to
  the tied answer that appears first in candidate order, so the rule is deterministic; the
  candidate order is random in :func:`tts_curves`, which makes ties fair on average (as maj@k's ½).
- ``execution_public``: runs each candidate's program against the *public* examples of the prompt
  (``>>> f(x)`` doctest lines and ``f(x) == y`` / ``➞`` / ``=>`` example lines, see
  :func:`public_tests`) in the sandbox; the one passing most wins, ties go to ``majority`` among them.
- ``execution_oracle``: the same with the task's *hidden* tests, i.e. the ``correct`` flag the
  scorer already computed by running them. It is an oracle (the hidden tests are the grader), a
  bound for what execution can give, not a method.
- ``verifier``: the highest score of a learned outcome reward model (:func:`train_verifier`,
  :class:`VerifierScorer`): a sequence-classification head on a causal LM, trained with TRL's
  ``RewardTrainer`` on (correct, incorrect) trajectory pairs of the same problem.
- ``llm_judge``: an LLM over an OpenAI-compatible endpoint reads the problem and the candidates
  (all at once, or in a knockout of pairs) and names one; malformed replies fall back to majority.
- ``hybrid``: EntroPO's released selector (arXiv 2509.12434), a *filter cascade* with no
  consensus term. Each stage keeps the candidates that do best on one signal, among those that
  survived the stages before; a stage without its signal (no tests, no verifier) is skipped, and a
  stage that would keep nobody keeps everyone (see :func:`hybrid_stages`):

  1. ``finished``: the trajectory ended on its own (finish reason not a length/turn/code-call limit)
     with an answer (the paper: a trajectory that submitted a patch);
  2. ``tests``: the most of the task's tests passed (public/execution tests; the paper's regression
     tests): code problems' public examples, or ``tests`` from ctx;
  3. ``generated_tests``: the best score on generated (reproduction) tests, where the problem has
     them (``generated_tests`` in ctx or ``problem.metadata["generated_tests"]``), else skipped;
  4. ``verifier``: the learned verifier's p(YES) above ``verifier_threshold`` (default 0.05); our
     verifier is a Bradley–Terry scorer, so p(YES) = σ(score) unless the scorer has ``p_yes``;
  5. ``length``: of what is left, the ``longest`` (default; the paper on SWE-bench Verified) or the
     ``shortest`` (its choice on Lite) in generated tokens (characters when not recorded); equal
     lengths go to the first in candidate order (random in :func:`tts_curves`).

- ``weighted``: our earlier linear score (not the paper's rule), every term in [0, 1]::

      score_i = w_v · (v_i − min v) / (max v − min v) + w_c · votes(answer_i) / N + w_e · pass_rate_i

  v = verifier scores (min-max normalised within the N candidates, 0 when all equal), consensus =
  the share of candidates with the same answer, pass_rate = share of public tests passed (code
  tasks; 0 otherwise). Defaults w_v = w_c = 1, w_e = 3: since w_e > w_v + w_c, passing all public
  tests outranks passing none whatever the other signals say, and candidates equal on tests are
  ranked by verifier and consensus with equal weight. Ties → majority among them.
- ``random`` and ``oracle`` (a correct candidate when there is one: its accuracy is pass@N).

:func:`tts_curves` measures every selector against N; :func:`plot_tts_curves` draws them.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import hashlib
import json
import logging
import math
import random
import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reasonlab.analysis.diversity import (
    DEFAULT_MODE,
    Mode,
    PairwiseDistance,
    answer_counts,
    last_code_block,
    solution_key,
)
from reasonlab.episode import Episode, Problem

log = logging.getLogger(__name__)

Selector = Callable[..., int]


# ----------------------------------------------------------------------------- votes and ties


def _majority_among(keys: Sequence[str | None], among: Sequence[int]) -> int:
    """Index (from ``among``) of the first candidate whose key has the most votes within ``among``."""
    votes = Counter(keys[i] for i in among if keys[i] is not None)
    if not votes:
        return among[0]
    top = max(votes.values())
    return next(i for i in among if keys[i] is not None and votes[keys[i]] == top)


def best_index(values: Sequence[float], candidates: Sequence[Episode], eps: float = 1e-9) -> int:
    """argmax of ``values``; ties (within ``eps``) are broken by majority among the tied candidates."""
    top = max(values)
    tied = [i for i, v in enumerate(values) if v >= top - eps]
    if len(tied) == 1:
        return tied[0]
    keys = [None] * len(candidates)
    for i in tied:
        keys[i] = solution_key(candidates[i])
    return _majority_among(keys, tied)


# ----------------------------------------------------------------------------- baselines and majority


def majority(candidates: Sequence[Episode], **ctx: Any) -> int:
    """Majority vote over normalised answers; see the module docstring for ties."""
    return _majority_among([solution_key(e) for e in candidates], range(len(candidates)))


def random_choice(candidates: Sequence[Episode], *, rng: random.Random | None = None, **ctx: Any) -> int:
    """A uniformly random candidate (``rng`` from ctx, else a fixed seed): accuracy = mean accuracy."""
    return (rng or random.Random(0)).randrange(len(candidates))


def oracle(candidates: Sequence[Episode], **ctx: Any) -> int:
    """A correct candidate if any (the first), else 0. Its accuracy over subsets is pass@N."""
    return next((i for i, e in enumerate(candidates) if e.correct), 0)


# ----------------------------------------------------------------------------- execution

_ARROW = re.compile(r"^\s*(?:#\s*)?(?:should\s+return|should\s+be|returns?|==>|=>|==|➞|->|→|=)"
                    r"\s*(.+?)\s*$", re.IGNORECASE)
_EXEC_CACHE: dict[str, int] = {}
_EXEC_CACHE_MAX = 200_000
_sandbox = None
_sandbox_lock = threading.Lock()

_HARNESS = '''

import math as _rl_math, signal as _rl_signal
def _rl_eq(a, b):
    if isinstance(a, float) or isinstance(b, float):
        try:
            return _rl_math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
        except TypeError:
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_rl_eq(x, y) for x, y in zip(a, b))
    return a == b
def _rl_timeout(*_):
    raise TimeoutError
_rl_passed = 0
for _rl_src, _rl_want in {tests!r}:
    try:
        _rl_signal.signal(_rl_signal.SIGALRM, _rl_timeout)
        _rl_signal.setitimer(_rl_signal.ITIMER_REAL, {per_test_s!r})
        if _rl_eq(eval(_rl_src), eval(_rl_want)):
            _rl_passed += 1
    except BaseException:
        pass
    finally:
        _rl_signal.setitimer(_rl_signal.ITIMER_REAL, 0)
print({sentinel!r} + str(_rl_passed))
'''


def _default_sandbox():
    global _sandbox
    with _sandbox_lock:
        if _sandbox is None:
            import atexit

            from reasonlab.sandbox import Sandbox, SandboxConfig

            _sandbox = Sandbox(SandboxConfig(timeout_s=10.0, memory_mb=1024))
            atexit.register(_sandbox.close)
        return _sandbox


def _call_end(line: str, start: int) -> int | None:
    """Index just past the parenthesis closing the one at ``start`` (quotes respected), or None."""
    depth, quote, i = 0, None, start
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _literal(src: str) -> bool:
    try:
        ast.literal_eval(src)
        return True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def _literal_call(src: str, entry_point: str) -> bool:
    """``src`` is ``entry_point(<literals>)``: a test, not prose (``is_happy(a)``) or other code."""
    try:
        node = ast.parse(src, mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return False
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point
            and not node.keywords and all(_literal(ast.unparse(a)) for a in node.args))


def _want(text: str) -> str:
    """An expected value as written: cut at the docstring's end, ``true``/``false`` as Python's."""
    text = re.split(r'"""|\'\'\'', text)[0].strip().rstrip(".,;").strip()
    return {"true": "True", "false": "False", "none": "None"}.get(text.lower(), text)


def public_tests(prompt: str, entry_point: str) -> list[tuple[str, str]]:
    """The examples a prompt's docstring shows, as (call expression, expected literal) pairs.

    Two forms: doctest (``>>> f(1)`` then ``2`` on the next line, via :mod:`doctest`'s parser) and
    one-line examples ``f(1) == 2`` / ``f(1) ➞ 2`` / ``f(1) => 2`` / ``f(1) -> 2`` / ``f(1) returns 2``
    / ``f(1) should return 2``. Only calls of ``entry_point`` on literals whose expected value is a
    literal are kept (``f(x) -> 19 - 5 - 6 = 8`` is prose, not a test). On HumanEval: 395 tests for
    139 of the 164 problems; the canonical solutions pass them all except on 4 problems whose
    docstrings are wrong (47, 116, 130, 148), a reminder that public examples are noisy evidence.
    """
    tests: list[tuple[str, str]] = []
    try:
        examples = doctest.DocTestParser().get_examples(prompt)
    except ValueError:  # inconsistent indentation in a docstring
        examples = []
    for ex in examples:
        src = ex.source.strip()
        # doctest's expected output runs to the next blank line, which may hold more examples
        want = next((w for w in (_want(ex.want), _want(ex.want.split("\n")[0])) if w and _literal(w)), None)
        if want is not None and _literal_call(src, entry_point):
            tests.append((src, want))
    call = re.compile(rf"(?<![\w.]){re.escape(entry_point)}\s*\(")
    for line in prompt.splitlines():  # ``>>> f(1) == 2`` lines are caught here too
        m = call.search(line)
        end = _call_end(line, m.end() - 1) if m else None
        if end is None:
            continue
        arrow = _ARROW.match(line[end:])
        if not arrow:
            continue
        src, want = line[m.start() : end], _want(re.sub(r"\s+#.*$", "", arrow.group(1)))
        if _literal_call(src, entry_point) and _literal(want):
            tests.append((src, want))
    return list(dict.fromkeys(tests))  # drop duplicates, keep order


def candidate_program(e: Episode, prompt: str, entry_point: str) -> str | None:
    """The candidate's last code block, completed with the prompt when it lacks ``def entry_point``."""
    code = last_code_block(e.completion)
    if code is None:
        return None
    if re.search(rf"def\s+{re.escape(entry_point)}\s*\(", code):
        return code
    return prompt + code


def pass_rates(candidates: Sequence[Episode], tests: Sequence[tuple[str, str]], *, prompt: str,
               entry_point: str, sandbox: Any = None, timeout_s: float = 10.0,
               per_test_s: float = 2.0) -> list[float]:
    """Share of ``tests`` each candidate's program passes, run in the sandbox (in parallel).

    Each test is evaluated separately (an exception or a ``per_test_s`` timeout fails that test
    only); the count is printed after a random sentinel so that neither an early ``exit(0)`` nor
    printed text can pass a test. Results are memoised by program text, so :func:`tts_curves`
    runs each distinct program once. No tests, or no code: 0.0.
    """
    if not tests:
        return [0.0] * len(candidates)
    sandbox = sandbox or _default_sandbox()
    tests = [tuple(t) for t in tests]
    programs = [candidate_program(e, prompt, entry_point) for e in candidates]
    keys = [None if p is None else hashlib.sha256(json.dumps([p, tests, per_test_s]).encode()).hexdigest()
            for p in programs]
    todo: dict[str, Any] = {}
    for prog, key in zip(programs, keys):
        if key is not None and key not in _EXEC_CACHE and key not in todo:
            sentinel = f"\n<reasonlab-passed-{secrets.token_hex(8)}>"
            code = prog + _HARNESS.format(tests=tests, per_test_s=per_test_s, sentinel=sentinel)
            todo[key] = (sentinel, sandbox.submit(code, timeout_s=timeout_s))
    for key, (sentinel, fut) in todo.items():
        res = fut.result()
        out = (res.stdout or "").rstrip()
        tag = sentinel.strip()
        passed = 0
        if tag in out:
            tail = out.rsplit(tag, 1)[1].strip()
            passed = int(tail) if tail.isdigit() and "\n" not in tail else 0
        if len(_EXEC_CACHE) >= _EXEC_CACHE_MAX:
            _EXEC_CACHE.clear()
        _EXEC_CACHE[key] = min(passed, len(tests))
    return [0.0 if key is None else _EXEC_CACHE[key] / len(tests) for key in keys]


def _code_context(problem: Problem | None,
                  tests: Sequence[tuple[str, str]] | None) -> tuple[str, str, list] | None:
    """(prompt, entry_point, tests) for a code problem, or None when it is not one."""
    if problem is None or "entry_point" not in (problem.metadata or {}):
        return None
    prompt = problem.metadata.get("prompt", problem.question)
    entry = problem.metadata["entry_point"]
    return prompt, entry, list(tests) if tests is not None else public_tests(prompt, entry)


def public_pass_rates(candidates: Sequence[Episode], *, problem: Problem | None = None,
                      tests: Sequence[tuple[str, str]] | None = None, sandbox: Any = None,
                      per_test_s: float = 2.0, **ctx: Any) -> list[float] | None:
    """Public-test pass rates of the candidates, or None when ``problem`` is not a code problem."""
    code = _code_context(problem, tests)
    if code is None:
        return None
    prompt, entry, tests = code
    return pass_rates(candidates, tests, prompt=prompt, entry_point=entry, sandbox=sandbox,
                      per_test_s=per_test_s)


def execution_public(candidates: Sequence[Episode], *, problem: Problem | None = None, **ctx: Any) -> int:
    """Most public tests passed (docstring examples, run in the sandbox); ties → majority among them.

    Needs ``problem`` with ``metadata["entry_point"]`` (and ``metadata["prompt"]``, else the question).
    Optional ctx: ``tests`` (overrides the extracted examples), ``sandbox``, ``per_test_s``.
    A prompt without examples makes every rate 0: majority.
    """
    rates = public_pass_rates(candidates, problem=problem, **ctx)
    if rates is None:
        raise ValueError("execution_public needs problem= a code problem (metadata with 'entry_point')")
    return best_index(rates, candidates)


def execution_oracle(candidates: Sequence[Episode], **ctx: Any) -> int:
    """Most *hidden* tests passed: ``Episode.correct``, which the task's scorer set by running them.

    An oracle: the hidden tests are what grades the answer, so this is pass@N with majority among
    the passing; report it as an upper bound for execution-based selection, never as a method.
    """
    return best_index([float(e.correct) for e in candidates], candidates)


# ----------------------------------------------------------------------------- learned verifier (ORM)


def preference_pairs(episodes: Iterable[Episode], *, max_pairs_per_problem: int = 16,
                     seed: int = 0) -> list[tuple[Episode, Episode]]:
    """(correct, incorrect) pairs of episodes of the same problem; a seeded sample of at most
    ``max_pairs_per_problem`` per problem (all c × w pairs would over-weight problems with many
    samples). Problems where every sample is right, or every one wrong, give no pair."""
    from reasonlab.analysis.metrics import group_by_problem

    rng = random.Random(seed)
    pairs = []
    for pid, group in sorted(group_by_problem(episodes).items()):
        good = [e for e in group if e.correct]
        bad = [e for e in group if not e.correct]
        combos = [(g, b) for g in good for b in bad]
        if len(combos) > max_pairs_per_problem:
            combos = rng.sample(combos, max_pairs_per_problem)
        pairs += combos
    rng.shuffle(pairs)
    return pairs


def verifier_ids(tokenizer: Any, e: Episode, max_length: int) -> list[int]:
    """Token ids the verifier reads: the whole conversation in the SFT/agent layout, ending with the
    end-of-turn token; when longer than ``max_length`` the middle is cut, keeping the first quarter
    (the problem) and the rest from the end (where the answer and its checks are)."""
    from reasonlab.train.sft import tokenize_episode

    ids, _ = tokenize_episode(tokenizer, e.messages)
    if len(ids) > max_length:
        head = max_length // 4
        ids = ids[:head] + ids[len(ids) - (max_length - head) :]
    return ids


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    from reasonlab.models import CHATML_TEMPLATE

    tok = AutoTokenizer.from_pretrained(path)
    if tok.chat_template is None:
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def train_verifier(episodes: Sequence[Episode], model_path: str, out: str | Path, steps: int = 200, *,
                   lr: float = 1e-4, batch_size: int = 8, max_length: int = 1024,
                   max_pairs_per_problem: int = 16, dtype: str = "fp32", gradient_checkpointing: bool = False,
                   center_rewards: float | None = 0.01, logging_steps: int = 10, seed: int = 0,
                   show_progress: bool = False) -> Path:
    """Train an outcome reward model on labelled episodes and save it (HF folder) to ``out``.

    Bradley–Terry on (correct ≻ incorrect) pairs of the same problem (:func:`preference_pairs`),
    TRL's ``RewardTrainer``: ``loss = −log σ(r(chosen) − r(rejected))`` (+ ``center_rewards`` ·
    mean r², TRL's recommended 0.01, keeping rewards near 0). The model is
    ``AutoModelForSequenceClassification(model_path, num_labels=1)``: the causal LM's body and a new
    scalar head read at the last token. Data goes in pre-tokenized (``chosen_ids``/``rejected_ids``,
    TRL's processed format) so that training and :class:`VerifierScorer` see the same ids.
    ``model_path``: anything :func:`reasonlab.models.resolve_model` accepts. Returns ``out``.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from reasonlab.models import resolve_model

    path = resolve_model(model_path)
    pairs = preference_pairs(episodes, max_pairs_per_problem=max_pairs_per_problem, seed=seed)
    if not pairs:
        raise ValueError("no (correct, incorrect) pair: the verifier needs problems with both right and "
                         "wrong samples")
    tok = _load_tokenizer(path)
    data = Dataset.from_dict({
        "chosen_ids": [verifier_ids(tok, g, max_length) for g, _ in pairs],
        "rejected_ids": [verifier_ids(tok, b, max_length) for _, b in pairs],
    })
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    out = Path(out)
    # transformers 5 renamed gradient checkpointing (the old name warns); TRL's default is on
    fields = RewardConfig.__dataclass_fields__
    ckpt = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    args = RewardConfig(
        **{ckpt: gradient_checkpointing},
        output_dir=str(out),
        max_steps=steps,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        max_length=None,  # already cut to max_length (TRL would drop long pairs instead)
        center_rewards_coefficient=center_rewards,
        bf16=dtype == "bf16",
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        logging_steps=logging_steps,
        report_to="none",
        seed=seed,
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    if not show_progress:  # quiet: no per-log dict printed either
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    meta = {"kind": "verifier", "base": path, "pairs": len(pairs), "steps": steps, "max_length": max_length,
            "problems": len({g.problem_id for g, _ in pairs})}
    (out / "reasonlab.json").write_text(json.dumps(meta))
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return out


class VerifierScorer:
    """Scores episodes with a verifier from :func:`train_verifier` (higher = more likely correct).

    ``VerifierScorer(path).score(episodes) -> list[float]``; no grad, batched by length, memoised by
    token ids (a candidate seen in many subsets of :func:`tts_curves` is scored once).
    """

    def __init__(self, path: str | Path, *, device: str | None = None, batch_size: int = 8,
                 max_length: int | None = None, dtype: str = "fp32"):
        import torch
        from transformers import AutoModelForSequenceClassification

        path = str(path)
        meta_file = Path(path) / "reasonlab.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        self.max_length = max_length or meta.get("max_length", 1024)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer = _load_tokenizer(path)
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch_dtype)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()
        self._cache: dict[tuple[int, ...], float] = {}
        self._ids: dict[tuple, tuple[int, ...]] = {}

    def ids(self, e: Episode) -> tuple[int, ...]:
        """The episode's verifier ids, memoised by its messages (rendering a chat template is slow)."""
        key = tuple((m["role"], m["content"]) for m in e.messages)
        if key not in self._ids:
            self._ids[key] = tuple(verifier_ids(self.tokenizer, e, self.max_length))
        return self._ids[key]

    def score(self, episodes: Sequence[Episode]) -> list[float]:
        import torch

        keys = [self.ids(e) for e in episodes]
        todo = sorted({k for k in keys if k not in self._cache}, key=len)
        pad = self.model.config.pad_token_id
        with torch.inference_mode():
            for s in range(0, len(todo), self.batch_size):
                batch = todo[s : s + self.batch_size]
                width = max(len(k) for k in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attn = torch.zeros((len(batch), width), dtype=torch.long)
                for r, k in enumerate(batch):
                    ids[r, : len(k)] = torch.tensor(k)
                    attn[r, : len(k)] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=attn.to(self.device)).logits
                for k, v in zip(batch, logits[:, 0].float().cpu().tolist()):
                    self._cache[k] = v
        return [self._cache[k] for k in keys]


def pairwise_accuracy(scores: Sequence[float], episodes: Sequence[Episode]) -> float | None:
    """How often a verifier ranks a correct episode above an incorrect one of the same problem
    (ties count ½): the within-problem AUC, 0.5 for chance. None when there is no such pair."""
    by_problem: dict[str, tuple[list[float], list[float]]] = {}
    for s, e in zip(scores, episodes):
        by_problem.setdefault(e.problem_id, ([], []))[0 if e.correct else 1].append(s)
    right = total = 0.0
    for good, bad in by_problem.values():
        for g in good:
            for b in bad:
                right += 1.0 if g > b else 0.5 if g == b else 0.0
                total += 1
    return right / total if total else None


def verifier(candidates: Sequence[Episode], *, scorer: Any, **ctx: Any) -> int:
    """The candidate the verifier (``scorer.score``) rates highest; ties → majority among them."""
    return best_index(scorer.score(list(candidates)), candidates)


# ----------------------------------------------------------------------------- LLM judge

JUDGE_PROMPT = """Below is a problem and {n} candidate solutions written by different solvers.
Decide which candidate is most likely to be fully correct. Check the reasoning and the final answer of
each; do not prefer a candidate for being longer or more confident.

<problem>
{problem}
</problem>

{candidates}

Think briefly, then give the number of the best candidate (1 to {n}) as <choice>K</choice>."""

_CHOICE_PATTERNS = [
    re.compile(r"<choice>\s*(?:candidate\s*)?#?\s*(\d+)\s*</choice>", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*(?:candidate\s*)?#?\s*(\d+)\s*\}", re.IGNORECASE),
    re.compile(r"(?:final answer|final choice|best candidate|my choice|choice|i choose|i pick|i select"
               r"|winner)"
               r"\s*(?:is|:|=)?\s*(?:\*\*)?\s*(?:candidate\s*)?#?\s*(\d+)\b", re.IGNORECASE),
    re.compile(r"^\s*(?:candidate\s*)?#?\s*(\d+)\s*\.?\s*$", re.IGNORECASE),
]


def parse_choice(reply: str | None, n: int) -> int | None:
    """0-based index named by a judge reply, or None when it names none in 1..n.

    Tried in order, each taking its *last* match (a judge may think aloud first): ``<choice>K</choice>``,
    ``\\boxed{K}``, phrases like "final answer: candidate 3" / "I choose #2", and a bare number.
    A mere mention ("candidate 2 is wrong") is never taken as a choice.
    """
    text = (reply or "")[-20_000:]
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            k = int(found[-1])
            return k - 1 if 1 <= k <= n else None
    return None


def trajectory_text(e: Episode, max_chars: int = 4000) -> str:
    """What the judge sees of a candidate: everything after the prompt (assistant turns and tool
    outputs), keeping the end when too long (the answer is there)."""
    first = next((i for i, m in enumerate(e.messages) if m["role"] == "assistant"), len(e.messages))
    text = "".join(m["content"] for m in e.messages[first:])
    return text if len(text) <= max_chars else "[…]" + text[-max_chars:]


class LLMJudge:
    """Picks a candidate by asking an LLM (an :class:`~reasonlab.rollout.openai_client.OpenAIChat`).

    ``mode="all"``: one request shows every candidate. ``mode="pairwise"``: a knockout bracket of
    two-candidate requests (N − 1 requests, log2 N rounds run concurrently), for long candidates or
    weak judges. A reply without a parseable choice is retried once (another sample index), then
    the decision falls back to majority voting (for a pair: the candidate whose answer has more
    votes among all N); failed requests fall back the same way. ``stats`` counts calls, malformed
    replies, failures and fallbacks. Use as a selector: ``judge(candidates, problem=p)`` or
    ``llm_judge(candidates, judge=judge, problem=p)``; from async code, ``await judge.aselect(...)``.
    Each candidate shows its last ``max_chars`` characters, fewer when N is large so that a request
    stays within ``max_total_chars``.
    """

    def __init__(self, client: Any, *, mode: str = "all", max_tokens: int = 1024, temperature: float = 0.0,
                 max_chars: int = 4000, max_total_chars: int = 48_000, retries: int = 1):
        if mode not in ("all", "pairwise"):
            raise ValueError(f"unknown judge mode {mode!r}; use 'all' or 'pairwise'")
        self.client, self.mode, self.retries = client, mode, retries
        self.max_chars, self.max_total_chars = max_chars, max_total_chars
        self.params = {"max_tokens": max_tokens, "temperature": temperature}
        self.stats = {"calls": 0, "malformed": 0, "failed": 0, "fallbacks": 0}

    def messages(self, question: str, candidates: Sequence[Episode]) -> list[dict[str, str]]:
        """The request: each candidate's tail, ``max_chars`` at most and ``max_total_chars`` in all."""
        per = min(self.max_chars, max(500, self.max_total_chars // len(candidates)))
        body = "\n\n".join(f'<candidate id="{i + 1}">\n{trajectory_text(e, per)}\n</candidate>'
                           for i, e in enumerate(candidates))
        text = JUDGE_PROMPT.format(n=len(candidates), problem=question, candidates=body)
        return [{"role": "user", "content": text}]

    async def _ask(self, question: str, candidates: Sequence[Episode]) -> int | None:
        from reasonlab.rollout.openai_client import BudgetExceeded, RequestFailed

        msgs = self.messages(question, candidates)
        for attempt in range(self.retries + 1):
            self.stats["calls"] += 1
            try:
                res = await self.client.achat(msgs, sample_index=attempt, **self.params)
            except (RequestFailed, BudgetExceeded) as e:
                self.stats["failed"] += 1
                log.warning("judge request failed: %s", str(e)[:200])
                return None
            choice = parse_choice(res.text, len(candidates))
            if choice is not None:
                return choice
            self.stats["malformed"] += 1
        return None

    async def aselect(self, candidates: Sequence[Episode], *, problem: Problem | None = None,
                      question: str | None = None, **ctx: Any) -> int:
        if len(candidates) == 1:
            return 0
        question = question or _question(candidates, problem)
        keys = [solution_key(e) for e in candidates]
        if self.mode == "all":
            choice = await self._ask(question, candidates)
            if choice is None:
                self.stats["fallbacks"] += 1
                return _majority_among(keys, range(len(candidates)))
            return choice
        votes = Counter(k for k in keys if k is not None)
        alive = list(range(len(candidates)))
        while len(alive) > 1:
            pairs = [alive[i : i + 2] for i in range(0, len(alive) - 1, 2)]
            bye = [alive[-1]] if len(alive) % 2 else []
            picks = await asyncio.gather(*(self._ask(question, [candidates[a], candidates[b]])
                                           for a, b in pairs))
            winners = []
            for (a, b), pick in zip(pairs, picks):
                if pick is None:
                    self.stats["fallbacks"] += 1
                    winners.append(b if votes.get(keys[b], 0) > votes.get(keys[a], 0) else a)
                else:
                    winners.append((a, b)[pick])
            alive = winners + bye
        return alive[0]

    def __call__(self, candidates: Sequence[Episode], **ctx: Any) -> int:
        return asyncio.run(self.aselect(candidates, **ctx))


def _question(candidates: Sequence[Episode], problem: Problem | None) -> str:
    if problem is not None:
        return problem.question
    users = [m["content"] for m in candidates[0].messages if m["role"] == "user"]
    return users[0] if users else ""


def llm_judge(candidates: Sequence[Episode], *, judge: LLMJudge, **ctx: Any) -> int:
    """Selector form of :class:`LLMJudge` (the judge comes in ctx)."""
    return judge(candidates, **ctx)


# ----------------------------------------------------------------------------- hybrid (EntroPO) and weighted

UNFINISHED = frozenset({"length", "max_turns", "max_code_calls"})
TIE_BREAKS = ("longest", "shortest")


def finished(e: Episode) -> bool:
    """The trajectory ended on its own (not cut by a token, turn or code-call limit) with an answer."""
    return e.stats.get("finish_reason") not in UNFINISHED and solution_key(e) is not None


def _length(e: Episode) -> int:
    n = e.stats.get("generated_tokens")
    return int(n) if n else len(e.completion)


def _keep_best(alive: list[int], values: Sequence[float], eps: float = 1e-9) -> list[int]:
    top = max(values[i] for i in alive)
    return [i for i in alive if values[i] >= top - eps]


def _p_yes(scorer: Any, candidates: Sequence[Episode]) -> list[float]:
    if hasattr(scorer, "p_yes"):
        return list(scorer.p_yes(list(candidates)))
    return [1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, s)))) for s in scorer.score(list(candidates))]


def hybrid_stages(candidates: Sequence[Episode], *, scorer: Any = None, problem: Problem | None = None,
                  tests: Sequence[tuple[str, str]] | None = None,
                  generated_tests: Sequence[tuple[str, str]] | None = None,
                  verifier_threshold: float = 0.05, tie_break: str = "longest",
                  sandbox: Any = None, per_test_s: float = 2.0, **ctx: Any) -> list[tuple[str, list[int]]]:
    """The cascade of :func:`hybrid`, stage by stage: ``[(stage, indices kept after it), …]``.

    Stages that ran are listed (``finished``, ``tests``, ``generated_tests``, ``verifier``,
    ``length``); a skipped stage (no signal) is absent; a stage that would keep no candidate keeps
    the survivors of the stage before. The last entry holds exactly one index, the choice.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    if not 0 <= verifier_threshold < 1:
        raise ValueError(f"verifier_threshold is a probability in [0, 1), got {verifier_threshold}")
    alive = list(range(len(candidates)))
    stages: list[tuple[str, list[int]]] = []

    def keep(name: str, survivors: list[int]) -> None:
        nonlocal alive
        alive = survivors or alive
        stages.append((name, list(alive)))

    keep("finished", [i for i in alive if finished(candidates[i])])
    if generated_tests is None and problem is not None:
        generated_tests = (problem.metadata or {}).get("generated_tests")
    for name, given in (("tests", tests), ("generated_tests", generated_tests or None)):
        code = _code_context(problem, given)
        if code is None or not code[2] or (name == "generated_tests" and given is None):
            continue  # not a code problem, or no such tests: the stage is skipped
        prompt, entry, cases = code
        rates = pass_rates(candidates, cases, prompt=prompt, entry_point=entry, sandbox=sandbox,
                           per_test_s=per_test_s)
        keep(name, _keep_best(alive, rates))
    if scorer is not None:
        p = _p_yes(scorer, [candidates[i] for i in alive])
        keep("verifier", [i for i, pi in zip(alive, p) if pi > verifier_threshold])
    lengths = [_length(candidates[i]) for i in alive]
    pick = lengths.index(max(lengths) if tie_break == "longest" else min(lengths))
    stages.append(("length", [alive[pick]]))
    return stages


def hybrid(candidates: Sequence[Episode], *, scorer: Any = None, problem: Problem | None = None,
           verifier_threshold: float = 0.05, tie_break: str = "longest", **ctx: Any) -> int:
    """EntroPO's released selection cascade (module docstring): finished → most tests passed → best on
    generated tests → verifier p(YES) > threshold → length tie-break. Options in ctx as for
    :func:`execution_public` (``tests``, ``sandbox``, ``per_test_s``) and ``generated_tests``."""
    return hybrid_stages(candidates, scorer=scorer, problem=problem, verifier_threshold=verifier_threshold,
                         tie_break=tie_break, **ctx)[-1][1][0]


def weighted_scores(candidates: Sequence[Episode], *, verifier_scores: Sequence[float] | None = None,
                    pass_rates: Sequence[float] | None = None, w_v: float = 1.0, w_c: float = 1.0,
                    w_e: float = 3.0) -> list[float]:
    """``w_v · minmax(v) + w_c · consensus + w_e · pass_rate`` per candidate (module docstring)."""
    n = len(candidates)
    v = [0.0] * n
    if verifier_scores is not None:
        lo, hi = min(verifier_scores), max(verifier_scores)
        if hi > lo:
            v = [(s - lo) / (hi - lo) for s in verifier_scores]
    keys = [solution_key(e) for e in candidates]
    votes = Counter(k for k in keys if k is not None)
    c = [votes[k] / n if k is not None else 0.0 for k in keys]
    p = list(pass_rates) if pass_rates is not None else [0.0] * n
    return [w_v * vi + w_c * ci + w_e * pi for vi, ci, pi in zip(v, c, p)]


def weighted(candidates: Sequence[Episode], *, scorer: Any = None, problem: Problem | None = None,
             w_v: float = 1.0, w_c: float = 1.0, w_e: float = 3.0, **ctx: Any) -> int:
    """Verifier + consensus + public-test execution as one weighted score (module docstring; ours,
    not the paper's rule, which is :func:`hybrid`).

    Each signal is optional: no ``scorer`` drops the verifier term, a non-code ``problem`` (or none)
    drops the execution term. With neither, this is majority voting. Execution options as for
    :func:`execution_public` (``tests``, ``sandbox``, ``per_test_s`` in ctx).
    """
    v = scorer.score(list(candidates)) if scorer is not None else None
    rates = public_pass_rates(candidates, problem=problem, **ctx)
    scores = weighted_scores(candidates, verifier_scores=v, pass_rates=rates, w_v=w_v, w_c=w_c, w_e=w_e)
    return best_index(scores, candidates)


SELECTORS: dict[str, Selector] = {
    "majority": majority,
    "execution": execution_public,
    "execution_public": execution_public,
    "execution_oracle": execution_oracle,
    "verifier": verifier,
    "llm_judge": llm_judge,
    "hybrid": hybrid,
    "weighted": weighted,
    "random": random_choice,
    "oracle": oracle,
}


# ----------------------------------------------------------------------------- scaling curves


def tts_curves(episodes_by_problem: Mapping[str, Sequence[Episode]] | Sequence[Episode],
               selectors: Mapping[str, Selector], Ns: Sequence[int] | None = None,
               seeds: Sequence[int] = (0, 1, 2), *,
               problems: Mapping[str, Problem] | None = None, diversity_mode: Mode = DEFAULT_MODE,
               **ctx: Any) -> dict[str, Any]:
    """Selected accuracy against N for every selector, with oracle pass@N and candidate diversity.

    For each seed and problem, one random permutation of its samples is drawn and the first N are
    the candidates at N: subsets are *nested* across N (common random numbers: the curves compare
    Ns on the same draws, and the oracle curve never decreases), in random order (so order-based
    tie-breaking is fair). Accuracy at N = mean over seeds of the mean over problems that have at
    least N samples; ``accuracy_se`` is the standard error over seeds. ``pass@N`` is the exact
    unbiased estimator over all samples (Chen et al. 2021). Diversity at N: mean over the same
    subsets of distinct answers (count and fraction), distinct correct solutions and mean pairwise
    distance (``diversity_mode``). Every selector gets ``problem=problems[pid]`` (when given),
    ``rng`` (seeded per seed, problem, N and selector) and ``ctx``.

    ``Ns`` defaults to 1, 2, 4, … up to the smallest sample count.
    """
    from reasonlab.analysis.metrics import default_ks, group_by_problem, pass_at_k
    from reasonlab.tasks.base import stable_hash

    groups = (dict(episodes_by_problem) if isinstance(episodes_by_problem, Mapping)
              else group_by_problem(episodes_by_problem))
    groups = {pid: list(g) for pid, g in groups.items() if g}
    if not groups:
        raise ValueError("no episodes")
    Ns = sorted(set(Ns or default_ks(min(len(g) for g in groups.values()))))
    problems = problems or {}
    keys = {pid: [solution_key(e) for e in g] for pid, g in groups.items()}
    dist = {pid: PairwiseDistance([e.completion for e in g], diversity_mode) for pid, g in groups.items()}
    perms = {(s, pid): random.Random(stable_hash("tts", s, pid)).sample(range(len(g)), len(g))
             for s in seeds for pid, g in groups.items()}

    acc: dict[str, list[list[float]]] = {name: [] for name in selectors}  # [N index][seed]
    div_names = ("distinct_answers", "distinct_answer_frac", "distinct_correct", "mean_pairwise_distance")
    out: dict[str, Any] = {"Ns": Ns, "seeds": list(seeds), "problems": [], "pass@N": [],
                           "diversity_mode": diversity_mode, "diversity": {k: [] for k in div_names}}
    for N in Ns:
        pids = [pid for pid, g in groups.items() if len(g) >= N]
        out["problems"].append(len(pids))
        if not pids:  # no problem has N samples
            for name in selectors:
                acc[name].append([])
            out["pass@N"].append(None)
            for k in div_names:
                out["diversity"][k].append(None)
            continue
        exact = [pass_at_k(len(groups[p]), sum(e.correct for e in groups[p]), N) for p in pids]
        out["pass@N"].append(sum(exact) / len(pids))
        per_seed = {name: [] for name in selectors}
        div = {k: [] for k in div_names}
        for s in seeds:
            hits = {name: 0.0 for name in selectors}
            for pid in pids:
                idx = perms[(s, pid)][:N]
                cands = [groups[pid][i] for i in idx]
                for name, select in selectors.items():
                    rng = random.Random(stable_hash("select", s, pid, N, name))
                    chosen = select(cands, problem=problems.get(pid), rng=rng, **ctx)
                    hits[name] += float(cands[chosen].correct)
                counts = answer_counts(cands, [keys[pid][i] for i in idx])
                for k in ("distinct_answers", "distinct_answer_frac", "distinct_correct"):
                    div[k].append(counts[k])
                d = dist[pid].mean(idx)
                if d is not None:
                    div["mean_pairwise_distance"].append(d)
            for name in selectors:
                per_seed[name].append(hits[name] / len(pids))
        for name in selectors:
            acc[name].append(per_seed[name])
        for k in div_names:
            out["diversity"][k].append(sum(div[k]) / len(div[k]) if div[k] else None)
    out["accuracy"] = {name: [sum(v) / len(v) if v else None for v in rows] for name, rows in acc.items()}
    out["accuracy_se"] = {name: [_se(v) for v in rows] for name, rows in acc.items()}
    return out


def _se(values: Sequence[float]) -> float | None:
    if not values:
        return None
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def plot_tts_curves(curves: Mapping[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """PNG of :func:`tts_curves` output: accuracy vs N per selector (± s.e. over seeds) with the
    pass@N ceiling dashed, and candidate diversity vs N beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def nan(ys):  # missing points (None) are gaps in the lines
        return [math.nan if y is None else y for y in ys]

    Ns = curves["Ns"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = "osv^Dx*P"  # distinct markers keep coinciding curves (e.g. oracle-like selectors) visible
    for k, (name, ys) in enumerate(curves["accuracy"].items()):
        ys = nan(ys)
        se = nan(curves.get("accuracy_se", {}).get(name) or [0.0] * len(ys))
        ax.plot(Ns, ys, marker=markers[k % len(markers)], markersize=7 - 0.5 * (k % 4), label=name)
        ax.fill_between(Ns, [y - e for y, e in zip(ys, se)], [y + e for y, e in zip(ys, se)], alpha=0.15)
    ax.plot(Ns, nan(curves["pass@N"]), "k--", label="pass@N (oracle)")
    ax.set(xlabel="N (candidates per problem)", ylabel="accuracy of the selected candidate", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    div = curves["diversity"]
    ax2.plot(Ns, nan(div["distinct_answer_frac"]), marker="o", label="distinct answers / N")
    ax2.plot(Ns, nan(div["mean_pairwise_distance"]), marker="s",
             label=f"mean pairwise distance ({curves['diversity_mode']})")
    ax2.set(xlabel="N (candidates per problem)", ylabel="diversity", ylim=(0, 1.02))
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        if max(Ns) > 1:
            a.set_xscale("log", base=2)
        a.set_xticks(Ns, [str(n) for n in Ns])
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
