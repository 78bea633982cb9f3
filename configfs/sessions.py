"""Who is logged in: iSCSI sessions of one target, read from configfs.

LIO shows sessions in two places under ``target/iscsi/<iqn>/tpgt_N/``:

* ``acls/<initiator>/info``: for an initiator with an explicit ACL, either
  "No active iSCSI Session for Initiator Endpoint: ..." or the session (name,
  alias, LIO session id, ISID, TSIH, type, state) followed by one block per
  connection (CID, state, "Address <ip> TCP");
* ``dynamic_sessions``: in demo mode (no ACLs), only the initiator names, one
  per line (the kernel separates entries with a NUL as well as a newline).

NVMe over Fabrics has no session list in configfs; newer kernels show
controllers under debugfs ``nvmet/<subsys>/ctrl<N>/``, read by `nvmet_controllers`
when debugfs is mounted.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .paths import DEFAULT_ROOT

DEBUGFS_NVMET = Path("/sys/kernel/debug/nvmet")


@dataclass(frozen=True, slots=True)
class IscsiSession:
    initiator: str
    tpg: int
    acl: bool  # False: a demo-mode session (no ACL), whose details LIO does not show
    alias: str | None = None
    session_id: int | None = None
    isid: str | None = None
    tsih: int | None = None
    session_type: str | None = None  # "Normal" or "Discovery"
    state: str | None = None
    addresses: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["addresses"] = list(self.addresses)
        return out


# The kernel prints the ISID with %6ph: "0x00 02 3d 00 00 00".
_ID_RE = re.compile(r"LIO Session ID:\s*(\d+)\s+ISID:\s*(.+?)\s+TSIH:\s*(\d+)")
_TYPE_RE = re.compile(r"SessionType:\s*(\S+)")
_ADDR_RE = re.compile(r"^\s*Address\s+(\S+)\s+(TCP|SCTP)", re.MULTILINE)


def parse_acl_info(text: str, initiator: str, tpg: int) -> IscsiSession | None:
    """An ACL's `info` file as a session; None when its initiator is not logged in."""
    if not text.strip() or text.startswith("No active"):
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("InitiatorName", "InitiatorAlias", "Session State"):
            fields[key.strip()] = value.strip()
    ident = _ID_RE.search(text)
    kind = _TYPE_RE.search(text)
    return IscsiSession(
        initiator=fields.get("InitiatorName") or initiator,
        tpg=tpg,
        acl=True,
        alias=fields.get("InitiatorAlias") or None,
        session_id=int(ident.group(1)) if ident else None,
        isid=ident.group(2).replace(" ", "") if ident else None,
        tsih=int(ident.group(3)) if ident else None,
        session_type=kind.group(1) if kind else None,
        state=fields.get("Session State"),
        addresses=tuple(m.group(1) for m in _ADDR_RE.finditer(text)),
    )


def iscsi_sessions(iqn: str, root: Path = DEFAULT_ROOT) -> list[IscsiSession]:
    """Every session logged in to target `iqn` (empty when the target is absent).

    Raises OSError when configfs cannot be read (the caller reports it as unknown).
    """
    found: list[IscsiSession] = []
    target = root / "target" / "iscsi" / iqn
    if not target.exists():
        return found
    for tpg_dir in sorted(target.glob("tpgt_*")):
        tpg = int(tpg_dir.name.removeprefix("tpgt_"))
        dynamic = tpg_dir / "dynamic_sessions"
        if dynamic.exists():
            names = dynamic.read_text(errors="replace").replace("\0", "\n").split()
            found += [IscsiSession(name, tpg, acl=False) for name in dict.fromkeys(names)]
        acls = tpg_dir / "acls"
        if acls.exists():
            for acl in sorted(acls.iterdir()):
                session = parse_acl_info((acl / "info").read_text(errors="replace"), acl.name, tpg)
                if session is not None:
                    found.append(session)
    return found


def nvmet_controllers(nqn: str, root: Path = DEBUGFS_NVMET) -> list[dict[str, str]] | None:
    """Controllers (one per connected host queue set) of subsystem `nqn`, from debugfs.

    None when debugfs shows no nvmet directory (not mounted, or an older kernel).
    Each entry has the files the kernel provides (hostnqn, host_traddr, port, state,
    kato, ...), as stripped strings.
    """
    if not root.is_dir():
        return None
    subsys = root / nqn
    if not subsys.is_dir():
        return []
    out: list[dict[str, str]] = []
    for ctrl in sorted(subsys.glob("ctrl*")):
        entry = {"controller": ctrl.name}
        for f in sorted(ctrl.iterdir()):
            if f.is_file():
                try:
                    entry[f.name] = f.read_text(errors="replace").strip()
                except OSError:
                    continue  # write-only or vanished with the controller
        out.append(entry)
    return out
