"""One list of the Debian packages the tests need: the README and .ci/run agree with it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "requirements" / "debian.txt"


def _listed() -> list[str]:
    names = [line.split("#", 1)[0].strip() for line in LIST.read_text().splitlines()]
    return [n for n in names if n]


def test_list_names_the_recommends_the_tests_need() -> None:
    """The cross C libraries and clang's runtimes are only Recommends of their compilers:
    without them the ARM builds do not compile and -fsanitize=fuzzer does not link."""
    names = _listed()
    assert len(names) == len(set(names)), names
    for compiler, runtime in [
        ("gcc-arm-linux-gnueabihf", "libc6-dev-armhf-cross"),
        ("gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"),
        ("clang", "libclang-rt-14-dev"),
        ("clang", "libfuzzer-14-dev"),
    ]:
        assert compiler in names and runtime in names, (compiler, runtime)
    assert "qemu-user" in names


def test_readme_quotes_the_list() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^apt-get install --no-install-recommends (.+)$", readme, re.M)
    assert len(commands) == 1, commands
    assert commands[0].split() == _listed()


def test_ci_installs_the_list_and_nothing_else() -> None:
    """.ci/run reads requirements/debian.txt (no list of its own) and runs the README's `make test`."""
    script = (ROOT / ".ci" / "run").read_text()
    assert "requirements/debian.txt" in script
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    for name in _listed():
        if len(name) > 4:  # make, gcc: words that occur in any script
            assert not any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line) for line in code), name
    assert "export CI=true" in script and code[-1].strip() == "make test"
    # The same parsing as .ci/run's, run by bash: it yields exactly the list.
    parse = next(line for line in code if "requirements/debian.txt" in line and "sed" in line)
    out = subprocess.run(
        ["bash", "-c", f"{parse.strip()}\nprintf '%s\\n' \"${{packages[@]}}\""],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == _listed()


def test_missing_tool_skips_for_users_and_fails_under_ci(monkeypatch) -> None:
    import pytest
    from helpers import unavailable

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="qemu-user not installed"):
        unavailable("qemu-user not installed")
    monkeypatch.setenv("CI", "true")
    message = "under CI nothing may be skipped: qemu-user not installed"
    with pytest.raises(pytest.fail.Exception, match=message):
        unavailable("qemu-user not installed")
