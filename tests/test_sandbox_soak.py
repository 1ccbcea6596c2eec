"""Soak: 10 000 executions of mixed (and partly hostile) code through one Sandbox, then check that
nothing leaked: processes, file descriptors (host and both zygotes), working directories. The mix
runs in both warm interpreters (the light one takes the code that imports nothing heavy)."""

from __future__ import annotations

import os
import time

import pytest

from reasonlab.sandbox import Sandbox, SandboxConfig

N = 10_000

MIX = [
    ("print(sum(range(100)))", lambda r: r.stdout == "4950\n"),
    ("import numpy as np; print(int(np.arange(10).sum()))", lambda r: r.stdout == "45\n"),
    ("open('scratch.bin', 'wb').write(b'x' * 4096); print('w')", lambda r: r.stdout == "w\n"),
    ("raise ValueError('expected')", lambda r: r.exit_code == 1 and "ValueError" in r.stderr),
    ("import sys; print(sys.stdin.read().upper())", lambda r: r.stdout == "IN\n"),
    (
        "import subprocess\nprint(subprocess.check_output(['echo', 'sub']).decode(), end='')",
        lambda r: r.stdout == "sub\n",
    ),
    (
        "import os\nif os.fork() == 0:\n    os.setsid(); import time; time.sleep(60)\nprint('daemon')",
        lambda r: r.stdout == "daemon\n",
    ),
    ("x = bytearray(10**10)", lambda r: r.error == "memory limit"),
    ("import os; os.kill(os.getpid(), 9)", lambda r: r.exit_code == -9),
    ("for i in range(3000): print(i)", lambda r: r.truncated),
]


def _tree(root: int) -> list[int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return sorted(found)


def _zygote_pid(root: int) -> int:
    """The zygote is the oldest process under the launcher (bwrap/unshare), or the launcher itself."""
    tree = _tree(root)
    return tree[0] if tree else root


def _count(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return -1


def _settle(fn, target, timeout=5.0):
    deadline = time.monotonic() + timeout
    while fn() > target and time.monotonic() < deadline:
        time.sleep(0.05)
    return fn()


@pytest.mark.slow
def test_soak_ten_thousand_executions():
    config = SandboxConfig(timeout_s=2.0, pool_size=2, memory_mb=256, max_output_bytes=4096)
    sb = Sandbox(config).start()
    sb.run("pass")  # starts the light interpreter
    sb.run("import numpy")
    host_fds = _count("/proc/self/fd")
    report = sb.isolation_report()
    launchers = [sb._state.zygote.proc.pid, sb._light_state.zygote.proc.pid]
    workbases = [sb._state.zygote.launch.workbase, sb._light_state.zygote.launch.workbase]
    zygotes = [p if report["mode"] == "none" else _zygote_pid(p) for p in launchers]
    views = [w if report["mode"] == "none" else f"/proc/{z}/root{w}" for z, w in zip(zygotes, workbases)]
    time.sleep(0.3)

    def procs() -> int:
        return sum(len(_tree(p)) for p in launchers)

    def zygote_fds() -> int:
        return sum(_count(f"/proc/{z}/fd") for z in zygotes)

    def workdirs() -> int:
        return sum(_count(v) for v in views)

    procs0, zfds0, dirs0 = procs(), zygote_fds(), workdirs()

    t0, done, failures = time.monotonic(), 0, []
    while done < N:
        batch = []
        for i in range(min(50, N - done)):
            code, check = MIX[(done + i) % len(MIX)]
            batch.append((code, check, sb.submit(code, stdin="in")))
        for code, check, future in batch:
            r = future.result()
            if not check(r):
                failures.append((code, r))
        done += len(batch)
        if done % 1000 == 0:  # sessions too: open, use, roll back, close
            with sb.session() as s:
                s.run("k = 1")
                s.run("k = 2\nwhile True: pass", timeout_s=0.2)
                assert s.run("print(k)").stdout == "1\n"
    elapsed = time.monotonic() - t0
    print(f"\n{N} executions in {elapsed:.1f} s ({N / elapsed:.0f}/s)")
    assert not failures, failures[:5]

    assert _settle(procs, procs0) <= procs0, "leaked processes"
    assert _settle(zygote_fds, zfds0) <= zfds0, "a zygote leaked fds"
    assert _settle(workdirs, dirs0) <= dirs0, "leaked working directories"
    assert _count("/proc/self/fd") <= host_fds, "the host leaked fds"
    assert [sb._state.zygote.proc.pid, sb._light_state.zygote.proc.pid] == launchers, "a zygote restarted"
    sb.close()
    for launcher in launchers:
        assert not os.path.exists(f"/proc/{launcher}") or open(f"/proc/{launcher}/stat").read().split()[2] == "Z"
