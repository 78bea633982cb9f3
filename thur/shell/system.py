"""/system and /backends, in both trees: the audit log, the pool's housekeeping and
where the chunks are.

`stats`, `gc` and `cloud_check` call `system.stats`, `system.gc` and
`system.cloud_check`; a daemon without them says so in one line (Unsupported).
Their replies are shown as `key: value` lines, whatever their shape.
"""

from __future__ import annotations

from typing import Any

from configshell_fb import ExecutionError

from thur.audit_cli import format_entry
from thur.shell.base import Collection, Item, Node, Unsupported, matches, number, render


class SystemNode(Node):
    def __init__(self, parent: Node) -> None:
        super().__init__("system", parent)

    def summary(self) -> tuple[str, bool | None]:
        return "audit log, pool", None

    def ui_command_audit_tail(self, n: str = "20") -> None:
        """Shows the newest N entries of the audit log: who changed what, and the result."""
        count = number(n, "n")
        entries = self.conn.read("audit.tail", {"n": count})["entries"]
        self.say("\n".join(format_entry(e) for e in entries) or "no entries")

    def ui_complete_audit_tail(self, parameters: dict[str, str], text: str,
                               current_param: str) -> list[str]:
        return matches(text, ["10", "20", "100"]) if current_param == "n" else []

    def ui_command_audit_verify(self) -> None:
        """Checks the audit log's hash chain."""
        report = self.conn.call("audit.verify", timeout=600)
        self.say(f"audit log {report.get('status')}: {report.get('message')}")

    def ui_command_stats(self) -> None:
        """Shows the pool's figures: stored and unique bytes, chunks, uploads pending."""
        self.say(render(self.conn.read("system.stats")))

    def ui_command_gc(self) -> None:
        """Runs the pool's garbage collection now and shows what it freed."""
        self.say(render(self.conn.call("system.gc", timeout=3600)))

    def ui_command_cloud_check(self) -> None:
        """Checks the bucket: list, write, read and delete a probe object."""
        self.say(render(self.conn.call("system.cloud_check", timeout=300)))


class Backends(Collection):
    """/backends: where the chunks are. `cache` is the local warm copy, `bucket` the
    durable one (local directory, S3, GCS or Azure); figures from `system.stats`."""

    def __init__(self, parent: Node) -> None:
        super().__init__("backends", parent)

    def entries(self) -> dict[str, Any]:
        try:
            stats = self.conn.read("system.stats")
        except Unsupported:  # an older daemon: the rest of the tree still works
            return {}
        return {b["kind"]: b for b in stats["backends"]}

    def make_child(self, name: str, data: Any) -> Item:
        return Backend(name, self, data)

    def summary(self) -> tuple[str, bool | None]:
        return "cache and bucket", None


class Backend(Item):
    def summary(self) -> tuple[str, bool | None]:
        data = self.fresh()
        stored = data.get("stored_bytes") or 0
        return f"{data['name']}: {data.get('chunks', 0)} chunks, {stored} bytes stored", None

    def ui_command_info(self) -> None:
        """Shows this backend's figures (chunks, bytes, packs, budget)."""
        self.say(render(self.fresh()))

    def ui_command_check(self) -> None:
        """Checks the bucket: list, write, read and delete a probe object."""
        if self.name != "bucket":
            raise ExecutionError("only the bucket is checked; the cache is local disk")
        report = self.conn.call("system.cloud_check", timeout=300)
        self.say(render(report))
        if not report.get("ok"):
            raise ExecutionError(f"{report.get('backend')}: check failed")
