"""Running the external tools policykd drives (C compilers, qemu, size tools, the C latency timer): every failure
(a non-zero exit, a tool that is not installed, a timeout) is one PolicyKDError line naming the step and the tool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from policykd.errors import PolicyKDError


def run_tool(command: list[str], *, what: str, cwd: Path | None = None, timeout: float = 600,
             missing_hint: str = "") -> subprocess.CompletedProcess:
    """Run `command` and return its result (text output captured); `what` names the step in the error line and
    `missing_hint` says how to install the tool when it is not on PATH."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise PolicyKDError(f"{what}: `{command[0]}` not found on PATH{'; ' + missing_hint if missing_hint else ''}") from None
    except subprocess.TimeoutExpired:
        raise PolicyKDError(f"{what}: `{' '.join(command[:3])} ...` took over {timeout:.0f} s") from None
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())[:300]
        raise PolicyKDError(f"{what}: `{' '.join(command[:3])} ...` failed (exit {result.returncode}): {detail}")
    return result
