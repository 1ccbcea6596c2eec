"""A careful client for any OpenAI-compatible chat endpoint (hosted API, vLLM, llama.cpp server).

Used by the behavior judge and by trajectory collection. What it adds to the ``openai`` package:

- a concurrency limit (asyncio semaphore) shared by every caller of one client;
- retries with exponential backoff and jitter on 429, 5xx, timeouts and dropped connections,
  honouring ``Retry-After``; other 4xx errors are not retried (they will not get better);
- an on-disk cache (SQLite, one row per request key) so a re-run or a resumed run never pays twice
  for the same request; the key includes model, messages, sampling parameters and a sample index;
- token and cost accounting (prices per million tokens, configurable) and a budget that stops
  new requests once spent (:class:`BudgetExceeded`).

The ``openai`` package's own retries are disabled so that every attempt is counted here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class BudgetExceeded(RuntimeError):
    """The configured spending limit is reached; no further requests are sent."""


class RequestFailed(RuntimeError):
    """A request failed after every retry (or with an error that retrying cannot fix)."""


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Cache:
    """Key → JSON value in SQLite (atomic writes; safe across interrupted runs)."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT)")
        self._db.commit()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?)", (key, json.dumps(value)))
            self._db.commit()

    def close(self) -> None:
        self._db.close()


class OpenAIChat:
    """Args:
        base_url: e.g. ``http://127.0.0.1:8080/v1``; model: the served model's name.
        concurrency: most requests in flight; max_retries: attempts after the first.
        timeout_s: per-request timeout; cache: SQLite path or None.
        price_in / price_out: cost per million prompt / completion tokens; budget: stop above this cost.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "none",
        concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        cache: str | Path | None = None,
        price_in: float = 0.0,
        price_out: float = 0.0,
        budget: float | None = None,
    ):
        from openai import AsyncOpenAI

        self.base_url, self.model = base_url, model
        import openai

        # an HTTP client (connection pool) of our own per event loop: openai's default one can hand a
        # later loop a connection opened by an earlier, closed loop ("Event loop is closed")
        http = getattr(openai, "DefaultAsyncHttpx2Client", None) or openai.DefaultAsyncHttpxClient
        self._make_client = lambda: AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s,
                                                http_client=http(timeout=timeout_s))
        self._client: Any = None
        self._client_loop: Any = None
        self.concurrency = concurrency
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.cache = _Cache(cache) if cache else None
        self.price_in, self.price_out, self.budget = price_in, price_out, budget
        self.usage = Usage()
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: Any = None

    @property
    def client(self) -> Any:
        """The async OpenAI client of the running event loop: its connection pool belongs to one loop,
        and each sync call (``chat_many``, a judge's ``count``) runs its own ``asyncio.run``."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client, self._client_loop = self._make_client(), loop
        return self._client

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:  # one per event loop
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    def key(self, messages: list[dict], params: dict, sample_index: int) -> str:
        blob = json.dumps({"model": self.model, "messages": messages, "params": params, "i": sample_index},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    async def achat(self, messages: list[dict[str, str]], *, sample_index: int = 0, **params: Any) -> ChatResult:
        """One chat completion (cached). ``params``: max_tokens, temperature, top_p, stop, seed…"""
        k = self.key(messages, params, sample_index)
        if self.cache is not None:
            hit = self.cache.get(k)
            if hit is not None:
                self.usage.cached += 1
                return ChatResult(**{**hit, "cached": True})
        async with self._semaphore():
            # checked once a slot is free: requests that queued while the budget ran out stop here
            if self.budget is not None and self.usage.cost >= self.budget:
                raise BudgetExceeded(f"budget of {self.budget} spent ({self.usage.cost:.4f}); raise it to continue")
            res = await self._with_retries(messages, params)
        self.usage.requests += 1
        self.usage.prompt_tokens += res.prompt_tokens
        self.usage.completion_tokens += res.completion_tokens
        self.usage.cost += (res.prompt_tokens * self.price_in + res.completion_tokens * self.price_out) / 1e6
        if self.cache is not None:
            self.cache.put(k, {kk: v for kk, v in res.__dict__.items() if kk != "cached"})
        return res

    async def _with_retries(self, messages: list[dict], params: dict) -> ChatResult:
        import openai

        retryable = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError)
        for attempt in range(self.max_retries + 1):
            try:
                r = await self.client.chat.completions.create(model=self.model, messages=messages, **params)
                choice = r.choices[0]
                u = r.usage
                return ChatResult(
                    text=choice.message.content or "",
                    finish_reason=choice.finish_reason,
                    prompt_tokens=getattr(u, "prompt_tokens", 0) or 0,
                    completion_tokens=getattr(u, "completion_tokens", 0) or 0,
                )
            except retryable as e:
                name = type(e).__name__
                self.usage.errors[name] = self.usage.errors.get(name, 0) + 1
                if attempt == self.max_retries:
                    self.usage.failures += 1
                    raise RequestFailed(f"{self.base_url}: {name} after {attempt + 1} attempts: {e}") from None
                self.usage.retries += 1
                await asyncio.sleep(self._delay(attempt, e))
            except openai.APIStatusError as e:  # 400, 401, 404…: retrying will not help
                self.usage.failures += 1
                raise RequestFailed(f"{self.base_url}: HTTP {e.status_code}: {e.message}") from None

    def _delay(self, attempt: int, error: Exception) -> float:
        retry_after = None
        resp = getattr(error, "response", None)
        if resp is not None:
            try:
                retry_after = float(resp.headers.get("retry-after"))
            except (TypeError, ValueError):
                retry_after = None
        base = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        delay = base * (0.5 + random.random() / 2)  # jitter: calls that failed together spread out
        return min(self.max_backoff_s, max(delay, retry_after or 0.0))

    def chat_many(self, requests: list[tuple[list[dict], dict]], *, progress=None) -> list[ChatResult | Exception]:
        """Run many requests concurrently from synchronous code; failures come back as exceptions."""

        async def one(msgs, params):
            try:
                return await self.achat(msgs, **params)
            except (RequestFailed, BudgetExceeded) as e:
                return e
            finally:
                if progress:
                    progress(1)

        async def run():
            return await asyncio.gather(*(one(m, p) for m, p in requests))

        return asyncio.run(run())

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def wait_for_server(base_url: str, timeout_s: float = 120.0) -> None:
    """Block until ``GET {base_url}/models`` answers (for servers the tests or scripts start)."""
    import urllib.request

    deadline = time.time() + timeout_s
    last: Exception | None = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.25)
    raise TimeoutError(f"server at {base_url} did not answer within {timeout_s}s: {last}")
