"""reasonlab's Python sandbox as a verl tool, and a ToolParser for our ```python block format.

Imports verl (0.9.1): load it only where verl runs. verl's tool agent loop
(``actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent``) loads the tool from the YAML
written by :func:`reasonlab.export.verl_config.export_rl` through ``verl.tools.tool_registry``, and
picks the parser named in ``multi_turn.format``; importing this module (which the registry does
when it loads the tool) registers the parser as ``reasonlab_python``.

Sessions. verl 0.9.1 calls ``create`` → ``execute`` → ``release`` around *every* tool call, and
gives no end-of-trajectory hook, so a tool instance cannot hold a trajectory's interpreter state.
:class:`PythonSandboxTool` keys sandbox sessions on the trajectory instead (``agent_data.request_id``,
which verl passes to ``execute``): variables defined in one code block are there in the next, as in
reasonlab's own agent loop. ``release`` leaves the session open; sessions idle for
``idle_timeout_s`` are closed on the next call (and ``max_sessions`` caps how many stay open: the
least recently used is closed first).

Output is shown to the model as reasonlab's agent loop shows it (``format_output``: stdout, stderr,
a timeout notice, head and tail kept when long). verl renders it as a ``tool`` message with the
model's chat template and gives those tokens ``response_mask`` 0, so interpreter output is masked
out of the loss.

Parser. :class:`PythonBlockParser` turns the first complete ```python … ``` block of a turn into a
call of the tool with ``{"code": ...}``; text without one ends the trajectory. verl 0.9.1 stops
generation only on EOS or token ids (``ToolParser.stop_token_ids``), not on strings, so a model that
keeps writing after its code block keeps those tokens; models fine-tuned on reasonlab episodes end
the turn after the block. The tool takes the same ``{"code"}`` arguments under verl's ``hermes``
parser, for models that call tools natively.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from reasonlab.rollout.agent import CODE_OPEN, FENCE, format_output

logger = logging.getLogger("reasonlab.export.verl_tool")

TOOL_NAME = "python"
SCHEMA = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Run Python code in a persistent interpreter and return what it prints.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "the Python code to run"}},
            "required": ["code"],
        },
    },
}


def first_code_block(text: str) -> tuple[str | None, int]:
    """The code of the first complete ```python block in ``text`` and the index after its fence."""
    start = text.find(CODE_OPEN)
    end = text.find("\n" + FENCE, start + len(CODE_OPEN)) if start >= 0 else -1
    if end < 0:
        return None, -1
    return text[start + len(CODE_OPEN):end].lstrip("\n").rstrip() + "\n", end + 1 + len(FENCE)


@ToolParser.register("reasonlab_python")
class PythonBlockParser(ToolParser):
    """verl ToolParser for ```python fenced blocks (reasonlab's agent format)."""

    async def extract_tool_calls(self, responses_ids: list[int], tools: list[OpenAIFunctionToolSchema] | None = None
                                 ) -> tuple[str, list[FunctionCall]]:
        import json

        text = await asyncio.get_running_loop().run_in_executor(None, self.tokenizer.decode, responses_ids)
        code, _ = first_code_block(text)
        if code is None:
            return text, []
        return text, [FunctionCall(name=TOOL_NAME, arguments=json.dumps({"code": code}))]


class PythonSandboxTool(BaseTool):
    """A verl ``BaseTool`` over :class:`reasonlab.sandbox.Sandbox`, one session per trajectory.

    Config keys (tool-config YAML ``config:``): ``timeout_s`` (per execution, 5), ``memory_mb`` (512),
    ``idle_timeout_s`` (300: sessions unused this long are closed), ``max_sessions`` (1024),
    ``max_output_chars`` (1024), ``pool_size`` (executions at a time, 4).
    """

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None):
        super().__init__(config, tool_schema or OpenAIFunctionToolSchema.model_validate(SCHEMA))
        from reasonlab.sandbox import Sandbox, SandboxConfig

        known = {"type", "timeout_s", "memory_mb", "idle_timeout_s", "max_sessions", "max_output_chars", "pool_size"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"PythonSandboxTool config: unknown key(s) {unknown}; allowed: {sorted(known)}")
        self.idle_timeout_s = float(config.get("idle_timeout_s", 300))
        self.max_sessions = int(config.get("max_sessions", 1024))
        self.max_output_chars = int(config.get("max_output_chars", 1024))
        self.sandbox = Sandbox(SandboxConfig(timeout_s=float(config.get("timeout_s", 5.0)),
                                             memory_mb=int(config.get("memory_mb", 512)),
                                             pool_size=int(config.get("pool_size", 4)),
                                             max_sessions=self.max_sessions + 8))
        self._sessions: OrderedDict[str, tuple[Any, float]] = OrderedDict()  # key → (session, last use)
        self._lock = threading.Lock()

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        return self.tool_schema

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    def _reap(self, now: float, keep: str) -> None:
        """Close sessions idle too long, then the least recently used ones beyond max_sessions (never ``keep``)."""
        stale = [k for k, (_, t) in self._sessions.items() if k != keep and now - t > self.idle_timeout_s]
        live = [k for k in self._sessions if k != keep and k not in stale]  # oldest first
        while live and len(live) + 1 > self.max_sessions:
            stale.append(live.pop(0))
        for k in stale:
            session, _ = self._sessions.pop(k)
            session.close()

    def _session(self, key: str):
        with self._lock:
            now = time.monotonic()
            self._reap(now, key)
            session = self._sessions.pop(key, (None, 0.0))[0] or self.sandbox.session()
            self._sessions[key] = (session, now)
            return session

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs) -> tuple[ToolResponse, float, dict]:
        code = parameters.get("code") if isinstance(parameters, dict) else None
        if not isinstance(code, str) or not code.strip():
            return ToolResponse(text="error: the python tool needs a non-empty 'code' string"), 0.0, {}
        agent_data = kwargs.get("agent_data")
        key = getattr(agent_data, "request_id", None) or instance_id
        session = await asyncio.to_thread(self._session, key)
        result = await session.arun(code)
        text = format_output(result, self.max_output_chars)
        metrics = {"timed_out": bool(result.timed_out), "exit_code": result.exit_code, "duration_s": result.duration_s}
        return ToolResponse(text=text), 0.0, metrics

    def close(self) -> None:
        with self._lock:
            sessions = [s for s, _ in self._sessions.values()]
            self._sessions.clear()
        for session in sessions:
            session.close()
        self.sandbox.close()
