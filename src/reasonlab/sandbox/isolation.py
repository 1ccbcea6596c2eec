"""How the zygote is started, and what that enforces on this machine.

Three ways, strongest first:

- `bwrap` (bubblewrap, a well-kept setuid-free sandbox tool): new pid, net, ipc, uts and mount
  namespaces; the whole file system read-only; fresh /dev, /proc, and size-limited tmpfs on /tmp
  and /dev/shm; home directories hidden (except the paths Python itself needs, read-only).
- `namespaces`: util-linux `unshare` gives the same namespaces and the zygote does the mounts
  itself (root, or root inside a user namespace). For machines without bubblewrap.
- `none`: a plain subprocess. Only the per-execution limits, the private working directory,
  the cleared environment and the process-group kill remain; logged loudly.

In every mode each worker and session runs as its own unprivileged uid when the zygote may
switch uids (it is root outside a user namespace), or else without any capability; and under
no_new_privs and a seccomp filter (see _child.py and _seccomp.py).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from .config import SandboxConfig

HERE = os.path.dirname(os.path.abspath(__file__))
ZYGOTE = os.path.join(HERE, "_zygote.py")
UID_BASE = 1_900_000_000  # far above any real account; worker or session k runs as UID_BASE + k


@dataclass
class Launch:
    mode: str
    prefix: list[str]  # command that wraps `python _zygote.py`
    workbase: str  # where working directories are made (inside the sandbox's view)
    mounts: dict | None = None  # for `namespaces`: what the zygote mounts itself
    hidden: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    host_tmp: str | None = None  # for `none`: a host directory to remove on close


def _real(path: str) -> str:
    return os.path.realpath(path)


def hidden_dirs() -> list[str]:
    """Directories whose contents the code must not see: every home directory."""
    candidates = ["/root", "/home", "/run/user", os.path.expanduser("~")]
    out = []
    for path in map(_real, candidates):
        if os.path.isdir(path) and path != "/" and not path.startswith(("/tmp", "/proc", "/dev")):
            if not any(path == h or path.startswith(h + "/") for h in out):
                out = [h for h in out if not h.startswith(path + "/")] + [path]
    return out


def needed_paths(python: str) -> list[str]:
    """What the interpreter needs to see: its prefixes, sys.path and this package's directory."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(_real(python)), HERE]
    paths += [p for p in sys.path if p and os.path.isdir(p)]
    return sorted({_real(p) for p in paths if os.path.exists(p)})


SCRATCH = ["/tmp", "/dev/shm"]  # replaced by fresh tmpfs in the sandbox


def keep_paths(shadowed: list[str], needed: list[str]) -> list[str]:
    """The needed paths inside a directory that the sandbox covers up (a home, /tmp), without
    nested duplicates: they are bound back read-only (a virtualenv under /tmp keeps working)."""
    under = [p for p in needed if any(p.startswith(h + "/") for h in shadowed)]
    return [p for p in under if not any(p != q and p.startswith(q + "/") for q in under)]


def _bwrap_prefix(cfg: SandboxConfig, hidden: list[str], keep: list[str]) -> list[str]:
    size = str(cfg.disk_mb * 2**20)
    argv = [
        "bwrap",
        "--die-with-parent",
        "--as-pid-1",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    if not cfg.network:
        argv.append("--unshare-net")
    if os.geteuid() != 0:
        argv.append("--unshare-user")
    argv += [
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--perms",
        "0711",
        "--size",
        size,
        "--tmpfs",
        "/tmp",
        "--perms",
        "1777",
        "--size",
        size,
        "--tmpfs",
        "/dev/shm",
    ]
    for path in hidden:
        argv += ["--tmpfs", path]
    shadowed = hidden + SCRATCH
    for path in keep:  # bwrap would create the missing parents as 0700: unreadable to the workers
        parents = [os.path.dirname(path)]
        while parents[-1] not in shadowed and parents[-1] != "/":
            parents.append(os.path.dirname(parents[-1]))
        for parent in reversed(parents[:-1]):
            argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", path, path]
    return argv + ["--chdir", "/"]


def _unshare_prefix(cfg: SandboxConfig) -> list[str]:
    argv = ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc", "--ipc", "--uts"]
    if not cfg.network:
        argv.append("--net")
    if os.geteuid() != 0:
        argv.append("--map-root-user")
    return argv + ["--"]


def build(mode: str, cfg: SandboxConfig) -> Launch:
    python = cfg.python or sys.executable
    hidden = hidden_dirs()
    keep = keep_paths(hidden + SCRATCH, needed_paths(python))
    if mode == "bwrap":
        return Launch(mode, _bwrap_prefix(cfg, hidden, keep), "/tmp", hidden=hidden, keep=keep)
    if mode == "namespaces":
        mounts = {"workbase": "/tmp", "tmp_mb": cfg.disk_mb, "hide": hidden, "keep": keep}
        return Launch(mode, _unshare_prefix(cfg), "/tmp", mounts=mounts, hidden=hidden, keep=keep)
    tmp = tempfile.mkdtemp(prefix="reasonlab-sandbox-")
    return Launch("none", [], tmp, host_tmp=tmp)


@functools.lru_cache(maxsize=None)
def probe(mode: str, network: bool) -> str | None:
    """None if `mode` works here, else why not. Runs `true` the way the zygote would be run."""
    if mode == "none":
        return None
    tool = "bwrap" if mode == "bwrap" else "unshare"
    if shutil.which(tool) is None:
        return f"{tool} is not installed"
    cfg = SandboxConfig(network=network)
    prefix = _bwrap_prefix(cfg, [], []) if mode == "bwrap" else _unshare_prefix(cfg)
    try:
        proc = subprocess.run(prefix + ["true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{tool} failed: {e}"
    return None if proc.returncode == 0 else f"{tool} failed: {proc.stderr.strip()[:200]}"


def candidates(requested: str, network: bool) -> tuple[list[str], list[str]]:
    """The modes to try, strongest first, and why stronger ones were skipped (for `auto`)."""
    if requested != "auto":
        problem = probe(requested, network)
        if problem:
            raise RuntimeError(f"isolation={requested!r} is not available here: {problem}")
        return [requested], []
    modes, skipped = [], []
    for mode in ("bwrap", "namespaces", "none"):
        problem = probe(mode, network)
        if problem is None:
            modes.append(mode)
        else:
            skipped.append(f"{mode}: {problem}")
    return modes, skipped


def report(launch: Launch, cfg: SandboxConfig, facts: dict, skipped: list[str]) -> dict:
    """What is actually enforced, from what the zygote observed from the inside."""
    uid_base = facts.get("worker_uid_base")
    net_isolated = set(facts.get("interfaces", [])) <= {"lo"}
    hidden = facts.get("hidden", {})
    out = {
        "mode": launch.mode,
        "network_isolated": net_isolated,
        "pid_namespace": facts.get("pid") == 1,
        "filesystem_readonly": bool(facts.get("root_readonly")),
        "home_hidden": bool(hidden) and all(hidden.values()),
        "private_tmp_mb": facts.get("workbase_mb") if launch.mode != "none" else None,
        "uid_isolation": uid_base is not None,
        "seccomp": bool(facts.get("seccomp")),
        "env_cleared": True,
        "limits": {
            "timeout_s": cfg.timeout_s,
            "cpu_s": cfg.cpu_s or cfg.timeout_s,
            "memory_mb": cfg.memory_mb,
            "max_procs": cfg.max_procs,
            "max_file_mb": cfg.max_file_mb,
            "max_output_bytes": cfg.max_output_bytes,
        },
        "preloaded": facts.get("preloaded", []),
        "preload_failed": facts.get("preload_failed", {}),
        "skipped_modes": skipped,
        "details": facts,
    }
    warnings = []
    if not net_isolated and not cfg.network:
        warnings.append("network is NOT isolated: the code can reach the network")
    if not out["pid_namespace"]:
        warnings.append(
            "no private pid namespace: the code can see host processes and signal those of its uid"
        )
    if not out["filesystem_readonly"]:
        warnings.append("file system is NOT read-only: the code can write wherever its uid may")
    if not out["home_hidden"]:
        warnings.append("home directories are NOT hidden from the code")
    if not out["uid_isolation"]:
        warnings.append(
            "no per-execution uid: the code runs as the zygote's user, so it can signal "
            "other executions and max_procs counts all of that user's processes"
        )
    if not out["seccomp"]:
        warnings.append(
            "no seccomp filter: the code may create user namespaces, use io_uring, bpf, ... "
            "(more kernel attack surface)"
        )
    if out["private_tmp_mb"] is None:
        warnings.append("scratch space is not size-limited (only each file, by max_file_mb)")
    for name, why in out["preload_failed"].items():
        warnings.append(f"preload of {name!r} failed: {why}")
    out["warnings"] = warnings
    return out
