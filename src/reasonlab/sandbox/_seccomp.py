"""A small seccomp filter: refuse the system calls that only serve to attack the kernel.

It is installed once, in the forker (see _forker.py), and inherited by every worker and session
holder it forks: attaching a filter costs nearly a millisecond per process here (the kernel
compiles it), more than the rest of an execution's set-up. A worker still needs two things
after the fork, to make its private /tmp and /dev/shm: unshare(CLONE_NEWNS) and mount. So the
filter lets exactly those through (unshare with no other flag); both need CAP_SYS_ADMIN, which
the code never has (its own uid, or every capability dropped), so for the code they fail with
EPERM all the same, in the kernel's permission check instead of here.

Namespaces, uids and read-only mounts keep the code away from the host's files and processes;
what is left is the kernel itself. Most kernel exploits start from a few rarely needed
interfaces, so each execution refuses them (EPERM) before the code runs: new namespaces
(unshare, setns, clone with CLONE_NEW*: unprivileged user namespaces are the usual door),
mount, keyrings, bpf, perf_event_open, userfaultfd, io_uring, ptrace, module and kexec loading;
and System V IPC and POSIX message queues, whose objects outlive an execution outside every limit.
clone3 gets ENOSYS, because its flags sit in memory a filter cannot read; glibc then falls back
to clone. 32-bit and x32 system calls are refused too, so they cannot sidestep the numbers.
Only x86-64 is covered; elsewhere nothing is installed (and isolation_report says so).

Hand-assembled classic BPF, because the stdlib has no seccomp binding and libseccomp is not a
Python dependency we want.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)

AUDIT_ARCH_X86_64 = 0xC000003E
X32_BIT = 0x40000000
CLONE_NEW_FLAGS = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
DENY = {  # x86-64 numbers
    "ptrace": 101,
    "pivot_root": 155,
    "umount2": 166,
    "init_module": 175,
    "delete_module": 176,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "perf_event_open": 298,
    "open_by_handle_at": 304,
    "setns": 308,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "fsopen": 430,
    "fsmount": 432,
    "open_tree": 428,
    "move_mount": 429,
    "mount_setattr": 442,
    # System V IPC and POSIX message queues: objects that outlive the process that made them,
    # in memory no rlimit counts. Nothing the preloaded packages or multiprocessing need (POSIX
    # semaphores and shared memory are files in the execution's private /dev/shm).
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "shmdt": 67,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "semtimedop": 220,
    "mq_open": 240,
    "mq_unlink": 241,
    "mq_timedsend": 242,
    "mq_timedreceive": 243,
    "mq_notify": 244,
    "mq_getsetattr": 245,
}
CLONE, CLONE3, UNSHARE, MOUNT = 56, 435, 272, 165
CLONE_NEWNS = 0x00020000

_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000


def program() -> bytes:
    """The filter, assembled: (opcode, k, jump-if-true label, jump-if-false label) with labels."""
    code: list[tuple] = [
        (_LD_ABS, 4),
        (_JEQ, AUDIT_ARCH_X86_64, None, "nosys"),  # seccomp_data.arch
        (_LD_ABS, 0),
        (_JGE, X32_BIT, "nosys", None),  # seccomp_data.nr
        (_JEQ, CLONE, "clone", None),
        (_JEQ, CLONE3, "nosys", None),
        (_JEQ, UNSHARE, "unshare", None),
        *[(_JEQ, nr, "eperm", None) for nr in sorted(DENY.values())],
        (_RET, _ALLOW),
        "clone",
        (_LD_ABS, 16),
        (_JSET, CLONE_NEW_FLAGS, "eperm", None),
        (_RET, _ALLOW),  # args[0], low half
        "unshare",
        (_LD_ABS, 16),
        (_JSET, ~CLONE_NEWNS & 0xFFFFFFFF, "eperm", None),
        (_LD_ABS, 20),
        (_JEQ, 0, None, "eperm"),  # args[0], high half
        (_RET, _ALLOW),
        "eperm",
        (_RET, _ERRNO | errno.EPERM),
        "nosys",
        (_RET, _ERRNO | errno.ENOSYS),
    ]
    labels, at = {}, 0
    for item in code:
        if isinstance(item, str):
            labels[item] = at
        else:
            at += 1
    out, at = [], 0
    for item in code:
        if isinstance(item, str):
            continue
        op, k, *jumps = item
        jt, jf = ((labels[j] - at - 1) if j else 0 for j in (jumps or [None, None]))
        out.append(struct.pack("HBBI", op, jt, jf, k))
        at += 1
    return b"".join(out)


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_CODE = program()
_FILTER = ctypes.create_string_buffer(_CODE, len(_CODE)) if platform.machine() == "x86_64" else None


def supported() -> bool:
    return _FILTER is not None


def install() -> bool:
    """Install the filter on this process and its future children; needs no_new_privs set first."""
    if _FILTER is None:
        return False
    prog = _Prog(len(_CODE) // 8, ctypes.cast(_FILTER, ctypes.c_void_p))
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    return _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0
