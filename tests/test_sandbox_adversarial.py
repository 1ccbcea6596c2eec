"""Hostile code against reasonlab.sandbox. Every case asserts two things: the host is unharmed
(a bystander process lives, a canary file is intact, no process of the code outlives the call)
and the next execution still works. Runs in whatever isolation `auto` picks; skipped in `none`,
which promises no isolation."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from reasonlab.sandbox import Sandbox, SandboxConfig

SECRET = "reasonlab-adversarial-secret-value"
HOST_PID = os.getpid()
POOL = 2
STEADY = 2 + POOL  # under the launcher (bwrap or unshare): the zygote, the forker and one spare per slot


@pytest.fixture(scope="module")
def sb():
    config = SandboxConfig(
        timeout_s=0.5, pool_size=POOL, memory_mb=256, max_procs=32, max_file_mb=16, disk_mb=64
    )
    os.environ["REASONLAB_ADVERSARIAL_SECRET"] = SECRET  # in the host's environment when it starts
    try:
        with Sandbox(config) as sandbox:
            if sandbox.isolation_report()["mode"] == "none":
                pytest.skip("isolation='none' promises no isolation (no bubblewrap and no namespaces here)")
            yield sandbox
    finally:
        del os.environ["REASONLAB_ADVERSARIAL_SECRET"]


@pytest.fixture(scope="module")
def bystander():
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    """A file in a host temp dir and one in the home directory, both with secret content."""
    folder = tmp_path_factory.mktemp("canary")
    (folder / "canary.txt").write_text(SECRET)
    home_file = os.path.join(os.path.expanduser("~"), f".reasonlab-canary-{os.getpid()}")
    with open(home_file, "w") as f:
        f.write(SECRET)
    yield str(folder), home_file
    os.remove(home_file)


def _descendants(root: int) -> set[int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:60]
            out.append(
                f"{pid} ppid={status['PPid'].strip()} uid={status['Uid'].split()[0]} "
                f"state={status['State'].strip()} {cmd}"
            )
        except OSError:
            out.append(f"{pid} gone")
    return out


def _wait_for_at_most(root: int, count: int, timeout: float = 10.0) -> set[int]:
    """Processes under root, once there are at most `count` twice in a row (a dying worker and its
    replacement can overlap for a moment), or when the time is up (generous: reaping a killed
    process group takes longer on a loaded machine; a pass returns as soon as it is clean)."""
    deadline, ok = time.monotonic() + timeout, 0
    while True:
        pids = _descendants(root)
        ok = ok + 1 if len(pids) <= count else 0
        if ok >= 2 or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


@pytest.fixture()
def unharmed(sb, bystander, canary):
    """Yield, then check the host and the sandbox after the case."""
    zygote = sb._state.zygote
    baseline = STEADY
    yield
    folder, home_file = canary
    assert bystander.poll() is None, "a host process was killed"
    assert os.listdir(folder) == ["canary.txt"] and open(os.path.join(folder, "canary.txt")).read() == SECRET
    assert open(home_file).read() == SECRET
    assert sb._state.zygote is zygote and zygote.alive, "the zygote died"
    left = _wait_for_at_most(zygote.proc.pid, baseline)
    assert len(left) <= baseline, f"processes of the code outlived the call: {_describe(left)}"
    r = sb.run("print('still alive')")
    assert r.stdout == "still alive\n" and r.error is None, r


def timeout_or_error(r):
    assert r.timed_out or r.error or r.exit_code != 0


def timed_out(r):
    assert r.timed_out and r.error == "timeout"


def failed(r):
    assert r.exit_code != 0


def memory(r):
    assert r.error == "memory limit" or r.timed_out, r


def not_leaked(r):
    assert SECRET not in r.stdout + r.stderr


CASES = {
    # --- processes ---
    "fork_bomb": ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", timeout_or_error),
    "fork_bomb_exponential": (
        "import os\nfor _ in range(40):\n    try: os.fork()\n    except OSError: pass\n"
        "import time; time.sleep(5)",
        timeout_or_error,
    ),
    "shell_fork_bomb": (
        "import os; os.execv('/bin/bash', ['bash', '-c', 'f() { f | f & }; f; sleep 10'])",
        timeout_or_error,
    ),
    "subprocess_flood": (
        "import subprocess\nps = []\nwhile True:\n    try: ps.append(subprocess.Popen(['sleep', '100']))\n"
        "    except OSError: break\nprint(len(ps))",
        lambda r: None,
    ),
    "thread_bomb": (
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,), "
        "daemon=True).start()",
        timeout_or_error,
    ),
    "busy_threads": (
        "import threading\ndef spin():\n    while True: pass\nfor _ in range(8): "
        "threading.Thread(target=spin).start()",
        timeout_or_error,
    ),
    "setsid_escape": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('left')",
        lambda r: r.stdout == "left\n",
    ),
    "double_fork_daemon": (
        "import os, time, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        sys.stdout.close(); time.sleep(60)\n    os._exit(0)\nos.wait()\nprint('parent done')",
        lambda r: r.stdout == "parent done\n",
    ),
    "daemon_writes_later": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(0.3)\n"
        "    print('GHOST', flush=True)\n    time.sleep(60)\nprint('bye')",
        lambda r: r.stdout == "bye\n",
    ),
    "orphaned_subprocess": (
        "import subprocess; subprocess.Popen(['sleep', '100'], start_new_session=True); print('ok')",
        lambda r: r.stdout == "ok\n",
    ),
    "kill_parent": ("import os, signal; os.kill(os.getppid(), signal.SIGKILL)", lambda r: None),
    "kill_pid_1": ("import os, signal; os.kill(1, signal.SIGKILL)", lambda r: None),
    "kill_everything": ("import os, signal; os.kill(-1, signal.SIGKILL); print('survived')", lambda r: None),
    "kill_host": (f"import os, signal; os.kill({HOST_PID}, signal.SIGKILL)", lambda r: None),
    "kill_bystander": (
        "import os, signal, sys; os.kill(int(sys.stdin.read()), signal.SIGKILL)",
        lambda r: None,
    ),
    "kill_all_pids": (
        "import os, signal\nfor p in range(1, 5000):\n    try: os.kill(p, signal.SIGKILL)\n"
        "    except OSError: pass\nprint('done')",
        lambda r: None,
    ),
    "kill_self": (
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        lambda r: r.exit_code == -9 and r.error == "killed by signal 9 (SIGKILL)",
    ),
    "stop_self": ("import os, signal; os.kill(os.getpid(), signal.SIGSTOP)", timed_out),
    "ignore_signals": (
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True: pass",
        timed_out,
    ),
    "abort": ("import os; os.abort()", lambda r: r.exit_code == -6),
    "ptrace_zygote": (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())",
        lambda r: r.stdout.startswith("-1"),
    ),
    "read_zygote_memory": ("open('/proc/1/mem', 'rb').read(10)", failed),
    "setuid_root": ("import os; os.setuid(0)", failed),
    # --- time and memory ---
    "infinite_loop": ("while True: pass", timed_out),
    "sleep_past_limit": ("import time; time.sleep(100)", timed_out),
    "non_daemon_thread_never_ends": (
        "import threading, time\nthreading.Thread(target=time.sleep, args=(100,)).start()\n"
        "print('main done')",
        timed_out,
    ),
    "atexit_loops": ("import atexit\n@atexit.register\ndef f():\n    while True: pass", timed_out),
    "memory_bomb": ("x = bytearray(10**10)", memory),
    "memory_bomb_incremental": ("chunks = []\nwhile True: chunks.append(bytearray(10**7))", memory),
    "numpy_memory_bomb": ("import numpy as np; a = np.ones((10**5, 10**5))", memory),
    "mmap_bomb": ("import mmap; m = mmap.mmap(-1, 10**10)", failed),
    "deep_recursion": ("def f(n): return f(n + 1)\nf(0)", lambda r: "RecursionError" in r.stderr),
    "deep_recursion_raised_limit": (
        "import sys; sys.setrecursionlimit(10**8)\ndef f(n): return f(n + 1)\nf(0)",
        timeout_or_error,
    ),
    "ctypes_segfault": ("import ctypes; ctypes.string_at(0)", lambda r: r.exit_code == -11),
    "huge_source": ("x = 1\n" * 200_000 + "print('big')", lambda r: r.stdout == "big\n" or r.error),
    "null_bytes_in_source": ("print(1)\0", failed),
    # --- output ---
    "gigabytes_of_output": (
        "import sys\nwhile True: sys.stdout.write('x' * (1 << 20))",
        lambda r: r.truncated and len(r.stdout) < 20000,
    ),
    "gigabytes_of_stderr": (
        "import os\nwhile True: os.write(2, b'e' * (1 << 20))",
        lambda r: r.truncated and len(r.stderr) < 20000,
    ),
    "one_huge_line": ("print('y' * 10**7)", lambda r: r.truncated and r.stdout.startswith("yyy")),
    "binary_output": (
        "import sys; sys.stdout.buffer.write(bytes(range(256)) * 10)",
        lambda r: r.exit_code == 0 and isinstance(r.stdout, str),
    ),
    "invalid_utf8": (
        "import os; os.write(1, b'ok \\xff\\xfe\\x80 end')",
        lambda r: r.stdout.startswith("ok "),
    ),
    "lone_surrogate": ("print('\\ud800 x')", lambda r: r.exit_code == 0),
    "close_stdout_and_stderr": ("import os; os.close(1); os.close(2); print('lost')", lambda r: None),
    "replace_sys_streams": ("import sys; sys.stdout = None; sys.stderr = 42; print('x')", lambda r: None),
    "stdout_flood_then_answer": (
        "for i in range(20000): print(i)\nprint('ANSWER')",
        lambda r: r.truncated and r.stdout.endswith("ANSWER\n"),
    ),
    # --- secrets and files ---
    "env_secret": ("import os; print(os.environ)", not_leaked),
    "env_of_other_processes": (
        "import os\nfor p in os.listdir('/proc'):\n    try: print(open(f'/proc/{p}/environ').read())\n"
        "    except Exception: pass",
        not_leaked,
    ),
    "read_home_canary": (
        "import os, glob\nfor p in glob.glob(os.path.expanduser('~root') + '/.reasonlab-canary*') + "
        "glob.glob('/home/*/.reasonlab-canary*'):\n    print(open(p).read())",
        not_leaked,
    ),
    "read_host_tmp": (
        "import glob\nfor p in glob.glob('/tmp/**/canary.txt', recursive=True): print(open(p).read())",
        not_leaked,
    ),
    "write_host_tmp": (
        "import glob\nfor d in glob.glob('/tmp/pytest-of-*/*/canary*'):\n"
        "    open(d + '/evil.txt', 'w').write('x')",
        lambda r: None,
    ),
    "write_outside_workdir": (
        "import os\nfor p in ('/etc/evil', '/usr/evil', os.path.expanduser('~') + '/../evil', '/tmp/evil',"
        " '/var/tmp/evil', '/evil'):\n    try: open(p, 'w').write('x'); print('WROTE', p)\n"
        "    except OSError: pass",
        lambda r: "WROTE" not in r.stdout,
    ),
    "write_repo_file": (f"open({os.path.abspath(__file__)!r}, 'a').write('# pwned')", failed),
    "fill_disk": (
        "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 2**24); i += 1",
        lambda r: "No space left" in r.stderr or "File too large" in r.stderr or r.timed_out,
    ),
    "fill_dev_shm": (
        "i = 0\nwhile True:\n    open(f'/dev/shm/f{i}', 'wb').write(b'x' * 2**24); i += 1",
        failed,
    ),
    "many_small_files": ("import os\nfor i in range(10**6): open(f'f{i}', 'w').close()", lambda r: None),
    "chmod_workdir_away": (
        "import os; open('f', 'w').write('x'); os.mkdir('d'); os.chmod('d', 0); os.chmod('.', 0)",
        lambda r: None,
    ),
    "symlink_to_host": (
        "import os; os.symlink('/etc/shadow', 'shadow'); print(open('shadow').read())",
        failed,
    ),
    "network_connect": ("import socket; socket.create_connection(('1.1.1.1', 53), timeout=1)", failed),
    "network_dns": ("import socket; socket.getaddrinfo('example.com', 80)", failed),
    "mount_syscall": (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.mount(b'tmpfs', b'/mnt', b'tmpfs', 0, None))",
        lambda r: r.stdout.startswith("-1"),
    ),
    "user_namespace": (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\nprint(libc.unshare(0x10000000))",
        lambda r: r.stdout.startswith("-1"),
    ),
    "unshare_command": (
        "import subprocess; print(subprocess.run(['unshare', '-r', 'id', '-u']).returncode)",
        lambda r: r.stdout.strip() != "0",
    ),
    "io_uring": (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.syscall(425, 8, ctypes.create_string_buffer(120)))",
        lambda r: r.stdout.startswith("-1"),
    ),
    "raise_rlimits": ("import resource; resource.setrlimit(resource.RLIMIT_AS, (-1, -1))", failed),
    "sethostname": ("import socket; socket.sethostname('pwned')", failed),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_code(sb, bystander, unharmed, name):
    code, check = CASES[name]
    stdin = str(bystander.pid) if name == "kill_bystander" else ""
    r = sb.run(code, stdin=stdin)
    assert r.duration_s < sb.config.timeout_s + 1.5, r
    assert check(r) is not False, r


def test_daemon_output_does_not_leak_into_the_next_run(sb, unharmed):
    sb.run(CASES["daemon_writes_later"][0])
    time.sleep(0.5)
    assert "GHOST" not in sb.run("import time; time.sleep(0.1); print('clean')").stdout


def test_concurrent_hostile_runs_do_not_disturb_a_good_one(sb, unharmed):
    bad = [sb.submit(CASES[n][0]) for n in ("fork_bomb", "memory_bomb_incremental", "gigabytes_of_output")]
    good = sb.run("import time; time.sleep(0.2); print(sum(range(10)))", timeout_s=5)
    assert good.stdout == "45\n" and good.error is None
    for f in bad:
        f.result()


def test_session_survives_hostile_cells(sb, unharmed):
    with sb.session() as s:
        s.run("state = 'kept'")
        for name in ("fork_bomb", "memory_bomb", "ctypes_segfault", "kill_self", "infinite_loop"):
            r = s.run(CASES[name][0])
            assert r.error, (name, r)
            assert s.run("print(state)").stdout == "kept\n", name


def test_session_cell_kills_its_holder(sb, unharmed):
    with sb.session() as s:
        s.run("x = 1")
        r = s.run("import os, signal; os.kill(os.getppid(), signal.SIGKILL); print('after')")
        assert r.stdout == "after\n"  # the cell took over from the holder it killed
        assert s.run("print(x)").stdout == "1\n"


def test_session_garbage_on_control_socket(sb, unharmed):
    with sb.session() as s:
        s.run("import os; os.write(3, b'\\xff' * 64)")
        r = s.run("print('next')")
        assert r.stdout == "next\n" or r.error  # a broken session says so, and then starts afresh
        assert s.run("print('again')").stdout == "again\n"


def test_session_daemons_die_with_the_session(sb, unharmed):
    zygote = sb._state.zygote
    before = STEADY
    s = sb.session()
    s.run("import subprocess; p = subprocess.Popen(['sleep', '100'])")
    s.run("import os\nif os.fork() == 0:\n    os.setsid(); import time; time.sleep(100)")
    assert len(_descendants(zygote.proc.pid)) > before
    s.close()
    assert len(_wait_for_at_most(zygote.proc.pid, before)) <= before


def test_nothing_is_left_on_the_host_after_close(tmp_path):
    code = (
        "import subprocess; subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "import os\nif os.fork() == 0:\n    os.setsid(); import time; time.sleep(300)"
    )
    sandbox = Sandbox(SandboxConfig(timeout_s=1)).start()
    root = sandbox._state.zygote.proc.pid
    sandbox.run(code)
    s = sandbox.session()
    s.run(code)
    tree = _descendants(root) | {root}
    sandbox.close()
    time.sleep(0.3)
    alive = [
        p for p in tree if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
    ]
    assert alive == []


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
