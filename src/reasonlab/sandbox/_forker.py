"""The forker: a twin of the zygote whose only job is to fork workers and session holders (and reap them).

Forking a warm interpreter costs about a millisecond of the parent's time here (copying the
page tables of numpy and sympy), and a worker's exit as much again. Done in the zygote, that
time would stall its event loop, and every request and result with it. So the zygote forks this
twin once, after the preload, and asks it for spares: the forker forks a worker, passes the
worker's pipe ends to the zygote over a unix socket (SCM_RIGHTS), reaps the worker when it dies,
kills whatever is left with the worker's uid, removes its working directory, and reports its
exit status and CPU time. It runs on the other core.

It is also the *clean* process: it never sees code, stdin or output (only uids and names), so
the workers and session holders it forks carry no trace of other executions in their memory. The
zygote, which relays every request, forks only this twin, before it serves anything; if the
forker dies, its successor is a freshly exec'd interpreter, not a fork of the zygote.

Stdlib only, loaded by path with _zygote.py.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import sys
import time

import _random

import _child
import _seccomp

_fork = os.fork  # replaced by _raw_fork in a single-threaded forker (see use_raw_fork)
_libc_fork = None


def use_raw_fork() -> bool:
    """Fork workers with the C library's fork() rather than os.fork(), if we are single-threaded.

    os.fork() runs the interpreter's fork hooks in the child: threading's _after_fork, random's
    reseed (through Random.seed in Python), the import lock's re-initialisation... Code that runs
    only in the child is never warm there, so every function object, code object and dict it
    touches costs a copy-on-write page fault: ~0.6 ms of CPU per worker on this VM (4.4 -> 3.9 ms
    a worker, in the light interpreter). In a process with one thread those hooks have nothing to
    repair (no lock can be held by a thread that vanished), except the one that matters for the
    code: the child reseeds `random` itself, from the same 2.5 KB of OS entropy as os.fork's hook
    (see _raw_fork). With more than one thread, or without ctypes, os.fork() stays.
    """
    global _fork, _libc_fork
    try:
        if len(os.listdir("/proc/self/task")) != 1:
            return False
        _libc_fork = ctypes.PyDLL(None, use_errno=True).fork  # PyDLL: called holding the GIL, as os.fork
    except (OSError, AttributeError):
        return False
    _libc_fork.restype, _libc_fork.argtypes = ctypes.c_int, []
    _fork = _raw_fork
    return True


def _raw_fork() -> int:
    pid = _libc_fork()
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    if pid == 0:
        rand = sys.modules.get("random")
        if rand is not None:  # what random's at-fork hook does, without the Python layers
            _random.Random.seed(rand._inst, None)  # C seed from os entropy, as the hook's super().seed()
            rand._inst.gauss_next = None
    return pid


def spec(cfg: dict, uid: int | None, cpu_hard: int | None = None) -> dict:
    """How a child is confined. Its memory limit is relative: our address space (at least
    `as_floor`) plus memory_mb."""
    vsz = int(read_small("/proc/self/statm").split()[0]) * _PAGE
    return {
        "uid": uid,
        "parent": os.getpid(),
        "zygote": cfg["zygote_pid"],
        "nproc": cfg["max_procs"],
        "as_bytes": max(vsz, cfg.get("as_floor") or 0) + cfg["memory_mb"] * 2**20,
        "fsize_bytes": cfg["max_file_mb"] * 2**20,
        "cpu_hard": cpu_hard,
        "scratch": {"workbase": cfg["workbase"], "tmp_mb": cfg["tmp_mb"]} if cfg["private_scratch"] else None,
    }


_PAGE = os.sysconf("SC_PAGE_SIZE")


def read_small(path: str, size: int = 1024, whole: bool = False) -> bytes:
    """The first `size` bytes of a /proc file (all of it if `whole`), without a Python file
    object: in the forker every object a request allocates is a copy-on-write fault (its pages
    are shared with the spares), and open() builds three (~60 faults, ~0.2 ms a spawn)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, size)
        while whole and data and (more := os.read(fd, size)):
            data += more
        return data
    finally:
        os.close(fd)


def make_workdir(cfg: dict, uid: int | None, name: str) -> str:
    path = os.path.join(cfg["workbase"], name)
    os.mkdir(path, 0o700)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def rmtree(path: str) -> None:
    """Remove a working directory, even one the code made unreadable (chmod 000, without root)."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    stack = [path]
    while stack:  # make every directory ours again, iteratively (the code may nest them deeply)
        top = stack.pop()
        try:
            os.chmod(top, 0o700)
            with os.scandir(top) as entries:
                stack += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)


def pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is uid; cheap in our own pid namespace."""
    found, tag = [], b"\nUid:\t%d\t" % uid
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                status = read_small(f"/proc/{name}/status")
            except OSError:
                continue
            if tag in status and b"\nState:\tZ" not in status:
                found.append(int(name))
    return found


def sweep(uid: int) -> None:
    """Kill every process left with this uid (the worker is dead, so all of them are leftovers)."""
    for _ in range(200):
        victims = pids_of_uid(uid)
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.0005)


def spawn(cfg: dict, uid: int | None, name: str) -> tuple[int, str, list[int]]:
    """Fork one confined worker; return its pid, workdir and our ends of its pipes."""
    workdir = os.path.join(cfg["workbase"], name)
    if not cfg["private_scratch"]:  # else the worker makes it in its own tmpfs
        make_workdir(cfg, uid, name)
    fds = []
    try:
        for _ in range(4):
            fds += os.pipe()
        child_spec = spec(cfg, uid)
        pid = _fork()
    except OSError:
        for fd in fds:
            os.close(fd)
        rmtree(workdir)
        raise
    out_r, out_w, err_r, err_w, st_r, st_w, job_r, job_w = fds
    if pid == 0:
        try:
            _child.worker_main(child_spec, workdir, {1: out_w, 2: err_w, 3: st_w, 4: job_r})
        finally:
            os._exit(1)
    for fd in (out_w, err_w, st_w, job_r):
        os.close(fd)
    return pid, workdir, [out_r, err_r, st_r, job_w]


def spawn_holder(cfg: dict, request: dict) -> tuple[int, str, list[int]]:
    """Fork one session holder; return its pid, workdir and our ends of its pipes and socket."""
    uid, workdir = request["uid"], os.path.join(cfg["workbase"], request["name"])
    if not cfg["private_scratch"]:
        make_workdir(cfg, uid, request["name"])
    fds = []
    try:
        for _ in range(2):
            fds += os.pipe()
        mine, theirs = socket.socketpair()
        fds += [mine.detach(), theirs.detach()]
        child_spec = spec(cfg, uid, _child.cpu_limits(request["cpu_s"])[1])
        pid = _fork()
    except OSError:
        for fd in fds:
            os.close(fd)
        rmtree(workdir)
        raise
    out_r, out_w, err_r, err_w, ctl, theirs_fd = fds
    if pid == 0:
        try:
            _child.holder_main(child_spec, workdir, {1: out_w, 2: err_w, 3: theirs_fd}, request["echo"])
        finally:
            os._exit(1)
    for fd in (out_w, err_w, theirs_fd):
        os.close(fd)
    return pid, workdir, [out_r, err_r, ctl]


def forker_main(sock: socket.socket, cfg: dict) -> None:
    """Serve spawn requests {"uid", "name"} until the zygote goes away; never returns."""
    _child._libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, which a filter needs without privileges
    _seccomp.install()  # once, for every child we fork (see _seccomp.py)
    use_raw_fork()
    _child.prepare_stdio()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    # A bare poll object, not selectors: whatever this loop allocates between two forks costs a
    # copy-on-write fault per page it touches (the spares share our pages), so it stays lean.
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    workers: dict[int, tuple[int | None, str]] = {}
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                try:
                    os.read(wake_r, 4096)  # what is left wakes us again
                except BlockingIOError:
                    pass
                continue
            data = sock.recv(1 << 12)  # requests are ~100 bytes
            if not data:
                os._exit(0)
            request = json.loads(data.decode())
            holder = request.get("sid") is not None
            try:
                if holder:
                    pid, workdir, fds = spawn_holder(cfg, request)
                else:
                    pid, workdir, fds = spawn(cfg, request["uid"], request["name"])
            except OSError as e:  # out of fds, processes, or space for the working directory
                error = {"error": f"cannot start a worker: {e}", "uid": request["uid"]}
                error["sid"] = request.get("sid")
                sock.send(json.dumps(error).encode())
                continue
            # a holder's uid outlives it (its executor takes over): the zygote sweeps it
            workers[pid] = (None if holder else request["uid"], None if cfg["private_scratch"] else workdir)
            reply = {"pid": pid, "uid": request["uid"], "workdir": workdir, "sid": request.get("sid")}
            socket.send_fds(sock, [json.dumps(reply).encode()], fds)
            for fd in fds:
                os.close(fd)
        while True:  # reap whatever died; the zygote learns of it from us
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            uid, workdir = workers.pop(pid, (None, None))
            if uid is not None:
                sweep(uid)
            if workdir:
                rmtree(workdir)
            cpu = usage.ru_utime + usage.ru_stime
            sock.send(json.dumps({"reaped": pid, "status": status, "cpu": cpu}).encode())
