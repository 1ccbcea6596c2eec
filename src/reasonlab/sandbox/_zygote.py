"""The zygote: a warm interpreter inside the isolation boundary that forks one process per execution.

The host starts it once per Sandbox, through bubblewrap, `unshare` or plainly (see isolation.py).
It imports the preload modules (numpy, sympy, ...) once, then serves requests from the host over
a socket. Each stateless execution runs in a pre-forked, already confined worker (_child.py), so
a request costs a pipe write instead of an interpreter start; sessions run in holder processes.

The zygote, not the host, enforces the wall-clock timeout and cleans up after each execution,
because only it can see the processes (they live in its pid namespace). It is trusted code: it
never runs user code, and the code cannot signal it (different uid, or it is pid 1 of the
namespace). A single-threaded `selectors` loop, because fork and threads do not mix.

Clean-up after an execution: kill the worker's process group, then every process left with the
worker's uid (each slot and session has its own uid when we may switch uids), then every orphan
re-parented to the zygote that it does not know (daemons that double-forked out of the group).

Stdlib only, run as a script (`python zygote.py FD CONFIG`), never imported by the host.
"""

from __future__ import annotations

import collections
import errno
import gc
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import sys
import time

import _child
import _wire

_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 4, 36
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 4096, 8192, 16384, 1 << 18


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
        tail = self.tail[len(self.tail) - self.keep_tail:] if self.keep_tail else b""
        dropped = self.total - len(self.head) - len(tail)
        return (self.head.decode("utf-8", "replace") + f"\n[... {dropped} bytes truncated ...]\n"
                + tail.decode("utf-8", "replace"))


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
        self.timed_out = False
        self.status = self.exc = self.failure = None
        self.notes: list[str] = []


class Slot:
    """A pool slot: its own uid and one pre-forked spare worker, or the job that spare now runs."""

    def __init__(self, index: int, uid: int | None) -> None:
        self.index, self.uid = index, uid
        self.pid = self.workdir = None
        self.fds: dict[str, int] = {}
        self.job: Job | None = None


class Session:
    """A holder process that keeps globals between cells, plus the pipes to it."""

    def __init__(self, sid: str, uid: int | None, workdir: str, echo: bool) -> None:
        self.sid, self.uid, self.workdir, self.echo = sid, uid, workdir, echo
        self.holder = self.exec_pid = None
        self.alive: set[int] = set()
        self.fds: dict[str, int] = {}
        self.decoder = _wire.Decoder()
        self.job: Job | None = None
        self.dead = True  # until a holder is spawned
        self.lost = False


class Zygote:
    def __init__(self, ctl: int, cfg: dict, uid_base: int | None) -> None:
        self.ctl, self.cfg, self.uid_base = ctl, cfg, uid_base
        self.decoder = _wire.Decoder()
        self.sel = selectors.DefaultSelector()
        self.sel.register(ctl, selectors.EVENT_READ, self.on_ctl)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self.on_wake)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        self.pool = cfg["pool_size"]
        self.slots = [Slot(i, self.uid(i)) for i in range(self.pool)]
        self.sessions: dict[str, Session] = {}
        self.free_uids = collections.deque(self.uid(self.pool + i) for i in range(cfg["max_sessions"]))
        self.pending: collections.deque[Job] = collections.deque()
        self.owners: dict[int, object] = {}  # pid -> Slot or Session: every process we expect to exist
        self.counter = 0
        self.running = 0
        self.children_file = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
        self.own_pidns = os.getpid() == 1

    def uid(self, k: int) -> int | None:
        return None if self.uid_base is None else self.uid_base + k

    # ---- requests from the host -------------------------------------------------------------

    def on_ctl(self) -> None:
        data = os.read(self.ctl, 1 << 20)
        if not data:
            self.shutdown()
        for msg in self.decoder.feed(data):
            op = msg["op"]
            if op == "run":
                self.pending.append(Job(msg, self.cfg["max_output_bytes"]))
            elif op == "open":
                self.open_session(msg["sid"], msg.get("echo", False))
            elif op == "cell":
                session = self.sessions.get(msg["sid"])
                job = Job(msg, self.cfg["max_output_bytes"], session)
                if session is None:
                    job.failure = "session is closed"
                    self.reply(job)
                else:
                    self.pending.append(job)
            elif op == "close":
                self.close_session(msg["sid"])
                self.send({"op": "closed", "sid": msg["sid"]})
        self.dispatch()

    def send(self, msg: dict) -> None:
        _wire.write_frame(self.ctl, msg)

    def dispatch(self) -> None:
        """Start queued jobs while fewer than pool_size run; a session runs one cell at a time."""
        for job in list(self.pending):
            if self.running >= self.pool:
                return
            if job.session is None:
                slot = next(s for s in self.slots if s.job is None)
                self.pending.remove(job)
                self.start_job(slot, job)
            elif job.session.job is None:
                self.pending.remove(job)
                self.start_cell(job.session, job)

    # ---- stateless jobs -----------------------------------------------------------------------

    def workdir(self, uid: int | None, kind: str) -> str:
        self.counter += 1
        path = os.path.join(self.cfg["workbase"], f"{kind}-{self.counter}")
        os.mkdir(path, 0o700)
        if uid is not None:
            os.chown(path, uid, uid)
        return path

    def spec(self, uid: int | None) -> dict:
        with open("/proc/self/statm") as f:  # the worker starts with our address space
            vsz = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cfg = self.cfg
        return {"uid": uid, "parent": os.getpid(), "env": cfg["env"], "nproc": cfg["max_procs"],
                "as_bytes": vsz + cfg["memory_mb"] * 2**20 if cfg["memory_mb"] else None,
                "fsize_bytes": cfg["max_file_mb"] * 2**20 if cfg["max_file_mb"] else None}

    def spawn_spare(self, slot: Slot) -> None:
        slot.workdir = self.workdir(slot.uid, "job")
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        st_r, st_w = os.pipe()
        job_r, job_w = os.pipe()
        spec = self.spec(slot.uid)
        pid = os.fork()
        if pid == 0:
            try:
                _child.worker_main(spec, slot.workdir, {1: out_w, 2: err_w, 3: st_w, 4: job_r})
            finally:
                os._exit(1)
        for fd in (out_w, err_w, st_w, job_r):
            os.close(fd)
        for fd in (out_r, err_r, st_r):
            os.set_blocking(fd, False)
        slot.pid, slot.fds = pid, {"out": out_r, "err": err_r, "st": st_r, "job": job_w}
        self.owners[pid] = slot

    def start_job(self, slot: Slot, job: Job) -> None:
        try:
            _wire.write_frame(slot.fds["job"], {"code": job.code, "stdin": job.stdin, "cpu_s": job.cpu_s})
        except OSError:  # the spare died (killed from outside?): replace it and retry once
            self.retire_spare(slot)
            self.spawn_spare(slot)
            _wire.write_frame(slot.fds["job"], {"code": job.code, "stdin": job.stdin, "cpu_s": job.cpu_s})
        os.close(slot.fds.pop("job"))
        job.code = None
        self.begin(job, slot.pid)
        slot.job = job
        self.sel.register(slot.fds["out"], selectors.EVENT_READ, lambda: self.pump(slot.fds, "out", job.out))
        self.sel.register(slot.fds["err"], selectors.EVENT_READ, lambda: self.pump(slot.fds, "err", job.err))

    def begin(self, job: Job, pid: int | None) -> None:
        job.pid, job.t0 = pid, time.monotonic()
        job.deadline = job.t0 + job.timeout
        self.running += 1

    def pump(self, fds: dict, name: str, capture: Capture) -> None:
        fd = fds.get(name)
        if fd is None:
            return
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if data:
            capture.feed(data)
        else:
            self.sel.unregister(fd)
            os.close(fds.pop(name))

    def drain(self, fds: dict, name: str, capture: Capture) -> None:
        while name in fds:
            try:
                data = os.read(fds[name], 1 << 16)
            except BlockingIOError:
                return
            if not data:
                self.close_fd(fds, name)
                return
            capture.feed(data)

    def close_fd(self, fds: dict, name: str) -> None:
        fd = fds.pop(name, None)
        if fd is not None:
            try:
                self.sel.unregister(fd)
            except KeyError:
                pass
            os.close(fd)

    def finish_job(self, slot: Slot, status: int) -> None:
        job = slot.job
        self.drain(slot.fds, "out", job.out)
        self.drain(slot.fds, "err", job.err)
        job.status = status
        self.read_status(slot.fds, job)
        self.retire_spare(slot)
        self.kill_leftovers(slot.uid, job.pid)
        slot.job = None
        self.running -= 1
        self.reply(job)
        self.spawn_spare(slot)
        self.dispatch()

    def read_status(self, fds: dict, job: Job) -> None:
        data = b""
        try:
            while chunk := os.read(fds["st"], 1 << 16):
                data += chunk
        except (BlockingIOError, KeyError):
            pass
        try:
            record = _wire.Decoder().feed(data)[0]
        except Exception:  # nothing written (killed, os._exit) or garbage written by the code
            return
        if isinstance(record, dict):
            job.exc = record.get("exc") if isinstance(record.get("exc"), str) else None
            if isinstance(record.get("failure"), str):
                job.failure = "worker setup failed: " + record["failure"].strip().splitlines()[-1]

    def retire_spare(self, slot: Slot) -> None:
        for name in list(slot.fds):
            self.close_fd(slot.fds, name)
        if slot.pid is not None:
            self.owners.pop(slot.pid, None)
            _kill(slot.pid)
        if slot.workdir:
            _rmtree(slot.workdir)
        slot.pid = slot.workdir = None

    def reply(self, job: Job) -> None:
        status, error = job.status, None
        exit_code = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
        if job.timed_out:
            error = "timeout"
        elif job.failure:
            error = "sandbox failure: " + job.failure
        elif exit_code < 0:
            sig = -exit_code
            error = {signal.SIGXCPU: "cpu time limit", signal.SIGXFSZ: "file size limit"}.get(
                sig, f"killed by signal {sig} ({signal.Signals(sig).name})" if sig in signal.valid_signals()
                else f"killed by signal {sig}")
        elif job.exc and job.exc.endswith("MemoryError"):
            error = "memory limit"
        if job.notes:
            error = "; ".join(job.notes + ([error] if error else []))
        duration = time.monotonic() - job.t0 if job.t0 else 0.0
        self.send({"op": "result", "id": job.id, "stdout": job.out.text(), "stderr": job.err.text(),
                   "exit_code": exit_code, "timed_out": job.timed_out, "duration_s": duration,
                   "truncated": job.out.truncated or job.err.truncated, "error": error})

    # ---- sessions -----------------------------------------------------------------------------

    def open_session(self, sid: str, echo: bool) -> None:
        if not self.free_uids:
            self.send({"op": "result", "id": None, "error": "too many sessions"})
            return
        uid = self.free_uids.popleft()
        session = Session(sid, uid, self.workdir(uid, "session"), echo)
        self.sessions[sid] = session
        self.spawn_holder(session)

    def spawn_holder(self, s: Session) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair()
        spec = self.spec(s.uid)
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
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        s.fds = {"out": out_r, "err": err_r, "ctl": ctl}
        s.decoder = _wire.Decoder()
        s.holder, s.exec_pid, s.alive, s.dead = pid, None, {pid}, False
        self.owners[pid] = s
        self.sel.register(out_r, selectors.EVENT_READ, lambda: self.pump_session(s, "out"))
        self.sel.register(err_r, selectors.EVENT_READ, lambda: self.pump_session(s, "err"))
        self.sel.register(ctl, selectors.EVENT_READ, lambda: self.on_session(s))

    def pump_session(self, s: Session, name: str) -> None:
        self.pump(s.fds, name, getattr(s.job, name) if s.job else Capture(0))

    def start_cell(self, s: Session, job: Job) -> None:
        if s.dead:
            self.reset_session(s)
            if s.lost:
                job.notes.append("session restarted: its earlier state was lost")
                s.lost = False
        s.job = job
        self.begin(job, None)
        try:
            _wire.write_frame(s.fds["ctl"], {"code": job.code, "stdin": job.stdin, "cpu_s": job.cpu_s})
        except OSError:
            pass  # the holder died: on_session / reaping will finish the cell
        job.code = None

    def on_session(self, s: Session) -> None:
        fd = s.fds.get("ctl")
        if fd is None:
            return
        try:
            data = os.read(fd, 1 << 16)
        except (BlockingIOError, ConnectionResetError):
            data = b"" if fd is None else None
            if data is None:
                return
        if not data:
            self.close_fd(s.fds, "ctl")
            return
        try:
            msgs = s.decoder.feed(data)
        except Exception:  # the code wrote garbage on the control socket: the session is broken
            self.kill_session(s)
            return
        for msg in msgs:
            self.on_session_msg(s, msg)

    def on_session_msg(self, s: Session, msg: object) -> None:
        op = msg.get("op") if isinstance(msg, dict) else None
        job = s.job
        if op == "started" and isinstance(msg.get("pid"), int):
            s.exec_pid = msg["pid"]
            s.alive.add(s.exec_pid)
            self.owners[s.exec_pid] = s
            if job is not None:
                job.pid = s.exec_pid
        elif op in ("done", "ended") and job is not None:
            self.drain(s.fds, "out", job.out)
            self.drain(s.fds, "err", job.err)
            if op == "done":
                job.status = (int(msg.get("exit", 1)) & 0xFF) << 8
                job.exc = msg.get("exc") if isinstance(msg.get("exc"), str) else None
                s.holder = msg.get("pid", s.exec_pid)
            else:
                job.status = int(msg.get("status", signal.SIGKILL))
                s.alive.discard(s.exec_pid)
                self.owners.pop(s.exec_pid, None)
            s.exec_pid = None
            self.finish_cell(s)
        elif isinstance(msg, dict) and "failure" in msg and job is not None:
            job.failure = "session setup failed"

    def finish_cell(self, s: Session) -> None:
        job, s.job = s.job, None
        self.running -= 1
        self.reply(job)
        self.dispatch()

    def on_session_death(self, s: Session) -> None:
        """Both the holder and the executor are gone: the state is lost."""
        self.kill_session(s)
        s.lost = True
        if s.job is not None:
            job = s.job
            self.drain(s.fds, "out", job.out)
            self.drain(s.fds, "err", job.err)
            if not job.timed_out:
                job.failure = job.failure or "session died; its state was lost"
            self.finish_cell(s)
        for name in list(s.fds):
            self.close_fd(s.fds, name)

    def kill_session(self, s: Session) -> None:
        for pid in list(s.alive):
            _kill(pid)
        self.kill_leftovers(s.uid, None)
        self.reap()
        s.dead = True

    def reset_session(self, s: Session) -> None:
        for name in list(s.fds):
            self.close_fd(s.fds, name)
        self.spawn_holder(s)

    def close_session(self, sid: str) -> None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        self.kill_session(s)
        for pid in list(s.alive):
            self.owners.pop(pid, None)
        s.alive.clear()
        if s.job is not None:
            s.job.failure = "session closed"
            self.finish_cell(s)
        for job in [j for j in self.pending if j.session is s]:
            self.pending.remove(job)
            job.failure = "session closed"
            self.reply(job)
        for name in list(s.fds):
            self.close_fd(s.fds, name)
        _rmtree(s.workdir)
        self.free_uids.append(s.uid)

    # ---- processes ----------------------------------------------------------------------------

    def on_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        self.reap()

    def reap(self) -> None:
        # Read what sessions said first: an executor announces itself before its holder can die.
        for s in list(self.sessions.values()):
            if "ctl" in s.fds:
                self.on_session(s)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            owner = self.owners.pop(pid, None)
            if isinstance(owner, Slot) and owner.pid == pid:
                if owner.job is not None:
                    self.finish_job(owner, status)
                else:  # a spare died before getting work: replace it
                    owner.pid = None
                    self.retire_spare(owner)
                    self.spawn_spare(owner)
            elif isinstance(owner, Session):
                owner.alive.discard(pid)
                if not owner.alive and not owner.dead:
                    self.on_session_death(owner)

    def kill_leftovers(self, uid: int | None, pgid: int | None) -> None:
        """Kill what an execution left behind: its process group, its uid, unknown orphans."""
        if pgid is not None:
            _kill(-pgid)
        for _ in range(200):
            victims = []
            if uid is not None and self.own_pidns:
                victims += _pids_of_uid(uid)
            victims += [pid for pid in self.children() if pid not in self.owners]
            if not victims:
                return
            for pid in victims:
                _kill(pid)
            time.sleep(0.0005)
            self.reap_orphans()

    def children(self) -> list[int]:
        try:
            with open(self.children_file) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def reap_orphans(self) -> None:
        for pid in self.children():
            if pid not in self.owners:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def check_deadlines(self) -> float | None:
        """Kill jobs past their deadline; return the seconds until the next deadline."""
        now, nearest = time.monotonic(), None
        jobs = [s.job for s in self.slots] + [s.job for s in self.sessions.values()]
        for job in filter(None, jobs):
            if job.deadline is None:
                continue
            if now >= job.deadline and not job.timed_out:
                job.timed_out = True
                job.kill_deadline = now + 2.0
                self.kill_job(job)
            if job.timed_out and now >= job.kill_deadline:  # could not be reaped: give up on it
                job.failure = "execution could not be killed"
                job.kill_deadline = now + 3600
                if job.session is not None:
                    self.on_session_death(job.session)
            target = job.kill_deadline if job.timed_out else job.deadline
            nearest = target if nearest is None else min(nearest, target)
        return None if nearest is None else max(0.0, nearest - now)

    def kill_job(self, job: Job) -> None:
        if job.session is None:
            _kill(job.pid)
            _kill(-job.pid)
        elif job.pid is not None:
            _kill(job.pid)
            _kill(-job.pid)  # the executor leads its own process group
        else:  # no executor announced yet: all we can kill is the whole session
            self.kill_session(job.session)

    def shutdown(self) -> None:
        for s in list(self.sessions):
            self.close_session(s)
        for slot in self.slots:
            self.retire_spare(slot)
        self.kill_leftovers(None, None)
        os._exit(0)

    def serve(self) -> None:
        for slot in self.slots:
            self.spawn_spare(slot)
        while True:
            timeout = self.check_deadlines()
            for key, _ in self.sel.select(timeout):
                key.data()
            self.reap()


def _kill(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is uid; cheap in our own pid namespace."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
        if int(fields[b"Uid"].split()[0]) == uid and not fields[b"State"].strip().startswith(b"Z"):
            found.append(int(name))
    return found


def _rmtree(path: str) -> None:
    def retry(func, p, _):  # the code may have chmod-ed its own files to 000
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


# ---- start-up -------------------------------------------------------------------------------


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if _child._libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = _child.ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def setup_mounts(m: dict) -> list[str]:
    """Our own file-system view when there is no bubblewrap (we are root in a new mount namespace).

    Fresh size-limited tmpfs on the work base and /dev/shm, home directories hidden under empty
    tmpfs except the paths Python needs (moved back in), then every mount remounted read-only.
    Returns the mount points that could not be made read-only.
    """
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we do leaks to the host
    size = f"size={m['tmp_mb']}m"
    _mount("tmpfs", m["workbase"], "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=0711")
    if os.path.isdir("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=1777")
    staged = []
    for i, keep in enumerate(m["keep"]):
        stage = os.path.join(m["workbase"], f".keep{i}")
        os.mkdir(stage)
        _mount(keep, stage, None, _MS_BIND | _MS_REC)
        staged.append((stage, keep))
    for hide in m["hide"]:
        if os.path.isdir(hide):
            _mount("tmpfs", hide, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for stage, keep in staged:
        os.makedirs(keep, exist_ok=True)
        _mount(stage, keep, None, _MS_MOVE)
        os.rmdir(stage)
    failed = []
    writable = {m["workbase"], "/dev/shm", "/proc"}
    names = {b"nosuid": _MS_NOSUID, b"nodev": _MS_NODEV, b"noexec": _MS_NOEXEC}
    with open("/proc/self/mountinfo", "rb") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        point = fields[4].decode().replace("\\040", " ")
        if point in writable or point.startswith("/proc/"):
            continue
        flags = sum(v for k, v in names.items() if k in fields[5].split(b","))
        try:
            _mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags)
        except OSError:
            failed.append(point)
    return failed


def _uid_base(cfg: dict) -> int | None:
    """Use a private uid range when we hold CAP_SETUID over it (root, no user namespace)."""
    base = cfg["uid_base"]
    if base is None:
        return None
    with open("/proc/self/status") as f:
        caps = int(next(l for l in f if l.startswith("CapEff:")).split()[1], 16)
    if not caps & (1 << 7):  # CAP_SETUID
        return None
    with open("/proc/self/uid_map") as f:
        ranges = [tuple(map(int, line.split())) for line in f]
    last = base + cfg["pool_size"] + cfg["max_sessions"]
    return base if any(inside <= base and last <= inside + count for inside, _, count in ranges) else None


def _facts(cfg: dict, uid_base: int | None, ro_failed: list[str], preload_failed: dict) -> dict:
    """What this process observes about its confinement, for Sandbox.isolation_report()."""
    try:
        ifaces = sorted(name for _, name in socket.if_nameindex())
    except OSError:
        ifaces = []
    tmp = os.statvfs(cfg["workbase"])
    hidden = {p: not os.path.exists(p) or not set(os.listdir(p)) - set(cfg["hide_exceptions"].get(p, []))
              for p in cfg["hidden_paths"]}
    return {"pid": os.getpid(), "uid": os.getuid(), "interfaces": ifaces,
            "root_readonly": bool(os.statvfs("/").f_flag & os.ST_RDONLY), "readonly_failed": ro_failed,
            "worker_uid_base": uid_base, "workbase": cfg["workbase"],
            "workbase_mb": tmp.f_blocks * tmp.f_frsize // 2**20, "hidden": hidden,
            "preloaded": [m for m in cfg["preload"] if m not in preload_failed], "preload_failed": preload_failed}


def main() -> None:
    del sys.path[0]  # our directory: the code must not import our private modules by accident
    ctl, cfg = int(sys.argv[1]), json.loads(sys.argv[2])
    os.set_inheritable(ctl, False)
    _child._libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans come to us, pid 1 or not
    _child._libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace or /proc/pid/mem from same-uid code
    ro_failed = setup_mounts(cfg["mounts"]) if cfg["mounts"] else []
    os.chmod(cfg["workbase"], 0o711)
    preload_failed = {}
    for name in cfg["preload"]:
        try:
            importlib.import_module(name)
        except Exception as e:  # a missing optional module must not stop the sandbox
            preload_failed[name] = f"{type(e).__name__}: {e}"
    uid_base = _uid_base(cfg)
    gc.collect()
    gc.freeze()  # children then leave these objects alone: fewer copy-on-write page faults
    zygote = Zygote(ctl, cfg, uid_base)
    zygote.send({"op": "ready", "facts": _facts(cfg, uid_base, ro_failed, preload_failed)})
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 2)  # the host stops reading our stderr once we are ready
    zygote.serve()


if __name__ == "__main__":
    main()
