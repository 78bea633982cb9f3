"""The shell's machinery: the daemon connection, the shell, and the node kinds.

The tree mirrors the daemon, which can change under the shell (another operator,
`mtx`, the backup software), so nothing is kept between command lines: each
command line, and each TAB, starts a new *generation*, and a `Collection` asks
the daemon for its members again the first time it is looked at in a generation
(one admin call per collection per line, however often configshell walks it).

Errors: a refusal from the daemon, bad input or an unknown path prints one line
and the shell carries on; in one-shot and script mode it makes the exit status 1.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from configshell_fb import ConfigNode, ConfigShell, Console, ExecutionError, Log, Prefs
from pyparsing import ParseException

from thur.admin import AdminError, call

EXIT_FAILED = 1
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


class Unsupported(AdminError):
    """The daemon does not know the verb: it is older than this shell."""


class Connection:
    """The admin socket, with the replies of read-only verbs kept for one generation."""

    def __init__(self, socket: Path, prog: str, daemon: str) -> None:
        self.socket = socket
        self.prog = prog  # thurvtl: the prompt and error prefix
        self.daemon = daemon  # thurvtld: named in messages
        self.generation = 0
        self._cache: dict[tuple[str, str], Any] = {}

    def invalidate(self) -> None:
        self.generation += 1
        self._cache.clear()

    def call(self, verb: str, args: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        """A request that may change something: afterwards every collection re-reads."""
        try:
            return self._call(verb, args, timeout)
        finally:
            self.invalidate()

    def read(self, verb: str, args: dict[str, Any] | None = None) -> Any:
        """A read-only request, answered at most once per generation."""
        key = (verb, repr(sorted((args or {}).items())))
        if key not in self._cache:
            self._cache[key] = self._call(verb, args, 30)
        return self._cache[key]

    def _call(self, verb: str, args: dict[str, Any] | None, timeout: float) -> Any:
        try:
            return call(self.socket, verb, args, timeout)
        except AdminError as exc:
            if str(exc) == f"unknown verb {verb!r}":
                raise Unsupported(f"{verb} is not supported by this {self.daemon} "
                                  "(it is older than this shell)") from None
            raise


# ---- parameter parsing and completion helpers --------------------------------------------


def number(value: str | None, name: str) -> int | None:
    """A whole-number parameter typed by the operator (None when not given)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ExecutionError(f"'{name}' must be a whole number, not {value!r}") from None


def flag(value: str | bool, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ExecutionError(f"'{name}' must be true or false, not {value!r}")


def matches(text: str, options: Iterable[str]) -> list[str]:
    """Completions of `text` among `options`, in their order; a single one gets its
    trailing space (readline then moves on to the next parameter)."""
    found = list(dict.fromkeys(o for o in options if o.startswith(text)))
    return [found[0] + " "] if len(found) == 1 else found


def render(value: Any, indent: int = 0) -> str:
    """A reply of unknown shape (newer verbs) as indented `key: value` lines."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:\n{render(item, indent + 1)}")
            else:
                lines.append(f"{pad}{key}: {'-' if item is None else item}")
        return "\n".join(lines) or f"{pad}-"
    if isinstance(value, list):
        return "\n".join(
            f"{pad}-\n{render(item, indent + 1)}" if isinstance(item, dict | list)
            else f"{pad}- {item}" for item in value) or f"{pad}(none)"
    return f"{pad}{value}"


# ---- nodes -------------------------------------------------------------------------------


class Node(ConfigNode):  # type: ignore[misc]
    """A node of a Thur tree: it reaches the daemon through the root's connection."""

    help_intro = """
                 THUR SHELL
                 ==========
                 Each node of the tree stands for a part of the daemon; `ls`
                 shows the tree with a summary of each node, `cd PATH` moves
                 (TAB completes paths, commands and their parameters), and
                 `help` lists the commands of the current node. Changes go
                 through the daemon's admin API and are in its audit log.

                 COMMAND SYNTAX
                 ==============
                 [PATH] COMMAND [VALUE...] [NAME=VALUE...]

                 e.g. `/cartridges create ABC001L8 slot=3`, or from the node
                 itself `create ABC001L8 slot=3`.
                 """

    @property
    def conn(self) -> Connection:
        root: Root = self.get_root()
        return root.connection

    def say(self, text: str) -> None:
        self.shell.con.display(text)

    def prompt_msg(self) -> str:
        """configshell puts this in front of the path in the prompt."""
        return f"{self.conn.prog} "


class Root(Node):
    def __init__(self, shell: ConfigShell, connection: Connection) -> None:
        self.connection = connection
        super().__init__("/", shell=shell)


class Collection(Node):
    """A node whose children are the daemon's current members (cartridges, volumes)."""

    def __init__(self, name: str, parent: Node) -> None:
        self._synced = -1
        super().__init__(name, parent)

    def entries(self) -> dict[str, Any]:
        """name -> data of each member, asked of the daemon."""
        raise NotImplementedError

    def make_child(self, name: str, data: Any) -> Item:
        raise NotImplementedError

    def sync(self) -> None:
        generation = self.conn.generation
        if self._synced == generation:
            return
        wanted = self.entries()
        for child in list(self._children):
            if child.name in wanted:
                child.data = wanted.pop(child.name)
            else:
                self.remove_child(child)
        for name, data in wanted.items():
            self.make_child(name, data)
        self._synced = generation

    @property
    def children(self) -> set[ConfigNode]:
        self.sync()
        return self._children

    def get_child(self, name: str) -> ConfigNode:
        self.sync()
        return super().get_child(name)

    def names(self) -> list[str]:
        return sorted(child.name for child in self.children)


class Item(Node):
    """A member of a Collection; `data` is its latest entry."""

    def __init__(self, name: str, parent: Collection, data: Any) -> None:
        self.data = data
        super().__init__(name, parent)

    def fresh(self) -> Any:
        """This generation's data (the parent re-reads once per command line)."""
        parent: Collection = self.parent
        parent.sync()
        return self.data


class Attributes:
    """A read-only `attribute` group for get; mixed into Items whose data is a dict."""

    # attribute name -> (configshell type, description); values come from the node's data
    ATTRIBUTES: dict[str, tuple[str, str]] = {}
    WRITABLE: frozenset[str] = frozenset()

    def define_attributes(self: Any) -> None:
        for name, (kind, description) in self.ATTRIBUTES.items():
            self.define_config_group_param("attribute", name, kind, description,
                                           writable=name in self.WRITABLE)

    def ui_getgroup_attribute(self: Any, name: str) -> Any:
        return self.fresh().get(name)


# ---- the shell ---------------------------------------------------------------------------


def _fresh_configshell_state() -> None:
    """configshell keeps prefs in process-wide Borgs: start each shell from nothing."""
    prefs = Prefs()
    prefs._prefs = {}
    prefs.filename = None
    prefs.autosave = False


def _set_aside_unreadable(prefs: Path) -> None:
    """A torn prefs.bin (disk full, killed mid-save) would stop configshell with a
    traceback: move it aside, say so, and start with default preferences."""
    try:
        if prefs.exists():
            pickle.loads(prefs.read_bytes())  # noqa: S301 - the operator's own file
    except Exception as exc:
        aside = prefs.with_name(prefs.name + ".unreadable")
        with contextlib.suppress(OSError):
            prefs.replace(aside)
        print(f"shell preferences {prefs} unreadable ({exc!r}); moved to {aside}, "
              "starting with the defaults", file=sys.stderr)


class ThurShell(ConfigShell):  # type: ignore[misc]
    """configshell's shell, with one-line error reporting and a fresh tree per line."""

    def __init__(self, prefs_dir: Path | None, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        _fresh_configshell_state()
        if prefs_dir is not None:
            _set_aside_unreadable(prefs_dir / "prefs.bin")
        first_run = prefs_dir is not None and not (prefs_dir / "prefs.bin").exists()
        super().__init__(str(prefs_dir) if prefs_dir is not None else None)
        # Console binds sys.stdout when configshell is imported; use today's streams.
        self.con = Console(sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
        if first_run:
            self.prefs["loglevel_file"] = "info"  # not a debug trace of every keystroke
        # Log is a Borg: this reaches every node's log too.
        self.log.debug = self._debug
        self.failed = False

    def _debug(self, msg: str) -> None:
        """configshell's Log.debug walks the whole stack (inspect.stack(), reading source
        files) before deciding not to log: ~10 ms a call, dozens per command or TAB."""
        if "debug" in (self.prefs["loglevel_console"], self.prefs["loglevel_file"]):
            Log.debug(self.log, msg)

    @property
    def connection(self) -> Connection:
        root: Root = self._root_node
        return root.connection

    def run_cmdline(self, cmdline: str) -> None:
        """Run one line; a failure prints one line, sets `failed`, and returns."""
        self.connection.invalidate()
        try:
            super().run_cmdline(cmdline)
        except (AdminError, ExecutionError, ValueError, ParseException) as exc:
            self.fail(str(exc))
        except Exception as exc:  # a bug must not end the operator's session
            self.fail(f"internal error: {exc!r}")
        self._leave_deleted_node()

    def fail(self, message: str) -> None:
        self.failed = True
        text = self.con.render_text(message, "red")
        if text == message:  # no colours (not a terminal, or color_mode off): say it
            text = f"Error: {message}"
        self.con.display(text, error=True)

    def _complete(self, text: str, state: int) -> str | None:
        if state == 0:
            self.connection.invalidate()
        return super()._complete(text, state)

    def _leave_deleted_node(self) -> None:
        """After `delete` of the node we stand in (or a peer's), step up to what is left."""
        node = self._current_node
        try:
            while node.parent is not None and node not in node.parent.children:
                node = node.parent
        except AdminError:
            return
        self._current_node = node


def prefs_dir(prog: str) -> Path | None:
    """History and preferences: $XDG_STATE_HOME/PROG, by default ~/.local/state/PROG."""
    try:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        path = base / prog
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (OSError, RuntimeError):  # no home, read-only home: run without history
        return None
    return path


def run(connection: Connection, tree: Callable[[ThurShell, Connection], Root],
        argv: list[str], stdin: TextIO | None = None) -> int:
    """`PROG shell [COMMAND...]`: one command, a script on stdin, or an interactive session.

    Exit status: 0; 1 when the daemon is not running, or a command failed (in
    one-shot and script mode; a script stops at its first failing line).
    """
    stdin = stdin or sys.stdin
    try:
        connection.call("ping")
    except AdminError as exc:
        print(f"{connection.prog}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    shell = ThurShell(prefs_dir(connection.prog))
    tree(shell, connection)
    if argv:
        shell.run_cmdline(" ".join(argv))
        return EXIT_FAILED if shell.failed else 0
    if not stdin.isatty():
        for line in stdin:
            shell.run_cmdline(line.strip())
            if shell.failed or shell._exit:
                break
        return EXIT_FAILED if shell.failed else 0
    shell.run_interactive()
    return 0
