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
    """Yield, then check the host and the sandbox (both warm interpreters) after the case."""
    sb.run("pass")  # the light interpreter is up
    sb.run("import numpy")  # and the main one
    zygotes = [sb._state.zygote, sb._light_state.zygote]
    baseline = STEADY
    yield
    folder, home_file = canary
    assert bystander.poll() is None, "a host process was killed"
    assert os.listdir(folder) == ["canary.txt"] and open(os.path.join(folder, "canary.txt")).read() == SECRET
    assert open(home_file).read() == SECRET
    assert [sb._state.zygote, sb._light_state.zygote] == zygotes, "a zygote was restarted"
    for zygote in zygotes:
        assert zygote.alive, "a zygote died"
        left = _wait_for_at_most(zygote.proc.pid, baseline)
        assert len(left) <= baseline, f"processes of the code outlived the call: {_describe(left)}"
    r = sb.run("print('still alive')")
    assert r.stdout == "still alive\n" and r.error is None, r
    r = sb.run("import numpy; print('still alive')")
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
    sandbox.run(code)  # in the light interpreter
    sandbox.run("import numpy\n" + code)  # in the main one
    s = sandbox.session()
    s.run(code)
    roots = [sandbox._state.zygote.proc.pid, sandbox._light_state.zygote.proc.pid]
    tree = set(roots).union(*(_descendants(root) for root in roots))
    sandbox.close()
    time.sleep(0.3)
    alive = [
        p for p in tree if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
    ]
    assert alive == []


# ---- the classes of issue 14: each attack written from its description ----------------------


def _fresh_marker() -> str:
    """MARK + 16 hex digits: the memory scan below finds any such string, never its own pattern."""
    return "RLMK" + os.urandom(8).hex()


SCAN_OWN_MEMORY = r"""
import re
pattern = re.compile(rb"RLMK[0-9a-f]{16}")
found = set()
mem = open("/proc/self/mem", "rb", buffering=0)
for line in open("/proc/self/maps").read().splitlines():
    fields = line.split()
    if not fields[1].startswith("rw"):
        continue
    lo, hi = (int(x, 16) for x in fields[0].split("-"))
    pos = lo
    while pos < hi:
        size = min(1 << 20, hi - pos)
        try:
            mem.seek(pos)
            found.update(pattern.findall(mem.read(size)))
        except (OSError, ValueError, OverflowError):
            break
        pos += size - 32 if size == 1 << 20 else size
print(sorted(m.decode() for m in found))
"""


def _markers_in(r) -> set[str]:
    assert r.error is None and r.stdout.startswith("["), r
    return set(eval(r.stdout))  # a list of str printed by SCAN_OWN_MEMORY


def test_class1_caller_directory_cwd_and_sys_path_are_not_visible(tmp_path, monkeypatch, unharmed):
    """The program embedding the sandbox keeps a .env beside it, runs from that directory and
    has it on sys.path (as `python -m` or a script would): none of it may be visible inside."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text(f"API_KEY={SECRET}\n")
    (project / "data.csv").write_text(SECRET)
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    attack = (  # read every file in those directories, on sys.path outside the prefix, and in /work
        "import os, sys\n"
        "paths = [p for p in sys.stdin.read().split('\\n') if p]\n"
        "dirs = paths + [p for p in sys.path if not p.startswith(sys.base_prefix)] + ['/work', '/home']\n"
        "for top in dirs:\n"
        "    for d, _, files in os.walk(top):\n"
        "        for f in files:\n"
        "            try: print(open(os.path.join(d, f)).read()[:200])\n"
        "            except Exception: pass\n"
        "print('visible:', [p for p in paths if os.path.exists(p)])"
    )
    with Sandbox(SandboxConfig(timeout_s=30)) as sandbox:
        report = sandbox.isolation_report()
        if report["mode"] == "none":
            pytest.skip("isolation='none' shows the whole file system")
        for code in (attack, "import numpy\n" + attack):  # the light interpreter and the main one
            r = sandbox.run(code, stdin=f"{project}\n{project / '.env'}\n")
            assert SECRET not in r.stdout + r.stderr and "visible: []" in r.stdout, r
        assert report["host_dirs_hidden"][str(project)] is True
        assert all(not p.startswith(str(tmp_path)) for p in report["visible_host_paths"])
        assert not any(p.endswith("/src") for p in report["visible_host_paths"]), report["visible_host_paths"]


def test_class2_host_unix_sockets_cannot_be_reached(sb, tmp_path, unharmed):
    """Listening unix sockets where real services keep theirs (/run, /var/tmp), beside the
    caller, and in the abstract namespace: sandboxed code finds and connects to none of them."""
    import socket

    name = f"reasonlab-test-{os.getpid()}.sock"
    paths = [os.path.join(d, name) for d in ("/run", "/var/tmp") if os.access(d, os.W_OK)]
    paths.append(str(tmp_path / name))
    listeners = []
    for path in paths:
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        os.chmod(path, 0o777)  # the worst case: a world-writable socket (D-Bus's is)
        server.listen(8)
        server.setblocking(False)
        listeners.append(server)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + name)
    abstract.listen(8)
    abstract.setblocking(False)
    listeners.append(abstract)
    attack = (
        "import os, socket, stat, sys\n"
        "targets = sys.stdin.read().split('\\n')\n"
        "for top in ('/', ):\n"
        "    for d, dirs, files in os.walk(top):\n"
        "        dirs[:] = [x for x in dirs if os.path.join(d, x) not in ('/proc', '/sys', '/usr')]\n"
        "        for f in files:\n"
        "            p = os.path.join(d, f)\n"
        "            try:\n"
        "                if stat.S_ISSOCK(os.lstat(p).st_mode): targets.append(p)\n"
        "            except OSError: pass\n"
        "for t in targets:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try: s.connect(t); print('CONNECTED', repr(t))\n"
        "    except OSError: pass\n"
        "print('tried', len(targets))"
    )
    try:
        stdin = "\n".join(paths + ["\0" + name])
        for code in (attack, "import numpy\n" + attack):
            r = sb.run(code, stdin=stdin, timeout_s=20)
            assert "CONNECTED" not in r.stdout and r.stdout.startswith("tried"), r
        for server in listeners:
            with pytest.raises(BlockingIOError):
                server.accept()
    finally:
        for server in listeners:
            server.close()
        for path in paths:
            os.remove(path)


IPC = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
key = int(sys.stdin.read())
calls = {
    "shmget_1GiB": lambda: libc.syscall(29, 0, 1 << 30, 0o1600),      # IPC_PRIVATE, IPC_CREAT|0600
    "shmget_key": lambda: libc.syscall(29, key, 4096, 0o1666),
    "semget": lambda: libc.syscall(64, key, 4, 0o1666),
    "msgget": lambda: libc.syscall(68, key, 0o1666),
    "mq_open": lambda: libc.syscall(240, b"/reasonlab-mq", 0o100 | 2, 0o666, None),
}
for name, call in calls.items():
    print(name, call(), ctypes.get_errno())
from multiprocessing import shared_memory, Lock   # POSIX shm and semaphores still work
m = shared_memory.SharedMemory(create=True, size=1 << 20); m.buf[0] = 7; m.close(); m.unlink()
with Lock(): print("posix ok")
"""


def test_class3_sysv_and_posix_ipc_are_refused(sb, unharmed):
    """SysV shared memory, semaphores, message queues and POSIX message queues live outside
    every rlimit and outlive the execution: each call is refused (EPERM), in every process."""
    key = str(0x5EC0000 + os.getpid() % 65536)
    for code in (IPC, "import numpy\n" + IPC):
        r = sb.run(code, stdin=key, timeout_s=10)
        lines = dict(line.rsplit(" ", 2)[0:1] + [line.split()[1:]] for line in r.stdout.splitlines()[:5])
        assert set(lines) == {"shmget_1GiB", "shmget_key", "semget", "msgget", "mq_open"}, r
        assert all(v == ["-1", "1"] for v in lines.values()), r  # -1, errno EPERM
        assert "posix ok" in r.stdout, r
    with sb.session() as s:
        r = s.run(IPC, stdin=key, timeout_s=10)
        assert r.stdout.count(" -1 1\n") == 5 and "posix ok" in r.stdout, r
    assert sb.isolation_report()["ipc_refused"]


def test_class4_dev_shm_and_tmp_are_private_per_execution(sb, unharmed):
    """Files left in /dev/shm or the scratch space by one execution (or by a running one, or by
    a session) are not seen by any other, and filling /dev/shm harms only the execution that did."""
    if not sb.isolation_report()["private_scratch_per_execution"]:
        pytest.skip("no private scratch per execution here (isolation report says why)")
    marker = _fresh_marker()
    leave = (
        "import os, sys, tempfile\nm = sys.stdin.read()\n"
        "for d in ('/dev/shm', tempfile.gettempdir(), os.getcwd()):\n"
        "    open(os.path.join(d, m), 'w').write(m)\n"
        "i = 0\ntry:\n    while True:\n        open(f'/dev/shm/fill{i}', 'wb').write(b'x' * 2**22); i += 1\n"
        "except OSError as e: print('full', e.errno)"
    )
    look = (
        "import os, glob, sys\nm = sys.stdin.read()\n"
        "hits = [p for p in glob.glob('/dev/shm/**', recursive=True) + glob.glob('/tmp/**', recursive=True) if m in p]\n"
        "print(sorted(os.listdir('/dev/shm')), hits)\n"
        "from multiprocessing import Lock\nwith Lock(): print('lock ok')"
    )
    for prefix in ("", "import numpy\n"):
        r = sb.run(prefix + leave, stdin=marker)
        assert r.stdout.startswith("full 28"), r  # ENOSPC, in its own /dev/shm
        r = sb.run(prefix + look, stdin=marker)
        assert r.stdout == "[] []\nlock ok\n", r
    # while one execution holds a file there, a concurrent one does not see it
    holder = sb.submit("import sys, time\nm = sys.stdin.read()\nopen('/dev/shm/' + m, 'w').write(m)\ntime.sleep(1.5)", stdin=marker, timeout_s=5)
    time.sleep(0.5)
    assert sb.run(look, stdin=marker).stdout == "[] []\nlock ok\n"
    assert holder.result().error is None
    with sb.session() as s:  # a session's files persist for its cells, and only for them
        s.run("import sys\nm = sys.stdin.read()\nopen('/dev/shm/' + m, 'w').write(m)", stdin=marker)
        assert marker in s.run("import os; print(os.listdir('/dev/shm'))").stdout
        assert sb.run(look, stdin=marker).stdout == "[] []\nlock ok\n"
        with sb.session() as other:
            assert other.run(look, stdin=marker).stdout == "[] []\nlock ok\n"


def _children(pid: int) -> list[int]:
    return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def _forker_pid(sb) -> int | None:
    """The main zygote's forker: its child with uid 0 (workers and sessions have their own uids)."""
    launcher = sb._state.zygote.proc.pid
    root = _children(launcher)[0]  # the zygote (bwrap/unshare starts only it)
    for pid in _children(root):
        try:
            status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
        except OSError:
            continue
        if int(status["PPid"]) == root and status["Uid"].split()[0] == "0":
            return pid
    return None


def test_class5_no_earlier_execution_data_in_a_new_processs_memory(sb, unharmed):
    """Earlier executions' code, stdin and output (stateless runs and another session's cells)
    must not be in the memory of a new session or worker, which scan all of their own memory."""
    if not sb.isolation_report()["uid_isolation"]:
        pytest.skip("the forker-restart part needs per-execution uids (the code cannot kill it)")

    def plant() -> set[str]:
        code_m, stdin_m, out_m, cell_m = (_fresh_marker() for _ in range(4))
        out_expr = f"'RLMK' + {out_m[4:][::-1]!r}[::-1]"  # the output marker is only ever output
        for prefix in ("", "import numpy\n"):
            r = sb.run(f"{prefix}secret = {code_m!r}\nimport sys; sys.stdin.read()\nprint({out_expr})", stdin=stdin_m)
            assert r.stdout.strip() == out_m, r
        with sb.session() as other:
            other.run(f"hidden_tests = {cell_m!r}", stdin=stdin_m)
        return {code_m, stdin_m, out_m, cell_m}

    planted = plant()
    with sb.session() as s:
        assert _markers_in(s.run(SCAN_OWN_MEMORY, timeout_s=30)) & planted == set()
    assert _markers_in(sb.run("import numpy\n" + SCAN_OWN_MEMORY, timeout_s=30)) & planted == set()
    assert _markers_in(sb.run(SCAN_OWN_MEMORY, timeout_s=30)) & planted == set()
    # The forker is replaced (as if killed by same-uid code): its successor must be clean too.
    forker = _forker_pid(sb)
    assert forker is not None, _describe(_descendants(sb._state.zygote.proc.pid))
    os.kill(forker, 9)
    deadline = time.monotonic() + 30
    while _forker_pid(sb) in (None, forker) and time.monotonic() < deadline:
        time.sleep(0.1)  # the zygote notices, and execs a fresh forker (an interpreter start)
    sb.run("import numpy")
    planted |= plant()
    with sb.session() as s:
        assert _markers_in(s.run(SCAN_OWN_MEMORY, timeout_s=30)) & planted == set()
    assert _markers_in(sb.run("import numpy\n" + SCAN_OWN_MEMORY, timeout_s=30)) & planted == set()
    assert _forker_pid(sb) not in (None, forker)


IGNORE_XCPU_AND_SPIN = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"


def test_class6_cpu_limit_is_hard(unharmed):
    """Code that ignores SIGXCPU is killed by the hard RLIMIT_CPU (soft + 1 s), long before the
    wall clock; in a session the cell is rolled back and the session goes on."""
    with Sandbox(SandboxConfig(timeout_s=30, cpu_s=1)) as sandbox:
        for code in (IGNORE_XCPU_AND_SPIN, "import numpy\n" + IGNORE_XCPU_AND_SPIN):
            r = sandbox.run(code)
            assert r.error == "cpu time limit" and not r.timed_out and r.exit_code == -9, r
        with sandbox.session() as s:
            s.run("kept = 1")
            r = s.run(IGNORE_XCPU_AND_SPIN)
            assert r.error == "cpu time limit" and not r.timed_out, r
            assert s.run("print(kept)").stdout == "1\n"


FRAME = "import json, os, struct\ndef frame(obj):\n    b = json.dumps(obj).encode()\n    return struct.pack('!I', len(b)) + b\n"


@pytest.mark.parametrize(
    "name,code",
    [
        ("forged_result_then_spin", FRAME + "os.write(3, frame({'exc': None, 'exit': 0}))\nwhile True: pass"),
        ("forged_wrong_types", FRAME + "os.write(3, frame({'exc': 5, 'exit': 'x'}))\nwhile True: pass"),
        ("one_gib_header", "import os, struct\nos.write(3, struct.pack('!I', 1 << 30))\nwhile True: os.write(3, b'x' * 65536)"),
        ("unfinished_frame_flood", "import os, struct\nos.write(3, struct.pack('!I', 60000))\nwhile True: os.write(3, b'{')"),
    ],
)
def test_class7_worker_status_channel_is_bounded_and_checked(sb, unharmed, name, code):
    """Code writing on its worker's status pipe can end its own run early, never hang it, keep
    running after it, or make the zygote buffer or parse more than 64 KiB."""
    bystander = sb.submit("import time; time.sleep(0.2); print('fine')", timeout_s=5)
    r = sb.run(code, timeout_s=5)
    assert not r.timed_out and r.duration_s < 2.5, r  # ended by the record, not by the clock
    if name == "forged_result_then_spin":
        assert r.exit_code == 0 and r.error is None, r  # it may lie about itself, and is killed
    else:
        assert "status channel" in r.error and r.exit_code == -9, r
    assert bystander.result().stdout == "fine\n"
    good = sb.run("print('next')")
    assert good.stdout == "next\n" and good.duration_s < 1, good


@pytest.mark.parametrize(
    "name,code",
    [
        ("forged_done_then_spin", FRAME + "os.write(3, frame({'op': 'done', 'pid': os.getpid(), 'exit': 0, 'exc': None}))\nwhile True: pass"),
        ("forged_ended_bad_status", FRAME + "os.write(3, frame({'op': 'ended', 'status': -1, 'cpu': 0}))\nimport time; time.sleep(5)"),
        ("forged_started_pid_1", FRAME + "os.write(3, frame({'op': 'started', 'pid': 1}))\nimport time; time.sleep(5)"),
        ("wrong_types", FRAME + "os.write(3, frame({'op': 'done', 'pid': 'me', 'exit': [], 'exc': {}}))\nimport time; time.sleep(5)"),
        ("one_gib_header", "import os, struct\nos.write(3, struct.pack('!I', 1 << 30))\nwhile True: os.write(3, b'x' * 65536)"),
        ("kill_holder_forge_done_spin", FRAME + "import signal\nos.kill(os.getppid(), 9)\nimport time; time.sleep(0.2)\n"
         "os.write(3, frame({'op': 'done', 'pid': os.getpid(), 'exit': 0, 'exc': None}))\n"
         "signal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"),
    ],
)  # fmt: skip
def test_class7_session_control_channel_is_bounded_and_checked(sb, unharmed, name, code):
    """Forged or malformed messages on a session's control socket never hang Session.run, never
    let the cell run on unbounded, and the session carries on (reset, or rolled back)."""
    with sb.session() as s:
        s.run("kept = 1")
        t = time.monotonic()
        r = s.run(code, timeout_s=3)
        assert time.monotonic() - t < 3 + 2, r
        if name == "kill_holder_forge_done_spin":  # indistinguishable from a real hand-over...
            assert r.ok, r  # ...so it is believed; the spinning process is bounded by its CPU limit
        else:
            assert "control channel" in (r.error or ""), r
        for _ in range(3):  # a cell that still runs after a forged "done" is stopped by its CPU limit
            after = s.run("print('next')", timeout_s=3)
            if after.stdout == "next\n":
                break
        assert after.stdout == "next\n", after


def test_class8_cli_escapes_control_characters_on_a_terminal(tmp_path):
    """Output that would set the clipboard (OSC 52), recolour, or rewrite a line reaches a
    terminal escaped; --raw, or a pipe, gets the bytes as they are."""
    import pty

    evil = "print('\\x1b]52;c;cHduZWQ=\\x07\\x1b[2K\\rexit 0 \\u202e ok \\x9b31m')"
    prog = tmp_path / "evil.py"
    prog.write_text(evil + "\nimport sys; print('\\x1b[31mred', file=sys.stderr)\n")
    cli = [sys.executable, "-c", "from reasonlab.sandbox.cli import app; app()", "run", str(prog), "--isolation", "auto"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

    def on_terminal(extra):
        leader, follower = pty.openpty()
        proc = subprocess.Popen(cli + extra, stdout=follower, stderr=follower, env=env)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
        proc.wait(timeout=60)
        os.close(leader)
        return out.decode("utf-8", "replace")

    shown = on_terminal([])
    program_part = shown.split("exit 0 ·")[0]
    assert "\x1b]52" not in program_part and "\x9b" not in program_part and "\u202e" not in program_part, shown
    assert "\\x1b]52;c;cHduZWQ=\\x07" in shown and "\\u202e" in shown and "\\x9b31m" in shown and "\\r" in shown
    assert "\\x1b[31mred" in shown
    assert "\x1b]52;c;cHduZWQ=\x07" in on_terminal(["--raw"])
    piped = subprocess.run(cli, capture_output=True, env=env, timeout=60)
    assert b"\x1b]52;c;cHduZWQ=\x07" in piped.stdout  # not a terminal: the program's bytes


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
