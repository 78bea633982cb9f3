"""`thurvtl shell` and `thurvsa shell` in a real terminal (a pty, driven by pexpect).

The shell runs as its own process, as an operator starts it, against the daemon's real
verb table served by this process (tests/unit/shell_kit.py). What is checked here and
not in test_shell.py: readline's TAB completion on the terminal, the prompt, the
completion list (configshell asks the terminal where the cursor is: the test answers
like a terminal), Ctrl-D, and that the shell's files go to $XDG_STATE_HOME, not cwd.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.unit.shell_kit import Vtl, vsa_server, vtl_server

# A guard against a hung shell, not a measurement: every step answers in milliseconds.
HANG = 60
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\x07|\r")


def plain(text: str) -> str:
    """Terminal output without colours, cursor moves, bells and carriage returns."""
    return ANSI.sub("", text)


class Terminal:
    def __init__(self, prog: str, sock: Path, tmp_path: Path) -> None:
        self.cwd = tmp_path / "cwd"
        self.cwd.mkdir()
        self.state = tmp_path / "xdg"
        env = dict(os.environ, XDG_STATE_HOME=str(self.state), TERM="xterm")
        self.child = pexpect.spawn(
            sys.executable, ["-m", f"thur.{prog[4:]}.cli", "--socket", str(sock), "shell"],
            cwd=self.cwd, env=env, encoding="utf-8", timeout=HANG, dimensions=(50, 160))
        self.prog = prog

    def prompt(self, path: str) -> str:
        """Wait for the prompt at `path`; return what came before it, plain."""
        self.child.expect_exact(f"{self.prog} {path}> ")
        return plain(self.child.before)

    def line(self, text: str, path: str) -> str:
        """Type a command line and Enter; its output up to the next prompt at `path`."""
        self.child.send(text + "\r")
        return self.prompt(path)

    def tab(self, text: str, then: str) -> None:
        """Type `text` and TAB; readline must complete the line to end with `then`."""
        self.child.send(text + "\t")
        self.child.expect_exact(then)

    def list_completions(self) -> str:
        """Two TABs on an ambiguous word: configshell lists the candidates and redraws the
        line, asking the terminal for the cursor position (ESC[6n) before and after;
        we answer as a terminal does. Returns the list and the redrawn line, plain."""
        self.child.send("\t\t")
        self.child.expect_exact("\x1b[6n")
        self.child.send("\x1b[20;1R")
        self.child.expect_exact("\x1b[6n")
        self.child.send("\x1b[24;1R")
        return plain(self.child.before)

    def close(self) -> int:
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus is not None
        return self.child.exitstatus


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Vtl]:
    with vtl_server(tmp_path) as served:
        yield served


def test_thurvtl_shell_in_a_terminal(lib: Vtl, tmp_path: Path) -> None:
    t = Terminal("thurvtl", lib.sock, tmp_path)
    t.prompt("/")
    t.tab("cd /cart", then="cd /cartridges ")  # no cartridges yet: a leaf, so a space
    t.line("", "/cartridges")
    assert "created L00001L8 in slot 1" in t.line("create L00001L8", "/cartridges")

    # slot=<TAB><TAB> lists the empty slots; then one is typed.
    t.child.send("create L00002L8 slot=")
    assert t.list_completions().split() == [
        "2", "3", "4", "5", "6", "thurvtl", "/cartridges>", "create", "L00002L8", "slot="]
    assert "created L00002L8 in slot 4" in t.line("4", "/cartridges")

    # A barcode completes, and the command runs.
    t.tab("info L00002", then="info L00002L8 ")
    assert "Location    slot 4 (element 0x0403)" in t.line("", "/cartridges")

    # A refusal is one line, and the shell goes on.
    out = t.line("create L00001L8", "/cartridges")
    assert [line for line in out.splitlines() if line.strip()][-1] == (
        "cartridge L00001L8 already exists (slot 1)")

    out = t.line("ls", "/cartridges").splitlines()
    rows = [line for line in out if "o- " in line]
    assert [r.split()[1] for r in rows] == ["cartridges", "L00001L8", "L00002L8"]
    assert rows[1].endswith("[slot 1, data, 0 B used]")
    assert rows[2].endswith("[slot 4, data, 0 B used]")
    t.tab("cd ../sl", then="cd ../slots/")
    t.line("4", "/slots/4")
    assert "L00002L8: slot 4 -> drive 1" in t.line("load drive=1", "/slots/4")
    assert lib.drives[1].medium is not None and lib.drives[1].medium.barcode == "L00002L8"
    t.child.send("exit\r")
    assert t.close() == 0

    assert [p.barcode for p in lib.library.inventory] == ["L00002L8", "L00001L8"]
    assert list(t.cwd.iterdir()) == []  # nothing left in the working directory
    history = (t.state / "thurvtl" / "history.txt").read_text().splitlines()
    assert history[:3] == ["cd /cartridges ", "create L00001L8", "create L00002L8 slot=4"]


def test_thurvsa_shell_in_a_terminal(tmp_path: Path) -> None:
    with vsa_server(tmp_path) as (sock, exporter):
        t = Terminal("thurvsa", sock, tmp_path)
        t.prompt("/")
        t.line("cd volumes", "/volumes")
        out = t.line("create vol1 size=2G", "/volumes")
        assert "created vol1: 2.00 GiB, LUN 0" in out
        t.tab("cd vo", then="cd vol1 ")
        t.line("", "/volumes/vol1")
        t.tab("set attribute si", then="set attribute size=")
        out = t.line("4G", "/volumes/vol1")
        assert "Parameter size is now '4.00 GiB (4294967296 bytes)'." in out
        assert ("resized", "vol1") in exporter.calls
        out = t.line("info", "/volumes/vol1")
        assert "Size         4.00 GiB (4294967296 bytes)" in out
        t.child.sendeof()  # Ctrl-D leaves like `exit`
        assert t.close() == 0


def test_shell_with_the_daemon_down(tmp_path: Path) -> None:
    t = Terminal("thurvtl", tmp_path / "none.sock", tmp_path)
    t.child.expect_exact(f"thurvtl: daemon not running (no socket at {tmp_path}/none.sock)")
    assert t.close() == 1
