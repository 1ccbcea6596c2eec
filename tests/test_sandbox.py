"""reasonlab.sandbox: results, limits, isolation, sessions, pool, life cycle, CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from reasonlab.sandbox import ExecResult, Sandbox, SandboxConfig
from reasonlab.sandbox.isolation import probe


@pytest.fixture(scope="module")
def sb():
    with Sandbox(SandboxConfig(timeout_s=2.0, pool_size=2)) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def small():
    """A sandbox with small limits: 1000 bytes of output, 1 MB files, 5 processes."""
    config = SandboxConfig(max_output_bytes=1000, max_file_mb=1, max_procs=5, timeout_s=3)
    with Sandbox(config) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def report(sb):
    return sb.isolation_report()


def needs(report: dict, key: str) -> None:
    if not report[key]:
        pytest.skip(f"{key} is not enforced on this machine ({report['mode']})")


# ---- results --------------------------------------------------------------------------------


def test_hello(sb):
    r = sb.run("print('hello', 6 * 7)")
    assert isinstance(r, ExecResult)
    assert (r.stdout, r.stderr, r.exit_code, r.error, r.timed_out, r.truncated) == (
        "hello 42\n",
        "",
        0,
        None,
        False,
        False,
    )
    assert r.ok and 0 < r.duration_s < 2


def test_stdin(sb):
    r = sb.run("import sys; data = sys.stdin.read(); print(data.upper(), end='')", stdin="abc\ndéf\n")
    assert r.stdout == "ABC\nDÉF\n"
    assert sb.run("import sys; print(repr(sys.stdin.read()))").stdout == "''\n"


def test_exception_shows_traceback_with_source(sb):
    r = sb.run("x = 1\ny = x / 0\n")
    assert r.exit_code == 1 and r.error is None
    assert "ZeroDivisionError" in r.stderr and "y = x / 0" in r.stderr
    assert "_child" not in r.stderr  # the sandbox's own frames are hidden


def test_syntax_error(sb):
    r = sb.run("def f(:\n  pass")
    assert r.exit_code == 1 and "SyntaxError" in r.stderr


@pytest.mark.parametrize(
    "code, exit_code, stderr",
    [
        ("import sys; sys.exit()", 0, ""),
        ("import sys; sys.exit(3)", 3, ""),
        ("import sys; sys.exit(256)", 0, ""),
        ("import sys; sys.exit(-1)", 255, ""),
        ("import sys; sys.exit('bye')", 1, "bye\n"),
        ("import os; os._exit(7)", 7, ""),
        ("raise KeyboardInterrupt", 1, "KeyboardInterrupt\n"),
    ],
)
def test_exit_codes(sb, code, exit_code, stderr):
    r = sb.run(code)
    assert r.exit_code == exit_code and r.stderr.endswith(stderr) and r.error is None


def test_main_module_semantics(sb):
    code = textwrap.dedent("""
        import pickle, dataclasses
        @dataclasses.dataclass
        class P:
            x: int
        if __name__ == "__main__":
            print(pickle.loads(pickle.dumps(P(3))))
    """)
    assert sb.run(code).stdout == "P(x=3)\n"


def test_preloaded_modules_work(sb, report):
    r = sb.run("import numpy as np, sympy\nprint(int(np.arange(5).sum()), sympy.factor('x**2-1'))")
    assert r.stdout == "10 (x - 1)*(x + 1)\n", r.stderr
    assert "numpy" in report["preloaded"]


def test_light_interpreter_takes_code_that_imports_nothing_heavy(sb, report):
    from reasonlab.sandbox.sandbox import needs_heavy

    light = ["print(1)", "import math, itertools\nfrom collections import Counter\nprint(Counter('ab'))"]
    heavy = ["import numpy as np", "import pandas", "from scipy import stats", "__import__('x')", "x = sympy"]
    assert [needs_heavy(c, sb.config) for c in light + heavy] == [False] * 2 + [True] * 5
    assert report["light_interpreter"]["enabled"] and "numpy" not in report["light_interpreter"]["preload"]
    probe = "import sys; print(sorted(m for m in sys.modules if m.startswith('num') and m != 'numbers'))"  # names no heavy module
    assert sb.run(probe).stdout == "[]\n"  # the light interpreter: nothing heavy loaded
    assert sb.run("import numpy\n" + probe).stdout.startswith("['numpy'")
    hidden = "exec('import num' + 'py'); import sys; print(sys.modules['num' + 'py'].ones(2).sum())"
    assert not needs_heavy(hidden, sb.config) and sb.run(hidden).stdout == "2.0\n"  # imported on the spot
    for prefix in ("", "import numpy\n"):  # the same address-space limit in both interpreters
        assert sb.run(prefix + "x = bytearray(400 * 2**20); print(len(x))").stdout == "419430400\n"
        assert sb.run(prefix + "x = bytearray(600 * 2**20)").error == "memory limit"
    with Sandbox(SandboxConfig(timeout_s=2, light_interpreter=False)) as sandbox:
        assert sandbox.run(probe).stdout.startswith("['numpy'")
        assert sandbox._light_state.zygote is None


def test_random_differs_between_runs(sb):
    code = "import random, numpy; print(random.random(), numpy.random.rand())"
    assert len({sb.run(code).stdout for _ in range(4)}) == 4


def test_light_workers_get_fresh_random_state_and_working_threads_fork_streams(sb):
    """Spares are forked without the interpreter's fork hooks and inherit streams made once in
    the forker (_forker.use_raw_fork, _child.prepare_stdio): each execution must still get its
    own `random` state, and threads, os.fork and its streams must behave as under `python -c`."""
    from reasonlab.sandbox.sandbox import needs_heavy

    code = "import random; print(random.getrandbits(64), random.random())"
    assert not needs_heavy(code, sb.config)  # the light interpreter runs it
    assert len({sb.run(code).stdout for _ in range(6)}) == 6
    code = (
        "import os, sys, threading\n"
        "out = []\n"
        "t = threading.Thread(target=out.append, args=(1,)); t.start(); t.join()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print('child', flush=True); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(out, threading.main_thread() is threading.current_thread(), threading.active_count())\n"
        "print(sys.stdout.line_buffering, sys.stdout.seekable(), sys.stdin.read() == 'in')\n"
        "print('é', file=sys.stderr)\n"
    )
    assert not needs_heavy(code, sb.config)
    for _ in range(2):  # the streams are fresh each time: nothing of the last run is buffered
        r = sb.run(code, stdin="in")
        assert r.ok, r
        assert r.stdout == "child\n[1] True 1\nTrue False True\n" and r.stderr == "é\n"


def test_runs_are_stateless(sb):
    assert sb.run("x = 5; open('f.txt', 'w').write('hi')").ok
    r = sb.run("import os; print('x' in globals(), os.listdir('.'))")
    assert r.stdout == "False []\n"


def test_output_is_truncated_head_and_tail(small):
    r = small.run("for i in range(10000): print(i)")
    assert r.truncated and r.exit_code == 0
    assert r.stdout.startswith("0\n1\n") and r.stdout.endswith("9998\n9999\n")
    assert "bytes truncated" in r.stdout and len(r.stdout) < 1100


def test_partial_output_survives_timeout(sb):
    r = sb.run("import time\nprint('before', flush=False)\ntime.sleep(10)", timeout_s=0.5)
    assert r.timed_out and r.stdout == "before\n"


# ---- limits ---------------------------------------------------------------------------------


def test_timeout(sb):
    t = time.monotonic()
    r = sb.run("while True: pass", timeout_s=0.5)
    assert r.timed_out and r.error == "timeout" and r.exit_code < 0
    assert 0.5 <= r.duration_s < 1.5 and time.monotonic() - t < 2


def test_timeout_per_call_overrides_config(sb):
    assert sb.run("import time; time.sleep(0.3); print('ok')", timeout_s=1).stdout == "ok\n"
    assert sb.run("import time; time.sleep(3)", timeout_s=0.3).timed_out


def test_cpu_limit():
    with Sandbox(SandboxConfig(timeout_s=30, cpu_s=1)) as sandbox:  # wall clock: room for a busy CI
        r = sandbox.run("while True: pass")
    assert r.error == "cpu time limit" and not r.timed_out and r.exit_code == -24


def test_memory_limit(sb):
    r = sb.run("x = bytearray(2 * 1024**3)")
    assert r.error == "memory limit" and "MemoryError" in r.stderr
    assert sb.run("x = bytearray(100 * 1024**2); print(len(x))").stdout == "104857600\n"


def test_file_size_limit(small):
    r = small.run("open('big', 'wb').write(b'x' * 2 * 2**20)")
    assert r.exit_code == 1 and "File too large" in r.stderr


def test_process_limit(small):
    if not small.isolation_report()["uid_isolation"]:
        pytest.skip("max_procs counts all the user's processes without a uid switch")
    r = small.run(
        textwrap.dedent("""
        import subprocess
        procs = []
        try:
            for _ in range(50):
                procs.append(subprocess.Popen(['sleep', '5']))
        except OSError as e:
            print('stopped at', len(procs))
    """)
    )
    assert r.stdout.startswith("stopped at") and int(r.stdout.split()[-1]) < 5


# ---- isolation ------------------------------------------------------------------------------


def test_isolation_report(report):
    for key in (
        "mode",
        "network_isolated",
        "pid_namespace",
        "filesystem_readonly",
        "home_hidden",
        "host_dirs_hidden",
        "visible_host_paths",
        "private_scratch_per_execution",
        "ipc_refused",
        "hard_cpu_limit",
        "uid_isolation",
        "limits",
        "warnings",
        "preloaded",
    ):
        assert key in report
    assert report["mode"] in ("bwrap", "namespaces", "none")


def test_environment_is_cleared(sb, monkeypatch):
    monkeypatch.setenv("REASONLAB_TEST_SECRET", "hunter2")
    r = sb.run("import os; print(sorted(os.environ))")
    assert "REASONLAB_TEST_SECRET" not in r.stdout and "HOME" in r.stdout


def test_private_working_directory(sb):
    r = sb.run("import os, tempfile; print(os.getcwd() == os.environ['HOME'] == tempfile.gettempdir())")
    assert r.stdout == "True\n"
    first = sb.run("import os; print(os.getcwd())").stdout
    assert first != sb.run("import os; print(os.getcwd())").stdout


def test_no_network(sb, report):
    needs(report, "network_isolated")
    r = sb.run("import socket; socket.create_connection(('1.1.1.1', 53), timeout=1)")
    assert r.exit_code == 1 and ("unreachable" in r.stderr or "OSError" in r.stderr)


def test_cannot_write_outside_workdir(sb, report, tmp_path):
    needs(report, "filesystem_readonly")
    target = tmp_path / "pwned"
    r = sb.run(f"open({str(target)!r}, 'w').write('x')")
    assert r.exit_code == 1 and not target.exists()
    r = sb.run(f"open({os.path.abspath(__file__)!r}, 'a').write('x')")
    assert r.exit_code == 1


def test_home_is_hidden(sb, report):
    needs(report, "home_hidden")
    home = os.path.expanduser("~")
    secret = os.path.join(home, f".reasonlab-test-secret-{os.getpid()}")
    with open(secret, "w") as f:
        f.write("top secret")
    try:
        r = sb.run(f"print(open({secret!r}).read())")
        assert r.exit_code == 1 and "top secret" not in r.stdout
    finally:
        os.remove(secret)


@pytest.mark.parametrize("mode", ["bwrap", "namespaces", "none"])
def test_every_isolation_mode_runs(mode):
    if probe(mode, False):
        pytest.skip(f"{mode}: {probe(mode, False)}")
    with Sandbox(SandboxConfig(isolation=mode, timeout_s=2)) as sandbox:
        report = sandbox.isolation_report()
        assert report["mode"] == mode
        assert sandbox.run("import numpy; print(numpy.zeros(2).sum())").stdout == "0.0\n"
        assert sandbox.run("while True: pass", timeout_s=0.3).timed_out
        with sandbox.session() as s:
            s.run("x = 2")
            assert s.run("print(x * 21)").stdout == "42\n"
    if mode != "none":
        assert report["network_isolated"] and report["pid_namespace"] and report["filesystem_readonly"]


def test_network_can_be_allowed():
    if probe("bwrap", True) and probe("namespaces", True):
        pytest.skip("no namespace isolation here")
    with Sandbox(SandboxConfig(network=True, timeout_s=2)) as sandbox:
        r = sandbox.run("import socket; print([n for _, n in socket.if_nameindex()])")
    assert r.stdout.strip() != "['lo']"


# ---- concurrency and async ------------------------------------------------------------------


def test_pool_runs_in_parallel(sb):
    t = time.monotonic()
    futures = [sb.submit("import time; time.sleep(0.6); print('done')") for _ in range(2)]
    assert [f.result().stdout for f in futures] == ["done\n", "done\n"]
    assert time.monotonic() - t < 1.15  # one after the other would take 1.2 s


def test_async_gather(sb):
    async def main():
        return await asyncio.gather(*(sb.arun(f"print({i} ** 2)") for i in range(10)))

    results = asyncio.run(main())
    assert [r.stdout for r in results] == [f"{i**2}\n" for i in range(10)]


def test_threads_share_one_sandbox(sb):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as ex:
        outs = list(ex.map(lambda i: sb.run(f"print({i})").stdout, range(30)))
    assert outs == [f"{i}\n" for i in range(30)]


# ---- sessions -------------------------------------------------------------------------------


def test_session_keeps_state(sb):
    with sb.session() as s:
        assert s.run("import math\nx = 41\ndef f(y): return y + 1").ok
        assert s.run("print(f(x), math.pi > 3)").stdout == "42 True\n"
        assert s.run("open('notes.txt', 'w').write('kept')").ok
        assert s.run("print(open('notes.txt').read())").stdout == "kept\n"
    assert sb.run("print('x' in globals())").stdout == "False\n"


def test_session_rolls_back_a_timed_out_cell(sb):
    with sb.session() as s:
        s.run("x = 1")
        r = s.run("x = 2\nwhile True: pass", timeout_s=0.5)
        assert r.timed_out and r.error == "timeout"
        assert s.run("print(x)").stdout == "1\n"


def test_session_rolls_back_a_crash(sb):
    with sb.session() as s:
        s.run("data = [1, 2, 3]")
        r = s.run("data.append(4)\nimport ctypes; ctypes.string_at(0)")
        assert r.exit_code == -11 and "SIGSEGV" in r.error
        assert s.run("print(data)").stdout == "[1, 2, 3]\n"


class _SessionProtocol:
    """The zygote's session message handling alone (the _sessions mixin, loaded by path as the
    zygote loads it), with the zygote's I/O replaced by records of what it was asked to do."""

    def __init__(self):
        import importlib
        import pathlib

        sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "src" / "reasonlab" / "sandbox"))
        try:
            self.mod, self.jobs = importlib.import_module("_sessions"), importlib.import_module("_jobs")
        finally:
            sys.path.pop(0)
        mixin = self.mod.SessionsMixin
        record = self

        class Fake(mixin):
            def __init__(self):
                self.owners = {}

            def drain(self, fds, name, capture):
                pass

            def close_fd(self, fds, name):
                fds.pop(name, None)

            def finish_cell(self, s):
                record.finished.append(s.job)
                s.job = None

            def kill_session(self, s):
                record.killed.append(sorted(s.alive))

        self.zygote, self.finished, self.killed = Fake(), [], []

    def session_with_a_cell(self):
        s = self.jobs.Session("s1", None, "/nonexistent", False, 5.0)
        s.holder, s.fds = os.getpid(), {"ctl": -1}
        s.job = self.jobs.Job({"id": "c1", "code": "", "timeout_s": 5.0}, 100, s)
        return s


def _a_reaped_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_session_accepts_the_start_of_an_executor_that_was_already_reaped():
    """Under load the holder can reap a cell that crashed on its first line before the zygote
    reads that cell's "started": the cell must end as a crash and keep the session's state, not
    reset the session as if the code had forged the message (seen with both cores busy)."""
    proto = _SessionProtocol()
    s = proto.session_with_a_cell()
    job, gone = s.job, _a_reaped_pid()
    proto.zygote.on_session_msg(s, {"op": "started", "pid": gone})
    proto.zygote.on_session_msg(s, {"op": "ended", "status": 11, "cpu": 0.01})
    assert proto.killed == [] and not job.notes  # no violation, no reset
    assert proto.finished == [job] and job.status == 11 and job.pid == gone


def test_session_still_rejects_a_forged_or_second_start():
    proto = _SessionProtocol()
    s = proto.session_with_a_cell()  # a live process that is not the holder's child: forged
    proto.zygote.on_session_msg(s, {"op": "started", "pid": 1})
    assert proto.killed and "control channel" in s.job.notes[0]
    proto = _SessionProtocol()
    s = proto.session_with_a_cell()
    proto.zygote.on_session_msg(s, {"op": "started", "pid": _a_reaped_pid()})
    proto.zygote.on_session_msg(s, {"op": "started", "pid": _a_reaped_pid()})  # a second one
    assert proto.killed and "control channel" in s.job.notes[0]


def test_session_keeps_state_after_an_exception(sb):
    with sb.session() as s:
        r = s.run("y = 10\nraise ValueError('boom')")
        assert r.exit_code == 1 and "ValueError: boom" in r.stderr
        assert s.run("print(y)").stdout == "10\n"


def test_session_echo(sb):
    with sb.session(echo=True) as s:
        assert s.run("a = 6\na * 7").stdout == "42\n"
        assert s.run("None").stdout == ""


def test_session_stdin_and_output_are_per_cell(sb):
    with sb.session() as s:
        assert s.run("print(input())", stdin="one\n").stdout == "one\n"
        assert s.run("print(input())", stdin="two\n").stdout == "two\n"


def test_session_async(sb):
    async def main():
        async with sb.session() as s:
            await s.arun("n = 5")
            return await s.arun("print(n * n)")

    assert asyncio.run(main()).stdout == "25\n"


def test_sessions_are_independent(sb):
    with sb.session() as a, sb.session() as b:
        a.run("v = 'a'")
        b.run("v = 'b'")
        assert (a.run("print(v)").stdout, b.run("print(v)").stdout) == ("a\n", "b\n")


def test_closed_session_refuses_work(sb):
    s = sb.session()
    s.run("x = 1")
    s.close()
    with pytest.raises(RuntimeError):
        s.run("print(x)")


# ---- life cycle -----------------------------------------------------------------------------


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_close_leaves_nothing_behind():
    before = _fds()
    sandbox = Sandbox(SandboxConfig(timeout_s=2)).start()
    sandbox.run("print(1)")
    with sandbox.session() as s:
        s.run("x = 1")
    proc = sandbox._state.zygote.proc
    sandbox.close()
    assert proc.poll() is not None
    assert _fds() == before
    with pytest.raises(RuntimeError):
        sandbox.run("print(1)")


def test_none_mode_removes_its_temp_dir():
    sandbox = Sandbox(SandboxConfig(isolation="none", timeout_s=2)).start()
    tmp = sandbox._state.zygote.launch.host_tmp
    assert sandbox.run("open('f', 'w').write('x')").ok and os.path.isdir(tmp)
    sandbox.close()
    assert not os.path.exists(tmp)


def test_restarts_after_the_zygote_dies():
    with Sandbox(SandboxConfig(timeout_s=2)) as sandbox:
        s = sandbox.session()
        s.run("x = 1")
        sandbox._state.zygote.proc.kill()
        sandbox._state.zygote.proc.wait()
        time.sleep(0.1)
        r = sandbox.run("print('back')")
        if r.error:  # the death may be noticed by this very call
            r = sandbox.run("print('back')")
        assert r.stdout == "back\n"
        r = s.run("print('x' in globals())")
        assert r.stdout == "False\n" and "state was lost" in r.error


def test_cleanup_at_interpreter_exit(tmp_path):
    script = tmp_path / "exit.py"
    script.write_text(
        textwrap.dedent("""
        from reasonlab.sandbox import Sandbox
        sb = Sandbox(timeout_s=2)
        print(sb.run("print(1)").stdout.strip(), sb._state.zygote.proc.pid, flush=True)
        s = sb.session(); s.run("x = 1")
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    value, pid = out.stdout.split()
    assert value == "1"
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


# ---- CLI ------------------------------------------------------------------------------------


def test_cli_runs_a_file_and_stdin(tmp_path):
    from typer.testing import CliRunner

    from reasonlab.sandbox.cli import app

    code = tmp_path / "prog.py"
    code.write_text("print('from file')\nimport sys; print('oops', file=sys.stderr)\n")
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(code), "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert "from file" in result.output and "exit 0" in result.output
    result = runner.invoke(app, ["run", "-", "--timeout", "0.5"], input="while True: pass\n")
    assert "timeout" in result.output and result.exit_code != 0
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_a_forked_host_leaves_the_parents_sandbox_alone(sb):
    with sb.session() as s:
        s.run("kept = 1")
        pid = os.fork()
        if pid == 0:  # a forked copy of the host (a DataLoader worker, say) uses its own zygote
            ok = sb.run("print('child')").stdout == "child\n"
            s.close()
            os._exit(0 if ok else 1)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert s.run("print(kept)").stdout == "1\n"
    assert sb.run("print('parent')").stdout == "parent\n"


def test_survives_the_event_loop_that_started_it():
    """Started by arun (in asyncio.to_thread's worker), the sandbox outlives asyncio.run."""
    sandbox = Sandbox(SandboxConfig(timeout_s=2))
    s = sandbox.session()
    try:
        assert asyncio.run(s.arun("x = 6 * 7")).ok
        time.sleep(0.3)  # the executor thread that ran start() has exited by now
        assert asyncio.run(s.arun("print(x)")).stdout == "42\n"
        assert sandbox.run("print('still here')").stdout == "still here\n"
    finally:
        sandbox.close()


def test_auto_falls_back_when_a_mode_cannot_start(monkeypatch):
    from reasonlab.sandbox import isolation

    modes, _ = isolation.candidates("auto", False)
    if len(modes) < 2:
        pytest.skip("only one isolation mode works here")
    real_build = isolation.build

    def broken_first(mode, cfg):
        launch = real_build(mode, cfg)
        if mode == modes[0]:
            launch.prefix = ["false"]  # starts, then exits at once: no zygote
        return launch

    monkeypatch.setattr(isolation, "build", broken_first)
    with Sandbox(SandboxConfig(timeout_s=2)) as sandbox:
        report = sandbox.isolation_report()
        assert report["mode"] == modes[1] and report["skipped_modes"][-1].startswith(modes[0])
        assert sandbox.run("print('ok')").stdout == "ok\n"
