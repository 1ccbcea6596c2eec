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
_MNT_DETACH, _CLONE_NEWNS, _SYS_PIVOT_ROOT = 2, 0x00020000, 155  # pivot_root: x86-64 number
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

    The same view bubblewrap builds: a fresh tmpfs becomes the root, only the paths in
    m["binds"] are bound into it (from fds opened before anything was covered up), plus a
    minimal /dev, a fresh /proc and size-limited tmpfs on the work base and /dev/shm; then every
    bind and the root are made read-only, and the old root is detached (pivot_root), so nothing
    else of the host is reachable. Returns the mount points that could not be made read-only.
    """
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we do leaks to the host
    sources = [  # opened before the new root covers /tmp (a virtualenv may live there)
        (os.open(path, os.O_PATH | os.O_NOFOLLOW), path, os.readlink(path) if os.path.islink(path) else None,
         os.path.isdir(path))
        for path in m["binds"]
    ]  # fmt: skip
    devices = [
        (os.open(f"/dev/{name}", os.O_PATH), name)
        for name in ("null", "zero", "full", "random", "urandom", "tty")
        if os.path.exists(f"/dev/{name}")
    ]
    new = "/tmp"  # any directory: it is covered by the new root's tmpfs, then becomes "/"
    _mount("tmpfs", new, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for fd, path, link, is_dir in sources:
        target = new + path
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if link is not None:  # /bin -> usr/bin on merged-/usr systems: keep the link
            os.symlink(link, target)
        else:
            if is_dir:
                os.mkdir(target, 0o755)
            else:
                open(target, "w").close()
            _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
        os.close(fd)
    size = f"size={m['tmp_mb']}m"
    os.makedirs(new + m["workbase"], mode=0o755, exist_ok=True)
    _mount("tmpfs", new + m["workbase"], "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=0711")
    _minimal_dev(new, devices)
    _mount("tmpfs", new + "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=1777")
    os.mkdir(new + "/proc", 0o555)
    _mount("proc", new + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    failed = _remount_readonly(new, {m["workbase"], "/dev/shm", "/proc", "/dev"})
    os.mkdir(new + "/.old-root", 0o700)
    if _libc.syscall(_SYS_PIVOT_ROOT, new.encode(), (new + "/.old-root").encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    os.chdir("/")
    if _libc.umount2(b"/.old-root", _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"detaching the host's root: {os.strerror(err)}")
    os.rmdir("/.old-root")
    try:
        _mount(None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    except OSError:
        failed.append("/")
    return failed


def _remount_readonly(root: str, writable: set[str]) -> list[str]:
    """Make every mount under root read-only (keeping the flags a user namespace locks)."""
    failed = []
    names = {b"nosuid": _MS_NOSUID, b"nodev": _MS_NODEV, b"noexec": _MS_NOEXEC}
    with open("/proc/self/mountinfo", "rb") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        point = fields[4].decode().replace("\\040", " ")
        if not point.startswith(root + "/"):
            continue
        inner = point[len(root) :]
        if inner in writable or inner.startswith(("/proc/", "/dev/")):  # ours
            continue
        flags = _MS_NOSUID | sum(v for k, v in names.items() if k in fields[5].split(b","))
        try:
            _mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags)
        except OSError:
            failed.append(inner)
    return failed


def private_scratch(workbase: str, tmp_mb: int, uid: int | None) -> None:
    """A private /dev/shm and work base for this process and its children only: a new mount
    namespace with fresh tmpfs on both. They vanish with the last process that uses them, so
    nothing an execution leaves there is seen by another, and filling them harms only itself."""
    if _libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    size = f"size={tmp_mb}m"
    _mount("tmpfs", workbase, "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=0711")
    _mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=1777{owner}")


def scratch_works(workbase: str) -> bool:
    """Can a child make its own private scratch space (root of our mount namespace)?"""
    pid = os.fork()
    if pid == 0:
        try:
            private_scratch(workbase, 1, None)
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


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


def _minimal_dev(root: str, fds: list[tuple[int, str]]) -> None:
    """A fresh /dev with only the harmless devices (as bubblewrap's --dev): no disks, no kmsg."""
    os.makedirs(root + "/dev", mode=0o755, exist_ok=True)
    _mount("tmpfs", root + "/dev", "tmpfs", _MS_NOSUID, "size=64k,mode=0755")
    for fd, name in fds:
        open(f"{root}/dev/{name}", "w").close()  # the mount point
        _mount(f"/proc/self/fd/{fd}", f"{root}/dev/{name}", None, _MS_BIND)
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{root}/dev/{name}")
    os.mkdir(root + "/dev/shm")


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
                refused = refused and _libc.unshare(0x10020000) == -1 and ctypes.get_errno() == 1
                shm = _libc.syscall(29, 0, 4096, 0o1600)  # shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600)
                refused = refused and shm == -1 and ctypes.get_errno() == 1
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
    with open("/proc/self/statm") as f:
        vsz = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    return {
        "pid": os.getpid(),
        "vsz_bytes": vsz,
        "uid": os.getuid(),
        "interfaces": interfaces,
        "root_readonly": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
        "readonly_failed": ro_failed,
        "worker_uid_base": base,
        "workbase": cfg["workbase"],
        "workbase_mb": tmp.f_blocks * tmp.f_frsize // 2**20,
        "hidden": hidden,
        "private_scratch": cfg["private_scratch"],
        "heap_huge_pages_mb": huge_mb,
        "seccomp": seccomp_works(),
        "preloaded": [m for m in cfg["preload"] if m not in preload_failed],
        "preload_failed": preload_failed,
    }
