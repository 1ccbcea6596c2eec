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

import os
import selectors
import signal
import socket

import _child
import _forker
import _wire
from _jobs import Capture, Job, Session, kill


class SessionsMixin:
    def open_session(self, sid: str, echo: bool) -> None:
        if not self.session_uids:  # its cells will fail with "too many open sessions"
            return
        uid = self.take_uid(self.session_uids)
        session = Session(sid, uid, self.workdir(uid, "session"), echo)
        self.sessions[sid] = session
        self.spawn_holder(session)

    def spawn_holder(self, s: Session) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair()
        spec = _forker.spec(self.cfg, s.uid)
        pid = os.fork()
        if pid == 0:
            try:
                _child.holder_main(spec, s.workdir, {1: out_w, 2: err_w, 3: theirs.fileno()}, s.echo)
            finally:
                os._exit(1)
        for fd in (out_w, err_w):
            os.close(fd)
        theirs.close()
        ctl = mine.detach()
        for fd in (out_r, err_r, ctl):
            os.set_blocking(fd, False)
        s.fds = {"out": out_r, "err": err_r, "ctl": ctl}
        s.decoder = _wire.Decoder()
        s.holder, s.exec_pid, s.alive, s.dead = pid, None, {pid}, False
        self.owners[pid] = s
        self.sel.register(out_r, selectors.EVENT_READ, lambda: self.pump_session(s, "out"))
        self.sel.register(err_r, selectors.EVENT_READ, lambda: self.pump_session(s, "err"))
        self.sel.register(ctl, selectors.EVENT_READ, lambda: self.on_session(s))

    def pump_session(self, s: Session, name: str) -> None:
        self.pump(s.fds, name, getattr(s.job, name) if s.job else Capture(0))  # between cells: dropped

    def start_cell(self, s: Session, job: Job) -> None:
        if s.dead:
            for name in list(s.fds):
                self.close_fd(s.fds, name)
            self.spawn_holder(s)
            if s.lost:
                job.notes.append("session restarted: its earlier state was lost")
                s.lost = False
        s.job = job
        self.begin(job, None)
        try:
            _wire.write_frame(s.fds["ctl"], job.request(), timeout=job.timeout)
        except OSError:  # the holder died, or does not read (stopped by the code?)
            self.kill_session(s)  # reaping finishes the cell
        job.code = None

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
            except Exception:  # the code wrote garbage on the control socket: the session is broken
                self.kill_session(s)
                return

    def on_session_msg(self, s: Session, msg: object) -> None:
        """started: an executor runs the cell; done: it finished and took over; ended: it died."""
        op = msg.get("op") if isinstance(msg, dict) else None
        job = s.job
        if op == "started":  # the code could forge this (it can write to the socket): check it
            if job is not None and s.exec_pid is None and self.is_executor(s, msg["pid"]):
                s.exec_pid = job.pid = msg["pid"]
                s.alive.add(s.exec_pid)
                self.owners[s.exec_pid] = s
        elif op in ("done", "ended") and job is not None:
            self.drain(s.fds, "out", job.out)
            self.drain(s.fds, "err", job.err)
            if op == "done":
                job.status = (int(msg.get("exit", 1)) & 0xFF) << 8
                job.exc = msg.get("exc") if isinstance(msg.get("exc"), str) else None
                s.holder = s.exec_pid
            else:
                job.status = int(msg.get("status", signal.SIGKILL))
                s.alive.discard(s.exec_pid)
                self.owners.pop(s.exec_pid, None)
            s.exec_pid = None
            self.finish_cell(s)
        elif isinstance(msg, dict) and "failure" in msg and job is not None:
            job.failure = "session setup failed"

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
