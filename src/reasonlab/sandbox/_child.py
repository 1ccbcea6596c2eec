"""What runs in a fork of the zygote: confine the process, then run untrusted code in it.

Two roles share this module:

- a *worker* runs one stateless execution and exits. Workers are forked ahead of time (one
  spare per pool slot) and confined before the code arrives, so a request costs a pipe write,
  not a fork.
- a *holder* keeps one session's globals. For every cell it forks an *executor* that runs the
  cell. If the cell finishes (normally or with an exception) the executor becomes the new
  holder and the old one exits; if the cell is killed (timeout, memory) or crashes, the old
  holder carries on. A fork is a free checkpoint, so a runaway cell is rolled back instead of
  losing the session's variables.

Stdlib only: the zygote loads this file by path, without importing `reasonlab`.
"""

from __future__ import annotations

import _signal
import ast
import atexit
import builtins
import ctypes
import fcntl
import linecache
import os
import resource
import select
import signal
import sys
import threading
import traceback
import types

import _setup
import _wire

FILENAME = "<string>"  # what `python -c` calls its code, so tracebacks read the same
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 4, 38
_libc = ctypes.CDLL(None, use_errno=True)


def confine(spec: dict, workdir: str, fds: dict[int, int]) -> None:
    """Drop everything the zygote had that the code must not: fds, privileges, its directory.

    Order matters: limits are set while still privileged (an unprivileged process can lower a
    hard limit but never raise it), then the uid is dropped, which also drops capabilities.
    Every step here costs copy-on-write page faults (a few microseconds each in a VM), so this
    does the minimum: the environment, for one, is already the code's (the zygote set it).
    """
    # _signal, not signal: signal.signal() wraps every call in enum conversions that cost
    # page faults in a fresh child (~0.3 ms); the C functions are the same.
    _signal.set_wakeup_fd(-1)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)  # the only signals the zygote and forker changed
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _place_fds(fds)
    os.setsid()
    limits = [
        (resource.RLIMIT_AS, spec["as_bytes"]),
        (resource.RLIMIT_FSIZE, spec["fsize_bytes"]),
        (resource.RLIMIT_NPROC, spec["nproc"]),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 1024),
    ]
    if spec.get("cpu_hard"):  # a session: one hard CPU limit for every cell (each counts from zero)
        limits.append((resource.RLIMIT_CPU, spec["cpu_hard"]))
    for limit, value in limits:
        hard = resource.getrlimit(limit)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)  # never raise one
        resource.setrlimit(limit, (value, value))
    uid = spec["uid"]
    if spec.get("scratch"):  # own mount namespace: a fresh /tmp and /dev/shm, gone with us
        _setup.private_scratch(spec["scratch"]["workbase"], spec["scratch"]["tmp_mb"], uid)
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    else:  # no uid to switch to (root in a user namespace, say): drop the capabilities themselves
        _drop_capabilities()
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # and execve() cannot give them back
    # (the seccomp filter is already on: inherited from the forker, see _seccomp.py)
    _libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # the zygote is not dumpable; our own /proc/self must work
    _die_with(spec["parent"])
    os.chdir(workdir)
    _setenv({"HOME": workdir, "TMPDIR": workdir, "PWD": workdir})  # the rest was set up by the zygote
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None
    atexit._clear()  # the zygote's exit hooks are not the code's
    if "numpy" in sys.modules:  # numpy's global generator is not reseeded by fork (random's is)
        try:  # an int seed: four times cheaper than seed(), which builds a SeedSequence
            sys.modules["numpy"].random.seed(int.from_bytes(os.urandom(4), "little"))
        except Exception:
            pass
    sys.argv = ["-c"]


def _setenv(values: dict[str, str]) -> None:
    """os.environ.update(values) without its Python layers (MutableMapping.update, __setitem__,
    encodekey): in a fresh child every cold function costs copy-on-write faults (~0.2 ms here).
    The same effect: the C environment (which subprocesses get) and os.environ both change."""
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        os.environ.update(values)
        return
    for key, value in values.items():
        k, v = key.encode(), value.encode("utf-8", "surrogateescape")
        os.putenv(k, v)
        data[k] = v


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_capabilities() -> None:
    """capset(2) with empty sets: e.g. root of `unshare --map-root-user` could else unmount the
    tmpfs that hides the home directory. A no-op for a process that has none."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    if _libc.capset(ctypes.byref(header), (_CapData * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _die_with(parent: int) -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(70)


def _place_fds(fds: dict[int, int]) -> None:
    """Move fds to their target numbers ({target: current}) and close every other fd above them."""
    top = max(fds) + 1
    moved = {target: fcntl.fcntl(fd, fcntl.F_DUPFD, top) for target, fd in fds.items()}  # never clobbered
    for target, fd in moved.items():
        os.dup2(fd, target, inheritable=target <= 2)
    os.closerange(top, 1 << 20)  # close_range(2): cheap however many fds the zygote holds


def _stdin(data: str) -> None:
    """Put the request's stdin on fd 0 as an anonymous in-memory file (no deadlock, no file on disk)."""
    if data:
        fd = os.memfd_create("stdin")
        os.write(fd, data.encode("utf-8", "surrogateescape"))
        os.lseek(fd, 0, os.SEEK_SET)
    else:
        fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


_STDIO: tuple | None = None  # the code's streams, made once in the forker (prepare_stdio)
_FORKER_STDIO: tuple = ()  # the forker's own: kept alive so that no child pays for destroying them


def _open_stdio() -> tuple:
    return (
        open(0, "r", encoding="utf-8", errors="replace", closefd=False),
        open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False),
        open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False),
    )


def prepare_stdio() -> None:
    """Make the code's text streams once, in the forker, so that each child inherits them unused
    instead of building three (~0.4 ms of copy-on-write faults in a fresh child). They are made
    on a pipe, as a worker's stdout and stderr are (a stream caches whether it can seek), and the
    forker never writes to them: every child gets empty buffers. The forker holds no user data.
    The streams they replace in a child stay referenced from here, so the child does not tear
    them down (flush, close, free: ~40 more faults) when it swaps them out."""
    global _STDIO, _FORKER_STDIO
    _FORKER_STDIO = (sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__)
    saved = [os.dup(1), os.dup(2)]
    r, w = os.pipe()
    try:
        os.dup2(w, 1)
        os.dup2(w, 2)
        _STDIO = _open_stdio()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, r, w):
            os.close(fd)


def _stdio() -> None:
    """Fresh text streams on fds 0-2. Line-buffered so output survives a kill on timeout."""
    streams = _STDIO or _open_stdio()
    sys.stdin = sys.__stdin__ = streams[0]
    sys.stdout = sys.__stdout__ = streams[1]
    sys.stderr = sys.__stderr__ = streams[2]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:  # closed, replaced by something odd, or a broken pipe: nothing to save
            pass


def cpu_limits(cpu_s: float) -> tuple[int, int]:
    """(soft, hard) RLIMIT_CPU for cpu_s: SIGXCPU at the soft limit, SIGKILL one second later
    (code that ignores SIGXCPU cannot run on)."""
    soft = max(1, int(cpu_s + 0.999))
    return soft, soft + 1


def _set_cpu_limit(cpu_s: float, lower_hard: bool) -> None:
    """A worker lowers its hard limit too. A session's executor only sets the soft limit: the
    hard one was set for the whole session when its holder started, because a hard limit can
    never be raised again and the executor becomes the next holder."""
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft, want = cpu_limits(cpu_s)
    if lower_hard:
        hard = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, max(1, hard - 1))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def main_namespace() -> dict:
    """A fresh `__main__` module, so pickling, dataclasses and `if __name__ == "__main__"` work."""
    module = types.ModuleType("__main__")
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    return module.__dict__


def execute(code: str, namespace: dict, echo: bool = False) -> tuple[int, str | None]:
    """Run code as `python -c` would; return (exit status, name of the uncaught exception).

    With echo, a final expression statement is displayed like in a notebook cell.
    """
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    try:
        if not echo:  # compiling from source is much leaner than going through Python AST objects
            exec(compile(code, FILENAME, "exec", dont_inherit=True), namespace)
            return 0, None
        tree = compile(code, FILENAME, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Interactive(body=[tree.body.pop()])
        exec(compile(tree, FILENAME, "exec", dont_inherit=True), namespace)
        if last is not None:
            exec(compile(last, FILENAME, "single", dont_inherit=True), namespace)
    except SystemExit as e:
        return _exit_status(e.code), None
    except BaseException as e:
        try:
            traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # hide this frame
        except BaseException:
            pass
        return 1, type(e).__name__
    return 0, None


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _finish_script() -> None:
    """What the interpreter does after the main script: join non-daemon threads, run atexit."""
    try:
        threading._shutdown()
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass


def worker_main(spec: dict, workdir: str, fds: dict[int, int]) -> None:
    """Pre-forked stateless worker. fds: 1, 2 = output pipes, 3 = status pipe, 4 = job pipe."""
    status = 1
    try:
        confine(spec, workdir, fds)
        _stdio()  # before the job arrives: off its critical path (fd 0 is replaced under sys.stdin)
        job = _wire.read_frame(4)
        if job is None:  # the zygote is retiring this spare
            os._exit(0)
        os.close(4)
        _set_cpu_limit(job["cpu_s"], lower_hard=True)
        _stdin(job["stdin"])
        me = os.getpid()
        status, exc = execute(job["code"], main_namespace())
        _finish_script()
        _flush()
        if os.getpid() == me:  # not a fork made by the code that fell off the end of the script
            _wire.write_frame(3, {"exc": exc, "exit": status})
    except BaseException:
        _report_failure(3)
    os._exit(status)


def holder_main(spec: dict, workdir: str, fds: dict[int, int], echo: bool) -> None:
    """Session holder. fds: 1, 2 = output pipes (for the session's life), 3 = control socket."""
    try:
        confine(spec, workdir, fds)
        _stdio()
        namespace = main_namespace()
    except BaseException:
        _report_failure(3)
        os._exit(1)
    while True:
        msg = _wire.read_frame(3)
        if msg is None:
            os._exit(0)
        parent = os.getpid()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the executor: run the cell, then take over as holder
            os.close(r)
            os.setpgid(0, 0)  # so a timeout can kill the cell's process group, not the session
            parent_fd = os.pidfd_open(parent)
            me = os.getpid()
            # Announce ourselves before any of the cell's code runs (it may kill the holder at once):
            # the zygote must know us, or it would take us for an orphan once the holder is gone.
            _wire.write_frame(3, {"op": "started", "pid": me})
            _set_cpu_limit(msg["cpu_s"], lower_hard=False)
            _stdin(msg["stdin"])
            status, exc = execute(msg["code"], namespace, echo)
            _flush()
            if os.getpid() != me:
                os._exit(status)
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))  # as holder: up to the session's limit
            _take_over(w, parent_fd, spec["zygote"])
            _wire.write_frame(3, {"op": "done", "pid": me, "exit": status, "exc": exc})
            continue
        os.close(w)
        ended = _wait_executor(pid, r)
        if ended is None:  # the executor took over
            os._exit(0)
        status, cpu = ended
        _wire.write_frame(3, {"op": "ended", "status": status, "cpu": cpu})


def _take_over(w: int, parent_fd: int, zygote: int) -> None:
    """Tell the old holder to exit and wait until it has: from then on we read the control socket."""
    try:
        os.write(w, b"T")
    except OSError:  # the old holder is already gone
        pass
    os.close(w)
    select.select([parent_fd], [], [])
    os.close(parent_fd)
    _die_with(zygote)


def _wait_executor(pid: int, r: int) -> tuple[int, float] | None:
    """None when the executor took over; else (wait status, CPU seconds) once it died (the cell
    is rolled back)."""
    child_fd = os.pidfd_open(pid)
    watch = [r, child_fd]
    try:
        while True:
            ready, _, _ = select.select(watch, [], [])
            if r in ready:
                if os.read(r, 1) == b"T":
                    return None
                watch = [child_fd]  # end of file without a hand-over: wait for the death itself
            if child_fd in ready:
                _, status, usage = os.wait4(pid, 0)
                return status, usage.ru_utime + usage.ru_stime
    finally:
        os.close(child_fd)
        os.close(r)


def _report_failure(fd: int) -> None:
    try:
        _wire.write_frame(fd, {"failure": traceback.format_exc(limit=5)})
    except BaseException:
        pass
