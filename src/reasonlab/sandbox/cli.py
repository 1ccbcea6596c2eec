"""`reasonlab sandbox ...`: run a file (or stdin) in the sandbox and show what happened."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

# What a terminal would obey rather than show: C0 controls but tab and newline (ESC starts every
# escape sequence: colours, cursor moves, OSC 52 clipboard writes, window titles), DEL, C1
# controls (0x80-0x9f, the 8-bit CSI and OSC), and the bidirectional overrides and isolates,
# which reorder what is shown.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]}
_CONTROL |= {c: f"\\x{c:02x}" for c in range(0x80, 0xA0)}
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_CONTROL |= {c: f"\\u{c:04x}" for c in _BIDI}
_CONTROL[0x0D] = "\\r"


def escape_controls(text: str) -> str:
    """Make control characters visible (`\\x1b`, `\\r`...) instead of letting a terminal obey them."""
    return text.translate(_CONTROL)


app = typer.Typer(help="Run untrusted Python in the sandbox.", no_args_is_help=True, rich_markup_mode="rich")


@app.callback()
def main() -> None:
    """Run untrusted Python in the sandbox (limits, no network, private file system)."""


@app.command("run")
def run(
    file: str = typer.Argument(..., help="Python file to run, or - to read the code from stdin"),
    timeout: float = typer.Option(5.0, "--timeout", "-t", help="wall-clock limit in seconds"),
    memory: int = typer.Option(
        512, "--memory", "-m", help="memory limit in MB (on top of the warm interpreter)"
    ),
    isolation: str = typer.Option("auto", help="auto, bwrap, namespaces or none"),
    network: bool = typer.Option(False, help="allow network access"),
    stdin_file: Path = typer.Option(None, "--stdin", help="file whose content is the program's stdin"),
    as_json: bool = typer.Option(False, "--json", help="print the ExecResult as JSON instead"),
    report: bool = typer.Option(False, "--report", help="also print what isolation is enforced"),
    raw: bool = typer.Option(
        False, "--raw", help="write the output as it is, even to a terminal (control characters included)"
    ),
) -> None:
    """Run FILE (or - for stdin) in the sandbox; print its stdout and stderr, then a summary line.

    Example: [bold]echo 'print(sum(range(10)))' | reasonlab sandbox run - --timeout 2[/]

    The exit status is the program's (1 on a timeout or a sandbox-level error). Written to a
    terminal, the program's control characters are shown escaped (`\\x1b[31m`), so its output cannot
    move the cursor, rewrite lines or set the clipboard; `--raw` writes them as they are.
    """
    from dataclasses import asdict

    from . import Sandbox, SandboxConfig

    code = sys.stdin.read() if file == "-" else Path(file).read_text()
    stdin = stdin_file.read_text() if stdin_file else ""
    config = SandboxConfig(
        timeout_s=timeout, memory_mb=memory, isolation=isolation, network=network, pool_size=1
    )
    with Sandbox(config) as sb:
        result = sb.run(code, stdin)
        isolation_report = sb.isolation_report() if report else None
    out, err = Console(), Console(stderr=True)
    if as_json:
        out.print_json(json.dumps(asdict(result)))
    else:
        stdout, stderr = result.stdout, result.stderr
        if not raw and sys.stdout.isatty():
            stdout = escape_controls(stdout)
        if not raw and sys.stderr.isatty():
            stderr = escape_controls(stderr)
        sys.stdout.write(stdout)
        sys.stderr.write(stderr)
        sys.stdout.flush()
        colour = "green" if result.ok else "red"
        what = result.error or ("ok" if result.exit_code == 0 else "failed")
        extra = " · output truncated" if result.truncated else ""
        err.print(
            f"[{colour}]exit {result.exit_code} · {escape(what)} · {result.duration_s * 1e3:.1f} ms{extra}[/]"
        )
    if isolation_report is not None:
        err.print_json(json.dumps({k: v for k, v in isolation_report.items() if k != "details"}))
    ok_status = result.error is None and 0 <= result.exit_code <= 255
    raise typer.Exit(result.exit_code if ok_status else 1)
