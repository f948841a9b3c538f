import shutil

import pytest

from policykd.embedded import _run
from policykd.errors import PolicyKDError
from policykd.tools import run_tool


def test_tool_failures_are_one_line_errors(tmp_path):
    """A compiler error, a missing tool or a timeout: one PolicyKDError line naming the step and the tool."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    (tmp_path / "broken.c").write_text("int main(void) { return missing_symbol; }\n")
    for call in (lambda: _run(["cc", "-c", "broken.c"], tmp_path),
                 lambda: run_tool(["cc", "-c", str(tmp_path / "broken.c")], what="compiling the C latency timer")):
        with pytest.raises(PolicyKDError) as error:
            call()
        assert "\n" not in str(error.value) and "missing_symbol" in str(error.value) and "exit 1" in str(error.value)
    with pytest.raises(PolicyKDError, match="install-toolchains.sh") as error:
        _run(["policykd-no-such-tool"], tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(PolicyKDError, match="compiling: `policykd-no-such-tool` not found on PATH; install it$"):
        run_tool(["policykd-no-such-tool"], what="compiling", missing_hint="install it")
    with pytest.raises(PolicyKDError, match="took over 0 s"):
        run_tool(["sleep", "5"], what="timing", timeout=0.2)
    assert run_tool(["echo", "ok"], what="echo").stdout == "ok\n"
