"""The session half of the zygote: holder processes that keep a notebook's globals.

A session is a holder process (forked from the zygote, confined like a worker) that owns the
globals. For each cell the holder forks an executor; the executor announces itself, runs the
cell, and either takes over as the new holder ("done") or dies, in which case the holder reports
it ("ended") and the state from before the cell lives on (see _child.py). The messages come over
a socket the cell's code can also write to, so nothing in them is trusted blindly.

A mixin of Zygote, split off only to keep each file readable; it uses the zygote's selector,
pipes, process bookkeeping (owners) and clean-up.

Stdlib only, loaded by path with _zygote.py.
"""

from __future__ import annotations

import json
import os
import selectors

import _forker
import _wire
from _jobs import Capture, Job, Session, kill


def _alive(pid: int | None) -> bool:
    """Is pid a live process (not a zombie, not gone)?"""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _reaped(pid: int) -> bool:
    """Is pid gone altogether (exited and reaped by its parent)?"""
    return not os.path.exists(f"/proc/{pid}")


def invalid(msg: object, fields: dict) -> bool:
    """True unless msg is a dict whose listed fields have exactly the listed types (bool is not
    an int here) and whose ints are within 0..2**31. Control messages come from processes that
    ran sandboxed code, so the zygote checks every one before acting on it."""
    if not isinstance(msg, dict):
        return True
    for name, types in fields.items():
        value = msg.get(name)
        if type(value) not in types:
            return True
        if type(value) is int and not 0 <= value < 2**31:
            return True
        if type(value) is str and len(value) > 200:
            return True
    return False


class SessionsMixin:
    def open_session(self, sid: str, echo: bool, cpu_s: float) -> None:
        if not self.session_uids:  # its cells will fail with "too many open sessions"
            return
        uid = self.take_uid(self.session_uids)
        self.counter += 1
        workdir = os.path.join(self.cfg["workbase"], f"session-{self.counter}")
        session = Session(sid, uid, workdir, echo, cpu_s)
        self.sessions[sid] = session
        self.spawn_holder(session)

    def spawn_holder(self, s: Session) -> None:
        """Ask the forker (a clean process) for a holder; its cells wait until it arrives."""
        request = {"uid": s.uid, "name": os.path.basename(s.workdir), "sid": s.sid, "echo": s.echo,
                   "cpu_s": s.cpu_s}  # fmt: skip
        s.spawning, s.dead = True, False
        try:
            self.forker.send(json.dumps(request).encode())
        except (OSError, AttributeError):  # no forker right now: try again at the next dispatch
            s.spawning, s.dead = False, True

    def on_holder(self, msg: dict, fds: list[int]) -> None:
        """The forker made a holder: wire it up (or kill it, if its session closed meanwhile)."""
        s = self.sessions.get(msg["sid"])
        if s is None or not s.spawning:
            for fd in fds:
                os.close(fd)
            kill(msg["pid"])
            return
        out_r, err_r, ctl = fds
        for fd in fds:
            os.set_blocking(fd, False)
        s.fds = {"out": out_r, "err": err_r, "ctl": ctl}
        s.decoder = _wire.Decoder(_wire.MAX_UNTRUSTED_FRAME)
        s.holder, s.exec_pid, s.alive, s.spawning = msg["pid"], None, {msg["pid"]}, False
        self.owners[s.holder] = s
        self.sel.register(out_r, selectors.EVENT_READ, lambda: self.pump_session(s, "out"))
        self.sel.register(err_r, selectors.EVENT_READ, lambda: self.pump_session(s, "err"))
        self.sel.register(ctl, selectors.EVENT_READ, lambda: self.on_session(s))
        self.dispatch()

    def holder_failed(self, msg: dict) -> None:
        s = self.sessions.get(msg.get("sid"))
        if s is None:
            return
        s.spawning, s.dead = False, True
        for job in [j for j in self.pending if j.session is s]:
            self.pending.remove(job)
            job.failure = msg["error"]
            self.reply(job)

    def pump_session(self, s: Session, name: str) -> None:
        self.pump(s.fds, name, getattr(s.job, name) if s.job else Capture(0))  # between cells: dropped

    def start_cell(self, s: Session, job: Job) -> None:
        if s.lost:
            job.notes.append("session restarted: its earlier state was lost")
            s.lost = False
        s.job = job
        self.begin(job, None)
        try:
            _wire.write_frame(s.fds["ctl"], job.request(), timeout=job.timeout)
        except OSError:  # the holder died, or does not read (stopped by the code?)
            self.kill_session(s)  # reaping finishes the cell
        job.code = job.stdin = None

    def on_session(self, s: Session) -> None:
        while "ctl" in s.fds:
            try:
                data = os.read(s.fds["ctl"], 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close_fd(s.fds, "ctl")
                return
            try:
                for msg in s.decoder.feed(data):
                    self.on_session_msg(s, msg)
            except Exception as e:  # oversized, not JSON, or not a message we sent
                self.session_violation(s, str(e))
                return

    def session_violation(self, s: Session, why: str) -> None:
        """The cell's code wrote on the session's control socket: never trust the session again.
        Its processes are killed; reaping finishes the cell (with this note) and the next cell
        starts a fresh session."""
        if s.job is not None and not s.job.notes:
            s.job.notes.append(f"the code wrote on the session's control channel ({why[:80]}); session reset")
        self.close_fd(s.fds, "ctl")
        self.kill_session(s)

    def on_session_msg(self, s: Session, msg: object) -> None:
        """started: an executor runs the cell; done: it finished and took over; ended: it died.

        Every message is checked: the code can write to this socket (it runs in the process that
        will send "done"). A message that cannot be true (wrong fields, a second "started", a
        "done" from another pid or while the old holder still lives) resets the session.
        """
        op = msg.get("op") if isinstance(msg, dict) else None
        job = s.job
        if op == "started" and not invalid(msg, {"pid": (int,)}):
            if job is not None and s.exec_pid is None and self.is_executor(s, msg["pid"]):
                s.exec_pid = job.pid = msg["pid"]
                s.alive.add(s.exec_pid)
                self.owners[s.exec_pid] = s
                return
            if job is not None and s.exec_pid is None and _reaped(msg["pid"]) and msg["pid"] not in self.owners:
                # The executor died at once (a crash on the cell's first line) and its holder reaped
                # it before we read this: nothing is left to check or to kill; "ended" follows.
                # Forged by the session's own code, it can only reset its session (the real one is
                # then a violation) or, with a forged "ended", fake its own cell's result: the real
                # executor stays one of the session's processes (its uid, its limits) and is killed
                # with them when the session resets or closes.
                s.exec_pid = job.pid = msg["pid"]
                return
        elif op == "done" and not invalid(msg, {"pid": (int,), "exit": (int,), "exc": (str, type(None))}):
            if job is not None and msg["pid"] == s.exec_pid and not _alive(s.holder):
                self.drain(s.fds, "out", job.out)
                self.drain(s.fds, "err", job.err)
                job.status = (msg["exit"] & 0xFF) << 8
                job.exc = msg["exc"]
                s.holder, s.exec_pid = s.exec_pid, None
                self.finish_cell(s)
                return
        elif op == "ended" and not invalid(msg, {"status": (int,), "cpu": (float, int)}):
            if job is not None and not _alive(s.exec_pid):  # the holder reaps it before saying so
                self.drain(s.fds, "out", job.out)
                self.drain(s.fds, "err", job.err)
                job.status, job.cpu_used = msg["status"] & 0xFFFF, msg["cpu"]
                s.alive.discard(s.exec_pid)
                self.owners.pop(s.exec_pid, None)
                s.exec_pid = None
                self.finish_cell(s)
                return
        elif isinstance(msg, dict) and set(msg) == {"failure"} and job is not None:
            job.failure = "session setup failed"
            return
        self.session_violation(s, f"unexpected message {str(msg)[:40]!r}")

    def is_executor(self, s: Session, pid: object) -> bool:
        """Is pid a child of the session's holder (or orphaned to us) with the session's uid?"""
        if not isinstance(pid, int) or pid in self.owners:
            return False
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
        except OSError:
            return False
        same_uid = s.uid is None or int(fields[b"Uid"].split()[0]) == s.uid
        return same_uid and int(fields[b"PPid"]) in (s.holder, os.getpid())

    def finish_cell(self, s: Session) -> None:
        job, s.job = s.job, None
        self.complete(job)
        self.dispatch()

    def on_session_death(self, s: Session) -> None:
        """Both the holder and the executor are gone: the state is lost; respawn on the next cell."""
        s.dead = s.lost = True
        s.holder = s.exec_pid = None
        self.kill_leftovers(s.uid, None)
        job = s.job
        if job is not None:
            self.drain(s.fds, "out", job.out)
            self.drain(s.fds, "err", job.err)
            if job.timed_out:
                job.notes.append("session state was lost")
            else:
                job.failure = job.failure or "session died; its state was lost"
            s.lost = False  # this result already says so
            self.finish_cell(s)
        for name in list(s.fds):
            self.close_fd(s.fds, name)

    def kill_session(self, s: Session) -> None:
        for pid in list(s.alive):
            kill(pid)
            kill(-pid)

    def close_session(self, sid: str) -> None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        for job in [j for j in self.pending if j.session is s]:
            self.pending.remove(job)
            job.failure = "session closed"
            self.reply(job)
        for pid in s.alive:
            self.owners.pop(pid, None)  # from now on they are leftovers like any other
        self.kill_session(s)
        self.kill_leftovers(s.uid, None)
        s.alive.clear()
        if s.job is not None:
            s.job.failure = "session closed"
            self.finish_cell(s)
        for name in list(s.fds):
            self.close_fd(s.fds, name)
        _forker.rmtree(s.workdir)
        self.release_uid(self.session_uids, s.uid)
