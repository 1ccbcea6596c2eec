"""Run untrusted Python (written by LLMs) safely and fast. Code in, result out.

    from reasonlab.sandbox import Sandbox, SandboxConfig
    with Sandbox(SandboxConfig(timeout_s=2)) as sb:
        print(sb.run("print(6 * 7)").stdout)

See docs/sandbox.md for what is enforced and how.
"""

from .config import ExecResult, SandboxConfig
from .sandbox import Sandbox, SandboxError, Session

__all__ = ["ExecResult", "Sandbox", "SandboxConfig", "SandboxError", "Session"]
