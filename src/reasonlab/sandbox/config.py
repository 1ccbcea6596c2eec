"""The sandbox's configuration and result types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PRELOAD = [
    "math",
    "cmath",
    "itertools",
    "collections",
    "functools",
    "operator",
    "fractions",
    "decimal",
    "random",
    "re",
    "json",
    "string",
    "heapq",
    "bisect",
    "statistics",
    "typing",
    "dataclasses",
    "datetime",
    "copy",
    "numpy",
    "sympy",
]


class SandboxConfig(BaseModel):
    """Limits and isolation of a Sandbox. Every limit applies to each execution (or session cell).

    `memory_mb` is address space the code may add on top of the warm interpreter (the preloaded
    modules are shared copy-on-write and do not count). `cpu_s` defaults to `timeout_s`.
    `disk_mb` bounds the scratch space of all executions together (a tmpfs, where one can be
    mounted); `max_file_mb` bounds each written file. `isolation="auto"` picks bubblewrap, then
    plain namespaces, then none, and says which in `Sandbox.isolation_report()`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(5.0, gt=0, description="wall-clock limit per execution")
    cpu_s: float | None = Field(None, gt=0, description="CPU-time limit per execution (default: timeout_s)")
    memory_mb: int = Field(512, ge=16, description="address space the code may add to the warm interpreter")
    max_procs: int = Field(64, ge=1, description="processes and threads per execution (RLIMIT_NPROC)")
    max_file_mb: int = Field(64, ge=1, description="largest file the code may write")
    disk_mb: int = Field(256, ge=1, description="scratch space shared by all executions (tmpfs size)")
    max_output_bytes: int = Field(
        16384, ge=64, description="per stream; the middle of longer output is dropped"
    )
    pool_size: int = Field(2, ge=1, le=64, description="executions that may run at the same time")
    max_sessions: int = Field(256, ge=0, description="sessions open at the same time")
    preload: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PRELOAD), description="imported once, in the zygote"
    )
    light_interpreter: bool = Field(
        True,
        description="run stateless code that imports none of the heavy preloads (numpy, sympy) in a "
        "second warm interpreter with only the standard-library preloads: same isolation and limits, "
        "about 3x cheaper per execution",
    )
    isolation: Literal["auto", "bwrap", "namespaces", "none"] = "auto"
    network: bool = Field(False, description="allow network access (keeps the host's network namespace)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables for the code")
    python: str | None = Field(None, description="interpreter for the zygote (default: sys.executable)")
    startup_timeout_s: float = Field(60.0, gt=0)


@dataclass
class ExecResult:
    """The outcome of one execution. `error` names a sandbox-level event, None when there was none:
    "timeout", "memory limit", "cpu time limit", "file size limit", "killed by signal 11 (SIGSEGV)",
    "sandbox failure: ...". An ordinary uncaught exception is exit_code 1 with its traceback in stderr.
    exit_code is negative (-signal) when the process was killed by a signal, as in `subprocess`."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    duration_s: float
    truncated: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None
