"""The zygote: a warm interpreter inside the isolation boundary that forks one process per execution.

The host starts it once per Sandbox, through bubblewrap, `unshare` or plainly (isolation.py).
It imports the preload modules (numpy, sympy, ...) once, then serves requests from the host over
a socket. Each stateless execution runs in a *spare*: a worker forked and confined ahead of time
(_child.py), so a request costs a pipe write, not an interpreter start or even a fork. Spares
come from the forker, a twin of the zygote that forks on the other core (_forker.py), so that
the loop here never stalls in fork(). Sessions run in holder processes (see _child.py).

The zygote, not the host, enforces the wall-clock timeout and cleans up, because only it sees
the processes (they live in its pid namespace). It is trusted code: it never runs user code and
the code cannot signal it (another uid, or it is pid 1 of the namespace). A single-threaded
`selectors` loop, because fork and threads do not mix.

A result is sent as soon as the worker reports (its output is flushed by then); the worker and
everything it left behind are then killed: its process group, every process with its uid (each
worker and session has its own uid when we may switch uids), and every orphan re-parented to
the zygote that it does not know (daemons that double-forked out of the group).

Stdlib only, run as a script (`python _zygote.py FD CONFIG`), never imported by the host.
"""

from __future__ import annotations

import collections
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time

import _child
import _forker
import _setup
import _wire
from _jobs import Capture, Job, Session, Worker, kill, signal_error
from _sessions import SessionsMixin, invalid

_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 4, 36


class Zygote(SessionsMixin):
    def __init__(self, ctl: int, cfg: dict, uid_base: int | None) -> None:
        self.ctl, self.cfg = ctl, cfg
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
        # Own uids for workers (running, spare, or dying) and for sessions: two separate pools.
        base = 0 if uid_base is None else uid_base
        self.uid_mode = uid_base is not None
        self.worker_uids = collections.deque(range(base, base + 4 * self.pool))
        self.session_uids = collections.deque(
            range(base + 4 * self.pool, base + 4 * self.pool + cfg["max_sessions"])
        )
        self.spares: collections.deque[Worker] = collections.deque()
        self.sessions: dict[str, Session] = {}
        self.pending: collections.deque[Job] = collections.deque()
        self.running: set[Job] = set()
        self.owners: dict[int, Worker | Session] = {}  # every process we expect to exist
        self.counter = 0
        self.spawning = self.spare_failures = 0
        self.child_exited = True
        self.forker_pid, self.forker = None, None
        self.start_forker()
        self.children_file = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
        self.own_pidns = os.getpid() == 1

    def take_uid(self, pool: collections.deque) -> int | None:
        uid = pool.popleft()
        return uid if self.uid_mode else None

    def release_uid(self, pool: collections.deque, uid: int | None) -> None:
        pool.append(uid if self.uid_mode else 0)

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
                self.open_session(msg["sid"], msg.get("echo", False), msg["cpu_s"])
            elif op == "cell":
                session = self.sessions.get(msg["sid"])
                job = Job(msg, self.cfg["max_output_bytes"], session)
                if session is None:
                    job.failure = "session is closed" if self.session_uids else "too many open sessions"
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
            if len(self.running) >= self.pool:
                return
            if job.session is None:
                if not self.spares:
                    self.request_spares()
                    continue  # the forker will deliver one
                self.pending.remove(job)
                self.start_job(self.spares.popleft(), job)  # its replacement is asked for when it ends
            elif job.session.job is None:
                s = job.session
                if s.dead and not s.spawning:
                    for name in list(s.fds):
                        self.close_fd(s.fds, name)
                    self.spawn_holder(s)
                if s.spawning or s.dead:
                    continue  # the forker will deliver its holder
                self.pending.remove(job)
                self.start_cell(s, job)

    def begin(self, job: Job, pid: int | None) -> None:
        job.pid, job.t0 = pid, time.monotonic()
        job.deadline = job.t0 + job.timeout
        self.running.add(job)

    def reply(self, job: Job) -> None:
        status, error = job.status, None
        try:
            exit_code = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
        except ValueError:  # not a wait status (cannot happen for what we checked; never hang on it)
            exit_code = -signal.SIGKILL
        soft_cpu = _child.cpu_limits(job.cpu_s)[0]
        if job.timed_out:
            error = "timeout"
        elif job.failure:
            error = "sandbox failure: " + job.failure
        elif exit_code == -signal.SIGKILL and job.cpu_used >= soft_cpu:  # the hard RLIMIT_CPU
            error = "cpu time limit"
        elif exit_code < 0:
            error = signal_error(-exit_code)
        elif job.exc and job.exc.endswith("MemoryError"):
            error = "memory limit"
        if job.notes:
            error = "; ".join(job.notes + ([error] if error else []))
        duration = time.monotonic() - job.t0 if job.t0 else 0.0
        self.send(
            {
                "op": "result",
                "id": job.id,
                "stdout": job.out.text(),
                "stderr": job.err.text(),
                "exit_code": exit_code,
                "timed_out": job.timed_out,
                "duration_s": duration,
                "truncated": job.out.truncated or job.err.truncated,
                "error": error,
            }
        )

    # ---- stateless jobs -----------------------------------------------------------------------

    def workdir(self, uid: int | None, kind: str) -> str:
        self.counter += 1
        return _forker.make_workdir(self.cfg, uid, f"{kind}-{self.counter}")

    def start_forker(self, fresh: bool = False) -> None:
        """Fork the forker: a plain fork before we serve anything (we hold no user data yet); a
        fresh interpreter (exec) when it must be replaced later, since by then our memory has
        held other executions' code, stdin and output, which the forker's children must not."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                mine.close()
                os.closerange(3, theirs.fileno())  # not the host's socket, nor anyone's pipes
                os.closerange(theirs.fileno() + 1, 1 << 20)
                signal.set_wakeup_fd(-1)
                if fresh:
                    os.set_inheritable(theirs.fileno(), True)
                    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zygote.py")
                    argv = [sys.executable, "-E", "-s", "-B", script, "--forker", str(theirs.fileno())]
                    os.execv(sys.executable, argv + [json.dumps(self.cfg)])
                _forker.forker_main(theirs, self.cfg)
            finally:
                os._exit(1)
        theirs.close()
        mine.setblocking(False)
        self.forker_pid, self.forker, self.spawning = pid, mine, 0
        self.owners[pid] = None  # known, never a leftover
        self.sel.register(mine, selectors.EVENT_READ, self.on_forker)

    def request_spares(self) -> None:
        """Ask the forker for spares until pool_size are ready or on their way."""
        while len(self.spares) + self.spawning < self.pool and self.worker_uids and self.forker:
            self.counter += 1
            uid = self.take_uid(self.worker_uids)
            request = {"uid": uid, "name": f"job-{self.counter}"}
            try:
                self.forker.send(json.dumps(request).encode())
            except OSError:
                self.release_uid(self.worker_uids, uid)
                return
            self.spawning += 1

    def on_forker(self) -> None:
        while self.forker is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self.forker, 1 << 16, 4)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:  # the forker died (killed by same-uid code?): start a fresh one
                self.sel.unregister(self.forker)
                self.forker.close()
                self.owners.pop(self.forker_pid, None)
                self.forker = None
                self.spawning = 0
                while self.spares:  # they die with it (parent-death signal): never hand one out
                    self.discard(self.spares.popleft())  # (reaped by us now, as orphans)
                for s in self.sessions.values():  # its holders died with it too
                    s.spawning = False
                self.start_forker(fresh=True)
                self.request_spares()
                return
            msg = json.loads(data)
            if "error" in msg:  # the forker could not fork: count it like a worker dying at birth
                if msg.get("sid") is not None:
                    self.holder_failed(msg)
                    continue
                self.spawning -= 1
                self.release_uid(self.worker_uids, msg["uid"])
                self.spare_died(msg["error"])
                continue
            if "reaped" in msg:
                owner = self.owners.pop(msg["reaped"], None)
                if isinstance(owner, Worker):
                    owner.workdir = None  # the forker removed it and swept its uid
                    if owner.job is not None:
                        owner.job.cpu_used = msg["cpu"]
                    self.on_worker_reaped(owner, msg["status"])
                    self.kill_leftovers(None, None)  # its orphans are ours now
                elif isinstance(owner, Session):
                    self.on_session_reaped(owner, msg["reaped"])
                continue
            if msg.get("sid") is not None:
                self.on_holder(msg, fds)
                continue
            self.spawning -= 1
            for fd in fds:
                os.set_blocking(fd, False)
            names = ("out", "err", "st", "job")
            worker = Worker(msg["pid"], msg["uid"], msg["workdir"], dict(zip(names, fds)))
            self.owners[worker.pid] = worker
            self.spares.append(worker)
            self.dispatch()

    def start_job(self, worker: Worker, job: Job) -> None:
        try:
            _wire.write_frame(worker.fds["job"], job.request(), timeout=5)
        except OSError:  # the spare died or hangs (stopped from outside?): wait for another
            self.discard(worker)
            self.pending.appendleft(job)
            self.request_spares()
            return
        self.close_fd(worker.fds, "job")
        job.code = None
        worker.job = job
        self.begin(job, worker.pid)
        self.sel.register(
            worker.fds["out"], selectors.EVENT_READ, lambda: self.pump(worker.fds, "out", job.out)
        )
        self.sel.register(
            worker.fds["err"], selectors.EVENT_READ, lambda: self.pump(worker.fds, "err", job.err)
        )
        self.sel.register(worker.fds["st"], selectors.EVENT_READ, lambda: self.on_record(worker))

    def pump(self, fds: dict, name: str, capture: Capture) -> None:
        if name not in fds:
            return
        try:
            data = os.read(fds[name], 1 << 16)
        except BlockingIOError:
            return
        if data:
            capture.feed(data)
        else:
            self.close_fd(fds, name)

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

    def on_record(self, worker: Worker) -> None:
        """The worker's last words (written after flushing its output): the job is over."""
        if self.read_record(worker):
            self.spare_failures = 0
            self.finish_job(worker)

    def read_record(self, worker: Worker) -> bool:
        """Read the status pipe; True once a whole record is in (exit status, exception name).

        The code runs in the process that writes this record, so it can write here too: the
        record is bounded (64 KiB), decoded incrementally (linear time), and checked. A record
        only ends the job early; the worker is killed right after it, so a forged one cannot
        buy the code time, and a malformed one ends the job as if the worker had been killed.
        """
        while "st" in worker.fds and worker.record is None:
            try:
                data = os.read(worker.fds["st"], 1 << 16)
            except BlockingIOError:
                break
            if not data:  # died without a record: reaping will finish the job
                self.close_fd(worker.fds, "st")
                break
            try:
                frames = worker.decoder.feed(data)
            except Exception:  # oversized or not JSON: written by the code
                frames = [None]
            if frames:
                record = frames[0]
                if not isinstance(record, dict):
                    record = {"bad": True}
                elif set(record) == {"failure"} and isinstance(record["failure"], str):
                    tail = record["failure"].strip().splitlines() or ["?"]
                    worker.failure = "worker setup failed: " + tail[-1][:300]
                elif invalid(record, {"exit": (int,), "exc": (str, type(None))}):
                    record = {"bad": True}
                worker.record = record
                self.close_fd(worker.fds, "st")
        record, job = worker.record, worker.job
        if record is None or job is None:
            return False
        if record.get("bad"):
            job.notes = ["the code wrote on the sandbox's status channel"]
            job.status = signal.SIGKILL  # what it gets: killed now
        else:
            job.exc = record.get("exc")
            job.status = (record.get("exit", 1) & 0xFF) << 8
        job.failure = job.failure or worker.failure
        return True

    def finish_job(self, worker: Worker, status: int | None = None) -> None:
        job = worker.job
        if job is None or job.done:
            return
        if status is not None:  # reaped: the exit status is the truth, the record may add the exception
            self.read_record(worker)
            job.status = status
        for name, capture in (("out", job.out), ("err", job.err)):
            self.drain(worker.fds, name, capture)
        self.complete(job)
        for name in list(worker.fds):
            self.close_fd(worker.fds, name)
        if worker.pid in self.owners:  # still alive (it reported): no need to wait for its exit
            kill(worker.pid)
        self.kill_leftovers(None, worker.pid)  # the forker sweeps the uid once the worker is dead
        self.request_spares()  # now rather than when the job started: the fork would slow it down
        self.dispatch()

    def spare_died(self, why: str) -> None:
        """A spare could not be made or died unused. Many in a row: fail what waits, say why."""
        self.spare_failures += 1
        if self.spare_failures >= 10:
            self.spare_failures = 0
            for job in [j for j in self.pending if j.session is None]:
                self.pending.remove(job)
                job.failure = why
                self.reply(job)

    def complete(self, job: Job) -> None:
        job.done = True
        self.running.discard(job)
        self.reply(job)

    def discard(self, worker: Worker) -> None:
        for name in list(worker.fds):
            self.close_fd(worker.fds, name)
        kill(worker.pid)

    def on_worker_reaped(self, worker: Worker, status: int) -> None:
        if worker.job is not None:
            self.finish_job(worker, status)
        elif worker in self.spares:  # a spare died before getting work
            self.spares.remove(worker)
            self.read_record(worker)
            self.discard(worker)
            self.spare_died(worker.failure or f"a worker died before starting (status {status})")
        if worker.workdir:  # reaped by us, not by the forker (it died): clean up ourselves
            _forker.rmtree(worker.workdir)
        self.release_uid(self.worker_uids, worker.uid)
        self.request_spares()
        self.dispatch()

    # ---- processes ----------------------------------------------------------------------------

    def on_wake(self) -> None:
        self.child_exited = True  # a SIGCHLD (the only signal we catch) woke us: reap
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def poll_sessions(self) -> None:
        """Read what sessions said. An executor announces itself before its holder can die, so
        after this every live session process is in self.owners (none is mistaken for an orphan)."""
        for s in list(self.sessions.values()):
            self.on_session(s)

    def reap(self) -> None:
        self.poll_sessions()
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            owner = self.owners.pop(pid, None)
            if isinstance(owner, Worker):
                self.on_worker_reaped(owner, status)
            elif isinstance(owner, Session):
                self.on_session_reaped(owner, pid)

    def on_session_reaped(self, s: Session, pid: int) -> None:
        """A holder (reaped by the forker) or an executor (orphaned to us) of s is gone."""
        s.alive.discard(pid)
        if not s.alive and s.sid in self.sessions and not s.spawning:
            self.on_session_death(s)

    def kill_leftovers(self, uid: int | None, pgid: int | None) -> None:
        """Kill what an execution left behind: its process group, its uid, unknown orphans."""
        if pgid is not None:
            kill(-pgid)
        self.poll_sessions()
        for _ in range(200):
            victims = [pid for pid in self.children() if pid not in self.owners]
            if uid is not None and self.own_pidns:
                victims += [pid for pid in _forker.pids_of_uid(uid) if pid not in self.owners]
            if not victims:
                return
            for pid in victims:
                kill(pid)
            time.sleep(0.0005)
            self.reap_orphans()

    def children(self) -> list[int]:
        try:
            return [int(p) for p in _forker.read_small(self.children_file, 4096, whole=True).split()]
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
        for job in list(self.running):
            if now >= job.deadline and not job.timed_out:
                job.timed_out = True
                job.kill_deadline = now + 2.0
                self.kill_job(job)
            if job.timed_out and now >= job.kill_deadline and not job.done:  # unkillable (D state?)
                job.failure, job.kill_deadline = "execution could not be killed", now + 3600
                if job.session is not None:
                    self.on_session_death(job.session)
            if not job.done:
                target = job.kill_deadline if job.timed_out else job.deadline
                nearest = target if nearest is None else min(nearest, target)
        return None if nearest is None else max(0.0, nearest - now)

    def kill_job(self, job: Job) -> None:
        if job.session is None or job.pid is not None:
            kill(job.pid)
            kill(-job.pid)  # workers and executors lead their own process group
        else:  # no executor announced yet: all we can kill is the whole session
            self.kill_session(job.session)

    def shutdown(self) -> None:
        for sid in list(self.sessions):
            self.close_session(sid)
        for pid in list(self.owners):
            kill(pid)
        self.owners.clear()
        self.kill_leftovers(None, None)
        os._exit(0)

    def serve(self) -> None:
        self.request_spares()
        while True:
            for key, _ in self.sel.select(self.check_deadlines()):
                key.data()
            if self.child_exited or self.sessions:  # else nothing can have changed (no SIGCHLD)
                self.child_exited = False
                self.reap()


def warm_up(cfg: dict) -> dict:
    """Import the preload modules and make the heap cheap to fork; returns the failed imports."""
    preload_failed = {}
    for name in cfg["preload"]:
        try:
            importlib.import_module(name)
        except Exception as e:  # a missing optional module must not stop the sandbox
            preload_failed[name] = f"{type(e).__name__}: {e}"
    if "numpy" in sys.modules:  # workers reseed its global generator, which numpy imports lazily
        importlib.import_module("numpy.random")
    gc.collect()
    gc.freeze()  # children then leave these objects alone: fewer copy-on-write page faults
    return preload_failed


def main() -> None:
    del sys.path[0]  # our directory: the code must not import our private modules by accident
    if "site" not in sys.modules:  # the light interpreter runs with -S: .pth files import things
        import site  # (certifi, setuptools hooks...) that every fork would pay for; its code only

        sys.path += [p for p in site.getsitepackages() if os.path.isdir(p)]  # stdlib names itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as pid 1, a signal without a handler cannot reach us
    _setup._libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace or /proc/pid/mem from same-uid code
    if sys.argv[1] == "--forker":  # a replacement forker: a fresh interpreter (see start_forker)
        sock, cfg = socket.socket(fileno=int(sys.argv[2])), json.loads(sys.argv[3])
        warm_up(cfg)
        _setup.collapse_heap()
        _forker.forker_main(sock, cfg)
    ctl, cfg = int(sys.argv[1]), json.loads(sys.argv[2])
    os.set_inheritable(ctl, False)
    _setup._libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans come to us, pid 1 or not
    os.environ.clear()  # ours is the code's environment, so children inherit it for free
    os.environ.update(cfg["env"])
    ro_failed = _setup.setup_mounts(cfg["mounts"]) if cfg["mounts"] else []
    if cfg["uid_base"] is not None:  # not `none`: we are in our own mount namespace
        try:  # so that an execution's own mounts (private scratch) never propagate
            _setup._mount(None, "/", None, _setup._MS_REC | _setup._MS_PRIVATE)
        except OSError:
            pass
    os.chmod(cfg["workbase"], 0o711)
    cfg["zygote_pid"] = os.getpid()
    cfg["private_scratch"] = cfg["uid_base"] is not None and _setup.scratch_works(cfg["workbase"])
    preload_failed = warm_up(cfg)
    uid_base = _setup.uid_base(cfg["uid_base"], 4 * cfg["pool_size"] + cfg["max_sessions"])
    huge_mb = _setup.collapse_heap()
    zygote = Zygote(ctl, cfg, uid_base)
    zygote.send({"op": "ready", "facts": _setup.facts(cfg, uid_base, ro_failed, preload_failed, huge_mb)})
    if not cfg["debug"]:  # the host stops reading our stderr once we are ready
        os.dup2(os.open(os.devnull, os.O_RDWR), 2)
    zygote.serve()


if __name__ == "__main__":
    main()
