"""What the zygote keeps track of: jobs (executions), their output, workers and sessions.

Stdlib only, loaded by path with _zygote.py.
"""

from __future__ import annotations

import os
import signal

import _wire


class Capture:
    """Bounded capture of one output stream: the head and the tail are kept, the middle is dropped."""

    def __init__(self, limit: int) -> None:
        self.limit, self.total = limit, 0
        self.keep_tail = limit // 4
        self.keep_head = limit - self.keep_tail
        self.head, self.tail = bytearray(), bytearray()

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.keep_head - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.keep_tail + 65536:
                del self.tail[: len(self.tail) - self.keep_tail]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        if not self.truncated:
            return (self.head + self.tail).decode("utf-8", "replace")
        tail = self.tail[len(self.tail) - self.keep_tail :] if self.keep_tail else b""
        dropped = self.total - len(self.head) - len(tail)
        return (
            self.head.decode("utf-8", "replace")
            + f"\n[... {dropped} bytes truncated ...]\n"
            + tail.decode("utf-8", "replace")
        )


class Job:
    """One stateless execution or one session cell, from request to result."""

    def __init__(self, msg: dict, limit: int, session: "Session | None" = None) -> None:
        self.id, self.code, self.stdin = msg["id"], msg["code"], msg.get("stdin", "")
        self.timeout = msg["timeout_s"]
        self.cpu_s = msg.get("cpu_s") or self.timeout
        self.session = session
        self.out, self.err = Capture(limit), Capture(limit)
        self.t0 = self.deadline = self.kill_deadline = None
        self.pid = None
        self.timed_out = self.done = False
        self.status = self.exc = self.failure = None
        self.cpu_used = 0.0  # CPU seconds of the process that ran it, once it is reaped
        self.notes: list[str] = []

    def request(self) -> dict:
        return {"code": self.code, "stdin": self.stdin, "cpu_s": self.cpu_s}


class Worker:
    """A pre-forked stateless worker: a spare until it gets its one job."""

    def __init__(self, pid: int, uid: int | None, workdir: str, fds: dict[str, int]) -> None:
        self.pid, self.uid, self.workdir, self.fds = pid, uid, workdir, fds
        self.job: Job | None = None
        self.decoder = _wire.Decoder(_wire.MAX_UNTRUSTED_FRAME)  # its status pipe: the code can write there
        self.record: dict | None = None
        self.failure: str | None = None


class Session:
    """A holder process that keeps globals between cells, plus the pipes to it (see _sessions.py)."""

    def __init__(self, sid: str, uid: int | None, workdir: str, echo: bool, cpu_s: float) -> None:
        self.sid, self.uid, self.workdir, self.echo, self.cpu_s = sid, uid, workdir, echo, cpu_s
        self.holder = self.exec_pid = None
        self.alive: set[int] = set()
        self.fds: dict[str, int] = {}
        self.decoder = _wire.Decoder(_wire.MAX_UNTRUSTED_FRAME)
        self.job: Job | None = None
        self.dead = True  # until a holder is spawned
        self.spawning = False  # a holder was asked of the forker and has not arrived yet
        self.lost = False


def signal_error(sig: int) -> str:
    known = {signal.SIGXCPU: "cpu time limit", signal.SIGXFSZ: "file size limit"}
    if sig in known:
        return known[sig]
    try:
        return f"killed by signal {sig} ({signal.Signals(sig).name})"
    except ValueError:
        return f"killed by signal {sig}"


def kill(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
