"""How the zygote is started, and what that enforces on this machine.

Three ways, strongest first:

- `bwrap` (bubblewrap, a well-kept setuid-free sandbox tool): new pid, net, ipc, uts and mount
  namespaces; an empty read-only root into which only what the interpreter needs is bound
  (read-only: system directories, a few /etc files, the interpreter's prefixes, the preloaded
  modules, this package's directory; see needed_paths); fresh /dev, /proc and tmpfs on /tmp and
  /dev/shm. Never the caller's directory, working directory or the rest of its sys.path.
- `namespaces`: util-linux `unshare` gives the same namespaces and the zygote builds the same
  root itself (tmpfs, binds, pivot_root; root, or root inside a user namespace). For machines
  without bubblewrap.
- `none`: a plain subprocess. Only the per-execution limits, the private working directory,
  the cleared environment and the process-group kill remain; logged loudly.

In every mode each worker and session runs as its own unprivileged uid when the zygote may
switch uids (it is root outside a user namespace), or else without any capability; and under
no_new_privs and a seccomp filter (see _child.py and _seccomp.py).
"""

from __future__ import annotations

import functools
import glob
import json
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


# The sandbox's file system is built from nothing: a read-only empty root into which only these
# are bound, read-only. Everything else of the host (homes, /work, /run, /var, /srv, /opt, the
# caller's directory and working directory, ...) does not exist inside.
SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
ETC_ENTRIES = [  # what the dynamic loader, libc (users, time zone, name service) and TLS read
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd", "group",
    "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "gai.conf", "protocols", "services",
    "ssl", "ca-certificates", "ca-certificates.conf", "pki", "alternatives", "mime.types",
    "os-release", "locale.alias", "locale.gen", "default/locale",
]  # fmt: skip
EXTRA_PATHS = ["/sys/devices/system/cpu"]  # CPU counts (os.cpu_count, OpenBLAS)
# Host directories whose contents the code must never see; the zygote checks each from inside.
HOST_DIRS = ["/root", "/home", "/run", "/var", "/srv", "/opt", "/mnt", "/media", "/work", "/tmp"]

_INTERPRETER_FACTS = r"""
import importlib.util, json, os, sys
found = {}
for name in json.loads(sys.argv[1]):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    if spec is None:
        continue
    if spec.submodule_search_locations:
        found[name] = list(spec.submodule_search_locations)
    elif spec.has_location and spec.origin:
        found[name] = [spec.origin]
print(json.dumps({"prefixes": [sys.prefix, sys.base_prefix, sys.exec_prefix],
                  "executable": os.path.realpath(sys.executable), "modules": found}))
"""


@functools.lru_cache(maxsize=None)
def interpreter_paths(python: str, preload: tuple[str, ...]) -> tuple[str, ...]:
    """What the interpreter itself needs: its prefixes (stdlib, site-packages), its binary's
    directory, and the location of each preloaded top-level module that lives elsewhere (an
    editable install, say). Asked of the interpreter in isolated mode (`-I`), so neither the
    caller's directory, nor its working directory, nor PYTHONPATH are on that path."""
    tops = sorted({name.split(".")[0] for name in preload})
    proc = subprocess.run(
        [python, "-I", "-c", _INTERPRETER_FACTS, json.dumps(tops)],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"cannot ask {python} for its paths: {proc.stderr.strip()[-500:]}")
    info = json.loads(proc.stdout)
    paths = [*info["prefixes"], os.path.dirname(info["executable"])]
    for locations in info["modules"].values():
        paths += locations
    return tuple(paths)


def needed_paths(python: str, preload: list[str]) -> list[str]:
    """Every host path bound into the sandbox (read-only): system directories, a few files of
    /etc, the interpreter's own paths and this package's directory (for the zygote's code).
    Nested duplicates are dropped; paths that do not exist here are skipped."""
    paths = [p for p in SYSTEM_DIRS if os.path.lexists(p)]
    paths += [p for p in (os.path.join("/etc", e) for e in ETC_ENTRIES) if os.path.lexists(p)]
    paths += sorted(glob.glob("/etc/python3*"))  # Debian's sitecustomize lives there
    paths += [p for p in EXTRA_PATHS if os.path.exists(p)]
    paths += [_real(p) for p in (*interpreter_paths(python, tuple(preload)), HERE) if os.path.exists(p)]
    out: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(path == q or path.startswith(q.rstrip("/") + "/") for q in out):
            out.append(path)
    return sorted(out)


def hidden_dirs() -> list[str]:
    """Host directories the zygote checks are empty (but for bound paths) from inside."""
    candidates = HOST_DIRS + [os.path.expanduser("~"), os.getcwd()]
    if sys.argv and sys.argv[0] and os.path.exists(sys.argv[0]):
        candidates.append(os.path.dirname(os.path.abspath(sys.argv[0])))
    out = []
    for path in map(_real, candidates):
        if os.path.isdir(path) and path != "/" and path not in out:
            out.append(path)
    return out


def _bwrap_prefix(cfg: SandboxConfig, binds: list[str]) -> list[str]:
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
    # bwrap starts from an empty tmpfs root; missing parents would be made 0700 (unreadable to
    # the workers), so they are made 0755 first.
    made = {"/"}
    for path in binds:
        parents = []
        parent = os.path.dirname(path)
        while parent not in made:
            parents.append(parent)
            parent = os.path.dirname(parent)
        for parent in reversed(parents):
            argv += ["--perms", "0755", "--dir", parent]
            made.add(parent)
        if os.path.islink(path):  # /bin -> usr/bin on merged-/usr systems: keep the link
            argv += ["--symlink", os.readlink(path), path]
        else:
            argv += ["--ro-bind", path, path]
        made.add(path)
    argv += ["--dev", "/dev", "--proc", "/proc"]
    argv += ["--perms", "0711", "--size", size, "--tmpfs", "/tmp"]
    argv += ["--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]
    return argv + ["--remount-ro", "/", "--chdir", "/"]


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
    if mode == "none":
        tmp = tempfile.mkdtemp(prefix="reasonlab-sandbox-")
        return Launch("none", [], tmp, host_tmp=tmp)
    binds = needed_paths(python, cfg.preload)
    hidden = [h for h in hidden if not any(h == b or h.startswith(b + "/") for b in binds)]  # e.g. pytest's
    if mode == "bwrap":
        return Launch(mode, _bwrap_prefix(cfg, binds), "/tmp", hidden=hidden, keep=binds)
    mounts = {"workbase": "/tmp", "tmp_mb": cfg.disk_mb, "binds": binds}
    return Launch(mode, _unshare_prefix(cfg), "/tmp", mounts=mounts, hidden=hidden, keep=binds)


@functools.lru_cache(maxsize=None)
def probe(mode: str, network: bool) -> str | None:
    """None if `mode` works here, else why not. Runs `true` the way the zygote would be run."""
    if mode == "none":
        return None
    tool = "bwrap" if mode == "bwrap" else "unshare"
    if shutil.which(tool) is None:
        return f"{tool} is not installed"
    cfg = SandboxConfig(network=network)
    system = [p for p in SYSTEM_DIRS if os.path.lexists(p)]
    prefix = _bwrap_prefix(cfg, system) if mode == "bwrap" else _unshare_prefix(cfg)
    argv = prefix + [shutil.which("true") or "/bin/true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
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
        "host_dirs_hidden": hidden,
        "visible_host_paths": launch.keep if launch.mode != "none" else ["/"],
        "private_tmp_mb": cfg.disk_mb if facts.get("private_scratch") else None,
        "private_scratch_per_execution": bool(facts.get("private_scratch")),
        "ipc_refused": bool(facts.get("seccomp")),
        "hard_cpu_limit": True,
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
        shown = sorted(path for path, ok in hidden.items() if not ok) or ["(not checked)"]
        warnings.append(f"host directories are NOT hidden from the code: {', '.join(shown)}")
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
    if not out["private_scratch_per_execution"]:
        warnings.append(
            "no private /tmp and /dev/shm per execution: files left there by one execution are seen "
            "by later ones" + (" (and scratch space is not size-limited)" if launch.mode == "none" else "")
        )
    for name, why in out["preload_failed"].items():
        warnings.append(f"preload of {name!r} failed: {why}")
    out["warnings"] = warnings
    return out
