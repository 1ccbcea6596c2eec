"""Sandbox throughput and latency against starting `python -c` per call, in one run.

    PYTHONPATH=src python benchmarks/sandbox.py --n 500

For a trivial snippet and a numpy snippet it measures the Sandbox one call at a time (latency
p50/p99, executions/s) and with pool_size calls in flight, against `python -c` per call (one at
a time and pool_size at a time) and `python -c` inside bubblewrap per call (the same isolation,
paid per call) when bwrap is installed. The trivial snippet runs in the light interpreter (it
imports nothing heavy); it is also measured with `light_interpreter=False`, i.e. forked from the
interpreter that holds numpy and sympy, as every execution was before the light one existed.

It also measures the CPU time each execution costs, every process included (host, zygote,
forker, workers; for `python -c`, the child). Wall-clock rates depend on what else the machine
runs; CPU per execution hardly does, so "x python -c (CPU)" is the speed-up the machine would
show with its cores to itself.

The runners of a snippet are measured in interleaved rounds (`--rounds`): each round runs every
runner for its share of the calls, so on a shared machine the baseline and the sandbox see the
same load rather than whatever each happened to get in its own minute. Every runner is warmed
up first (`python -c` too: the page cache). "x python -c" is the ratio of executions/s (of
mean latencies, one at a time); "(p50)" the ratio of median latencies; "(CPU)" of CPU per
execution. Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from reasonlab.sandbox import Sandbox, SandboxConfig  # noqa: E402
from reasonlab.sandbox.isolation import _bwrap_prefix, needed_paths, probe  # noqa: E402

SNIPPETS = {
    "trivial": "print(1 + 1)",
    "numpy": "import numpy as np\na = np.random.rand(8, 8) + 8 * np.eye(8)\nprint(np.linalg.det(a) > 0)",
}
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds used by root and its descendants, the reaped ones included (cutime/cstime)."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(name)] = (int(fields[1]), sum(map(int, fields[11:15])))
    total, frontier, seen = 0, {root}, set()
    while frontier:
        seen |= frontier
        total += sum(stats[p][1] for p in frontier if p in stats)
        frontier = {p for p, (ppid, _) in stats.items() if ppid in frontier} - seen
    return total / TICK


def own_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(runners: list, rounds: int) -> dict:
    """runners: (label, fn, n, width, cpu). Interleaved: each round runs every runner for its
    share of n calls, `width` at a time. Returns {label: (executions/s, sorted latencies in ms
    if width == 1, CPU ms per execution)}."""
    acc = {label: [0.0, 0, [], 0.0] for label, *_ in runners}  # seconds, calls, latencies, CPU s
    for r in range(rounds):
        for label, fn, n, width, cpu in runners:
            k = n // rounds + (r < n % rounds)
            if not k:
                continue
            a, lat = acc[label], acc[label][2]
            cpu0, start = cpu(), time.perf_counter()
            if width == 1:
                for _ in range(k):
                    t = time.perf_counter()
                    fn()
                    lat.append((time.perf_counter() - t) * 1e3)
            else:
                with ThreadPoolExecutor(width) as ex:
                    list(ex.map(lambda _: fn(), range(k)))
            a[0] += time.perf_counter() - start
            a[1] += k
            a[3] += cpu() - cpu0
    return {label: (n / t, sorted(lat) or None, c / n * 1e3) for label, (t, n, lat, c) in acc.items()}


def pct(lat: list[float], q: float) -> float:
    return lat[min(len(lat) - 1, int(q * len(lat)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="sandbox executions per measurement")
    ap.add_argument("--n-baseline", type=int, default=30, help="python -c runs per measurement (slow)")
    ap.add_argument("--pool-size", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per snippet")
    ap.add_argument("--isolation", default="auto")
    ap.add_argument("--preload", default=None, help="comma-separated modules (default: SandboxConfig's)")
    args = ap.parse_args()

    cfg = dict(timeout_s=10, pool_size=args.pool_size, isolation=args.isolation)
    if args.preload is not None:
        cfg["preload"] = [m for m in args.preload.split(",") if m]
    sb = Sandbox(SandboxConfig(**cfg)).start()
    heavy_only = Sandbox(SandboxConfig(**cfg, light_interpreter=False)).start()
    report = sb.isolation_report()
    bwrap = (
        _bwrap_prefix(SandboxConfig(), needed_paths(sys.executable, []))
        if shutil.which("bwrap") and not probe("bwrap", False)
        else None
    )

    def sandbox_cpu() -> float:  # both warm interpreters of both sandboxes (the idle ones add ~0)
        launchers = [s.zygote.proc.pid for x in (sb, heavy_only) for s in (x._state, x._light_state) if s.zygote]
        return sum(tree_cpu(p) for p in launchers) + own_cpu(resource.RUSAGE_SELF)

    def children_cpu() -> float:
        return own_cpu(resource.RUSAGE_CHILDREN)

    with open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    print(
        f"# {model}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"isolation={report['mode']}, pool_size={args.pool_size}, rounds={args.rounds}, "
        f"preload={','.join(sb.config.preload)}"
    )
    cols = f"{'exec/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7} {'x python -c':>12}"
    cols += f" {'(p50)':>7} {'(CPU)':>7}"
    header = f"{'snippet':8} {'runner':36} {cols}"
    print(header + "\n" + "-" * len(header))
    width, nb = args.pool_size, args.n_baseline
    for name, code in SNIPPETS.items():

        def in_sandbox(box=sb):
            r = box.run(code)
            assert r.ok, r

        def python_c(prefix=()):
            subprocess.run([*prefix, sys.executable, "-c", code], check=True, capture_output=True)

        for _ in range(20):
            in_sandbox()  # warm up
            in_sandbox(heavy_only)
        for _ in range(2):
            python_c()
        runners = [
            ("python -c per call", python_c, nb, 1, children_cpu),
            (f"python -c, {width} at a time", python_c, nb, width, children_cpu),
        ]
        if bwrap:
            runners.append(("bwrap + python -c per call", lambda: python_c(bwrap), nb, 1, children_cpu))
        if name == "trivial":
            heavy = lambda: in_sandbox(heavy_only)  # noqa: E731
            runners += [
                ("Sandbox.run, light off, 1 at a time", heavy, args.n, 1, sandbox_cpu),
                (f"Sandbox.run, light off, {width} at a time", heavy, args.n, width, sandbox_cpu),
            ]
        runners += [
            ("Sandbox.run one at a time", in_sandbox, args.n, 1, sandbox_cpu),
            (f"Sandbox.run, {width} at a time", in_sandbox, args.n, width, sandbox_cpu),
        ]
        rows = measure(runners, args.rounds)
        base_rate, base_lat, base_cpu = rows["python -c per call"]
        for label, (rate, lat, cpu_ms) in rows.items():
            p50, p99 = (f"{pct(lat, 0.5):7.2f}", f"{pct(lat, 0.99):7.2f}") if lat else (f"{'':7}", f"{'':7}")
            p50x = f"{pct(base_lat, 0.5) / pct(lat, 0.5):6.1f}x" if lat else f"{'':7}"
            print(
                f"{name:8} {label:36} {rate:8.1f} {p50} {p99} {cpu_ms:7.2f} {rate / base_rate:11.1f}x "
                f"{p50x} {base_cpu / cpu_ms:6.1f}x"
            )
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    sb.close()
    heavy_only.close()


if __name__ == "__main__":
    main()
