"""Start-up of the zygote: its own mounts (without bubblewrap), its uid range, what it observes.

Stdlib only, loaded by path with _zygote.py.
"""

from __future__ import annotations

import ctypes
import os
import socket

_libc = ctypes.CDLL(None, use_errno=True)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
CAP_SETUID = 7
_MADV_COLLAPSE = 25  # Linux 6.1+
_HUGE = 2 << 20
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if _libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def setup_mounts(m: dict) -> list[str]:
    """Our own file-system view when there is no bubblewrap (we are root in a new mount namespace).

    Fresh size-limited tmpfs on the work base and /dev/shm; home directories hidden under empty
    tmpfs; the paths Python needs bound back in from fds opened before they were covered up
    (mounting from /proc/self/fd/N reaches the original); then every mount remounted read-only.
    Returns the mount points that could not be made read-only.
    """
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we do leaks to the host
    kept = [(os.open(path, os.O_PATH), path) for path in m["keep"]]
    size = f"size={m['tmp_mb']}m"
    _mount("tmpfs", m["workbase"], "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=0711")
    _minimal_dev()
    _mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=1777")
    for hide in m["hide"]:
        if os.path.isdir(hide):
            _mount("tmpfs", hide, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for fd, path in kept:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        os.close(fd)
    failed = []
    writable = {m["workbase"], "/dev/shm", "/proc"}
    names = {b"nosuid": _MS_NOSUID, b"nodev": _MS_NODEV, b"noexec": _MS_NOEXEC}
    with open("/proc/self/mountinfo", "rb") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        point = fields[4].decode().replace("\\040", " ")
        if point in writable or point.startswith(("/proc/", "/dev/")):  # ours, or covered by our /dev
            continue
        flags = _MS_NOSUID | sum(
            v for k, v in names.items() if k in fields[5].split(b",")
        )  # keep locked flags
        try:
            _mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags)
        except OSError:
            failed.append(point)
    return failed


def collapse_heap() -> int:
    """Back the warm heap with 2 MiB pages; returns how many MiB now are.

    fork() copies one page-table entry per 4 KiB page, and a child's exit drops them again: with
    numpy and sympy loaded that is most of the cost of an execution. After MADV_COLLAPSE one entry
    covers 2 MiB, so forks and exits get about a third cheaper; a child that writes to a huge page
    splits it and copies only the 4 KiB it touched. We do not set MADV_HUGEPAGE: the children's
    new memory keeps using small pages (no 2 MiB zeroing on their page faults). Best effort: old
    kernels or THP disabled simply leave things as they were.
    """
    with open("/proc/self/maps") as f:
        maps = [line.split() for line in f]
    for fields in maps:
        perms, path = fields[1], fields[5] if len(fields) > 5 else ""
        if perms[:2] != "rw" or perms[3] != "p" or (path and path != "[heap]"):
            continue
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        start, end = -(-lo // _HUGE) * _HUGE, hi // _HUGE * _HUGE
        if end > start:
            _libc.madvise(start, end - start, _MADV_COLLAPSE)
    with open("/proc/self/smaps_rollup") as f:
        huge = next((line for line in f if line.startswith("AnonHugePages:")), "AnonHugePages: 0 kB")
    return int(huge.split()[1]) // 1024


def _minimal_dev() -> None:
    """A fresh /dev with only the harmless devices (as bubblewrap's --dev): no disks, no kmsg."""
    devices = [
        name
        for name in ("null", "zero", "full", "random", "urandom", "tty")
        if os.path.exists(f"/dev/{name}")
    ]
    fds = [(os.open(f"/dev/{name}", os.O_PATH), name) for name in devices]
    _mount("tmpfs", "/dev", "tmpfs", _MS_NOSUID, "size=64k,mode=0755")
    for fd, name in fds:
        open(f"/dev/{name}", "w").close()  # the mount point
        _mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, _MS_BIND)
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm")


def uid_base(base: int | None, count: int) -> int | None:
    """`base` if we may switch to uids base..base+count (CAP_SETUID, uids mapped), else None."""
    if base is None:
        return None
    with open("/proc/self/status") as f:
        caps = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    if not caps & (1 << CAP_SETUID):
        return None
    with open("/proc/self/uid_map") as f:
        ranges = [tuple(map(int, line.split())) for line in f]
    ok = any(inside <= base and base + count <= inside + n for inside, _, n in ranges)
    return base if ok else None


def seccomp_works() -> bool:
    """Does the filter install here, refuse a user namespace, and still let threads start?"""
    import _seccomp

    if not _seccomp.supported():
        return False
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            import threading

            _libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            if _seccomp.install():
                refused = _libc.unshare(0x10000000) == -1 and ctypes.get_errno() == 1  # CLONE_NEWUSER: EPERM
                thread = threading.Thread(target=lambda: None)
                thread.start()
                thread.join()
                ok = refused
        finally:
            os._exit(0 if ok else 1)
    return os.waitpid(pid, 0)[1] == 0


def facts(cfg: dict, base: int | None, ro_failed: list[str], preload_failed: dict, huge_mb: int) -> dict:
    """What this process observes about its confinement, for Sandbox.isolation_report()."""
    try:
        interfaces = sorted(name for _, name in socket.if_nameindex())
    except OSError:
        interfaces = []
    tmp = os.statvfs(cfg["workbase"])
    hidden = {}
    for path in cfg["hidden_paths"]:
        try:
            visible = set(os.listdir(path)) - set(cfg["hide_exceptions"].get(path, []))
        except OSError:
            visible = set()
        hidden[path] = not visible
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "interfaces": interfaces,
        "root_readonly": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
        "readonly_failed": ro_failed,
        "worker_uid_base": base,
        "workbase": cfg["workbase"],
        "workbase_mb": tmp.f_blocks * tmp.f_frsize // 2**20,
        "hidden": hidden,
        "heap_huge_pages_mb": huge_mb,
        "seccomp": seccomp_works(),
        "preloaded": [m for m in cfg["preload"] if m not in preload_failed],
        "preload_failed": preload_failed,
    }
