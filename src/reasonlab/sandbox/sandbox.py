"""Host side of the sandbox: `Sandbox` (stateless runs) and `Session` (state kept between cells).

A Sandbox owns one zygote process (see _zygote.py) and talks to it over a socketpair: requests
go out from any thread, one reader thread turns replies into `concurrent.futures.Future`s. That
gives the blocking API (`future.result()`) and the async one (`asyncio.wrap_future`) from the
same code, and works from inside a running event loop. The zygote queues requests beyond
`pool_size` and enforces every limit; the host only restarts it if it ever dies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

from . import _wire, isolation
from .config import ExecResult, SandboxConfig

log = logging.getLogger("reasonlab.sandbox")
_WARNED: set[str] = set()  # log each weakness once per process, not once per Sandbox
_THREAD_ENV = {
    k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
}


_launcher: tuple[int, ThreadPoolExecutor] | None = None


def _start_zygote(config: SandboxConfig, launch: isolation.Launch, as_floor: int | None = None) -> _Zygote:
    """Start a zygote from one long-lived thread, whichever thread asks.

    bubblewrap's --die-with-parent is PR_SET_PDEATHSIG, which fires when the *thread* that
    started it exits: started from asyncio.to_thread's worker, the sandbox would die with the
    event loop. One thread per process (made again after a fork) lives as long as the process.
    """
    global _launcher
    if _launcher is None or _launcher[0] != os.getpid():
        _launcher = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="reasonlab-sandbox-start"))
    return _launcher[1].submit(_Zygote, config, launch, as_floor).result()


class SandboxError(RuntimeError):
    """The sandbox could not be started."""


def _failure(msg: str) -> ExecResult:
    return ExecResult("", "", -1, False, 0.0, False, f"sandbox failure: {msg}")


def _zygote_config(config: SandboxConfig, launch: isolation.Launch) -> tuple[dict, dict]:
    """The zygote's own environment, and the configuration it gets on its command line."""
    python = config.python or sys.executable
    env = {
        "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        **_THREAD_ENV,
    }
    code_env = {**env, "PYTHONDONTWRITEBYTECODE": "1", "USER": "sandbox", "LOGNAME": "sandbox", **config.env}
    # A hidden home still shows the top of the paths bound back into it (e.g. /root/.pyenv).
    bound_back = {
        h: sorted({os.path.relpath(k, h).split("/")[0] for k in launch.keep if k.startswith(h + "/")})
        for h in launch.hidden
    }
    limits = {"pool_size", "max_sessions", "max_output_bytes", "memory_mb", "max_procs", "max_file_mb"}
    cfg = {
        **config.model_dump(include=limits | {"preload"}),
        "tmp_mb": config.disk_mb,
        "workbase": launch.workbase,
        "env": code_env,
        "mounts": launch.mounts,
        "hidden_paths": launch.hidden,
        "hide_exceptions": bound_back,
        "uid_base": None if launch.mode == "none" else isolation.UID_BASE,
        "debug": bool(os.environ.get("REASONLAB_SANDBOX_DEBUG")),  # keep the zygote's stderr
    }
    return env, cfg


class _Zygote:
    """One running zygote: its process, the socket to it, the reader thread and pending futures."""

    def __init__(self, config: SandboxConfig, launch: isolation.Launch, as_floor: int | None = None) -> None:
        self.launch, self.pid = launch, os.getpid()
        env, cfg = _zygote_config(config, launch)
        cfg["as_floor"] = as_floor
        python = config.python or sys.executable
        ours, theirs = socket.socketpair()
        self.sock = ours
        errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty start-up cannot block on it
        if cfg["debug"]:
            errors = None
        argv = [
            *launch.prefix,
            python,
            "-E",
            "-s",
            "-B",
            *(["-S"] if as_floor is not None else []),  # the light one: no site hooks (see _zygote.main)
            isolation.ZYGOTE,
            str(theirs.fileno()),
            json.dumps(cfg),
        ]
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                pass_fds=[theirs.fileno()], env=env, start_new_session=True,
                cwd=launch.workbase if launch.mode == "none" else "/",  # never the caller's directory
            )  # fmt: skip
        finally:
            theirs.close()
        ready = None
        if select.select([ours], [], [], config.startup_timeout_s)[0]:
            try:
                ready = _wire.read_frame(ours.fileno())
            except (OSError, ValueError):
                pass
        if not ready or ready.get("op") != "ready":
            self.proc.kill()
            self.proc.wait()
            detail = ""
            if errors is not None:
                errors.seek(0)
                detail = errors.read().decode(errors="replace").strip()[-2000:]
                errors.close()
            ours.close()
            raise SandboxError(f"the sandbox ({launch.mode}) did not start: {detail or 'no message'}")
        if errors is not None:
            errors.close()
        self.facts = ready["facts"]
        self.pending: dict[str, Future] = {}
        self.lock = threading.Lock()
        self.alive = True
        self.ids = itertools.count()
        self.reader = threading.Thread(target=self._read_loop, name="reasonlab-sandbox", daemon=True)
        self.reader.start()

    def request(self, msg: dict, key: str | None = None) -> Future:
        """Send a request; the future resolves with its reply (keyed by msg id, or by `key`)."""
        future: Future = Future()
        key = key or msg.get("id")
        with self.lock:
            if not self.alive or os.getpid() != self.pid:  # dead, or we are a fork of its owner
                future.set_result(_failure("the worker pool died") if msg.get("id") else None)
                return future
            if key is not None:
                self.pending[key] = future
            try:
                self.sock.sendall(_wire.encode(msg))
            except OSError:
                self.pending.pop(key, None)
                future.set_result(_failure("the worker pool died") if msg.get("id") else None)
        if key is None:
            future.set_result(None)
        return future

    def new_id(self) -> str:
        return f"r{next(self.ids)}"

    def _read_loop(self) -> None:
        decoder = _wire.Decoder()
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            for msg in decoder.feed(data):
                if msg.get("op") == "result":
                    future = self.pending.pop(msg["id"], None)
                    fields = {k: msg[k] for k in ExecResult.__dataclass_fields__}
                    result = ExecResult(**fields)
                elif msg.get("op") == "closed":
                    future, result = self.pending.pop("close:" + msg["sid"], None), None
                else:
                    continue
                if future is not None and not future.done():
                    future.set_result(result)
        with self.lock:
            self.alive = False
            pending, self.pending = self.pending, {}
        for key, future in pending.items():
            if not future.done():
                future.set_result(None if key.startswith("close:") else _failure("the worker pool died"))

    def close(self) -> None:
        with self.lock:
            self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.reader is not threading.current_thread():
            self.reader.join(timeout=5)
        self.sock.close()
        if self.launch.host_tmp:
            shutil.rmtree(self.launch.host_tmp, ignore_errors=True)


def light_preload(config: SandboxConfig) -> list[str] | None:
    """The light interpreter's preload: the standard-library part of config.preload. None (no
    light interpreter) when it is switched off or would preload the same as the main one."""
    light = [m for m in config.preload if m.split(".")[0] in sys.stdlib_module_names]
    return light if config.light_interpreter and len(light) < len(config.preload) else None


_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import|import[ \t]+([\w., \t]+))", re.M)


def needs_heavy(code: str, config: SandboxConfig) -> bool:
    """Should code run in the main interpreter (it may use a heavy preload), or may it run in the
    light one? Light only when every module it imports is in the standard library and it names
    none of the heavy preloads and does not import dynamically. Only speed depends on this:
    anything imported in the light interpreter still works, it is just imported on the spot."""
    if "__import__" in code or "importlib" in code:
        return True
    heavy = {m.split(".")[0] for m in config.preload} - set(sys.stdlib_module_names)
    if any(name in code for name in heavy):
        return True
    for from_name, names in _IMPORT.findall(code):
        for name in [from_name] if from_name else names.split(","):
            top = name.strip().split(" ")[0].split(".")[0]
            if top and top not in sys.stdlib_module_names:
                return True
    return False


def _close_all(*states: "_State") -> None:
    for state in states:
        state.close()


class _State:
    """What a Sandbox must release; kept apart so a finalizer can hold it without the Sandbox.

    Fork-aware: a forked copy of the host (a DataLoader worker, say) inherits the socket but not
    the reader thread. It must neither use nor shut down the parent's zygote; it starts its own.
    """

    def __init__(self) -> None:
        self.zygote: _Zygote | None = None
        self.pid = os.getpid()

    def current(self) -> _Zygote | None:
        if self.pid != os.getpid():  # we are a fork: forget the parent's zygote, quietly
            if self.zygote is not None:
                self.zygote.sock.close()  # our copy of the fd only; no shutdown()
            self.zygote, self.pid = None, os.getpid()
        return self.zygote

    def close(self) -> None:
        zygote, self.zygote = self.current(), None
        if zygote is not None:
            zygote.close()


class Sandbox:
    """Run untrusted Python with limits, isolated from the host, fast (fork from a warm zygote).

    sb = Sandbox(SandboxConfig(timeout_s=2))
    sb.run("print(1 + 1)").stdout          # '2\\n'
    await sb.arun("import numpy; print(numpy.ones(3).sum())")
    with sb.session() as s:                # variables persist between cells
        s.run("x = 41"); s.run("print(x + 1)")
    sb.close()                             # also: `with Sandbox() as sb:`; and at exit
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides) -> None:
        config = config or SandboxConfig()
        self.config = SandboxConfig(**{**config.model_dump(), **overrides}) if overrides else config
        self._state = _State()
        self._light_state = _State()  # the light interpreter (see light_preload), started on demand
        self._light_preload = light_preload(self.config)
        self._lock = threading.Lock()
        self._report: dict | None = None
        self._launch: isolation.Launch | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_all, self._state, self._light_state)  # at gc or exit

    # -- life cycle --

    def start(self) -> "Sandbox":
        """Start the zygote now (otherwise the first run does). Idempotent; restarts a dead one."""
        self._zygote()
        return self

    def _zygote(self, light: bool = False) -> _Zygote:
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            heavy = self._heavy()
            if not light:
                return heavy
            zygote = self._light_state.current()
            if zygote is None or not zygote.alive:
                if zygote is not None:
                    zygote.close()
                # Same isolation; its workers' limit is their own address space plus memory_mb, as
                # in the heavy one, so code has the same headroom whichever interpreter runs it.
                config = self.config.model_copy(update={"preload": self._light_preload})
                launch = isolation.build(self._launch.mode, config)
                zygote = _start_zygote(config, launch, as_floor=0)
                self._light_state.zygote = zygote
            return zygote

    def _heavy(self) -> _Zygote:
        """The main zygote (all preloads, and every session); started or restarted here."""
        zygote = self._state.current()
        if zygote is None or not zygote.alive:
            if zygote is not None:
                zygote.close()
            zygote, launch, skipped = self._start()
            self._state.zygote, self._launch = zygote, launch
            self._report = isolation.report(launch, self.config, zygote.facts, skipped)
            self._report["light_interpreter"] = {
                "enabled": self._light_preload is not None,
                "preload": self._light_preload or [],
            }
            mode = launch.mode
            for warning in self._report["warnings"]:
                if warning not in _WARNED:
                    _WARNED.add(warning)
                    log.warning("reasonlab.sandbox (%s): %s", mode, warning)
        return zygote

    def _start(self) -> tuple[_Zygote, isolation.Launch, list[str]]:
        """Start a zygote in the strongest mode that works; with `auto`, a mode whose probe passed
        but whose zygote cannot start (mounts refused by a container, say) falls to the next."""
        modes, skipped = isolation.candidates(self.config.isolation, self.config.network)
        for mode in modes:
            launch = isolation.build(mode, self.config)
            try:
                return _start_zygote(self.config, launch), launch, skipped
            except BaseException as e:
                if launch.host_tmp:
                    shutil.rmtree(launch.host_tmp, ignore_errors=True)
                if not isinstance(e, SandboxError) or mode == modes[-1]:
                    raise
                skipped.append(f"{mode}: {e}")
        raise SandboxError("no isolation mode works here")  # unreachable: `none` always probes fine

    def close(self) -> None:
        """Stop the zygote: every execution and session is killed, every temp dir removed."""
        with self._lock:
            self._closed = True
        self._finalizer()

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "Sandbox":
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.close)

    # -- running code --

    def submit(self, code: str, stdin: str = "", *, timeout_s: float | None = None) -> Future:
        """Queue one stateless execution; the future resolves to an ExecResult."""
        zygote = self._zygote(light=self._light_preload is not None and not needs_heavy(code, self.config))
        return zygote.request(self._request("run", zygote, code, stdin, timeout_s))

    def run(self, code: str, stdin: str = "", *, timeout_s: float | None = None) -> ExecResult:
        """Run code in a fresh process (nothing persists between runs) and wait for the result."""
        return self.submit(code, stdin, timeout_s=timeout_s).result()

    async def arun(self, code: str, stdin: str = "", *, timeout_s: float | None = None) -> ExecResult:
        """Async `run`: up to pool_size executions proceed at the same time."""
        light = self._light_preload is not None and not needs_heavy(code, self.config)
        zygote = (self._light_state if light else self._state).current()
        if zygote is None or not zygote.alive:  # the first start takes a second: not on the loop
            await asyncio.to_thread(self._zygote, light)
        return await asyncio.wrap_future(self.submit(code, stdin, timeout_s=timeout_s))

    def _request(self, op: str, zygote: _Zygote, code: str, stdin: str, timeout_s: float | None) -> dict:
        timeout = timeout_s or self.config.timeout_s
        cpu = self.config.cpu_s if timeout_s is None and self.config.cpu_s else timeout
        return {
            "op": op,
            "id": zygote.new_id(),
            "code": code,
            "stdin": stdin,
            "timeout_s": timeout,
            "cpu_s": cpu,
        }

    def session(self, echo: bool = False) -> "Session":
        """A notebook-like session: variables persist between its cells until it is closed.

        With echo, a cell's final expression is printed like in a notebook.
        """
        return Session(self, echo)

    def isolation_report(self) -> dict:
        """What is actually enforced on this machine (starts the sandbox if needed)."""
        self._zygote()
        return dict(self._report)


class Session:
    """Cells run one after another in one process tree, sharing globals (see Sandbox.session).

    A cell that times out or crashes is rolled back: the session continues from the state before
    it. If the session itself is lost (its zygote died), the next cell starts from an empty state
    and its `error` says so.
    """

    def __init__(self, sandbox: Sandbox, echo: bool = False) -> None:
        self._sandbox, self.echo = sandbox, echo
        self._sid: str | None = None
        self._zygote_ref: _Zygote | None = None
        self._closed = False

    def _open(self) -> tuple[_Zygote, bool]:
        if self._closed:
            raise SandboxError("the session is closed")
        zygote = self._sandbox._zygote()
        if self._zygote_ref is zygote:
            return zygote, False
        lost = self._sid is not None
        self._sid, self._zygote_ref = uuid.uuid4().hex, zygote
        cpu = self._sandbox.config.cpu_s or self._sandbox.config.timeout_s
        zygote.request({"op": "open", "sid": self._sid, "echo": self.echo, "cpu_s": cpu})
        return zygote, lost

    def submit(self, code: str, stdin: str = "", *, timeout_s: float | None = None) -> Future:
        zygote, lost = self._open()
        request = self._sandbox._request("cell", zygote, code, stdin, timeout_s)
        request["sid"] = self._sid
        future = zygote.request(request)
        if not lost:
            return future
        noted: Future = Future()

        def note(f: Future) -> None:
            r = f.result()
            r.error = "; ".join(filter(None, ["session restarted: its earlier state was lost", r.error]))
            noted.set_result(r)

        future.add_done_callback(note)
        return noted

    def run(self, code: str, stdin: str = "", *, timeout_s: float | None = None) -> ExecResult:
        return self.submit(code, stdin, timeout_s=timeout_s).result()

    async def arun(self, code: str, stdin: str = "", *, timeout_s: float | None = None) -> ExecResult:
        zygote = self._sandbox._state.current()
        if zygote is None or not zygote.alive:
            await asyncio.to_thread(self._sandbox.start)
        return await asyncio.wrap_future(self.submit(code, stdin, timeout_s=timeout_s))

    def close(self) -> None:
        """Kill the session's processes and remove its working directory (waits for the zygote)."""
        if self._closed:
            return
        self._closed = True
        zygote = self._zygote_ref
        if zygote is not None and zygote.alive and self._sid:
            zygote.request({"op": "close", "sid": self._sid}, key="close:" + self._sid).result(timeout=30)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.close)

    def __del__(self) -> None:
        if not self._closed and self._zygote_ref is not None and self._zygote_ref.alive and self._sid:
            try:
                self._zygote_ref.request({"op": "close", "sid": self._sid})
            except Exception:
                pass
