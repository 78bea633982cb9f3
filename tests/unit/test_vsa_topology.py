"""What thurvsad asks the kernel for, per transport: iSCSI LUNs, tcm_loop LUNs and
nvmet namespaces from the same volumes, with identities stable across restarts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configfs import make_dhchap_secret
from configfs.plan import desired_nodes
from handlers.scsi.sbc import thin_disk_identity
from thur.vsa.config import parse_vsa_config
from thur.vsa.daemon import count_tcp_connections
from thur.vsa.topology import Export, build_target_state, loop_wwn

SERIALS = ("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210")
HOST = "nqn.2014-08.org.nvmexpress:uuid:8cc79367-1198-4576-b8e0-6862a4f558ef"


@dataclass
class Engine:  # the one thing topology reads from the SBC engine: its VPD 83h identity
    serial: str

    @property
    def identity(self) -> Any:
        return thin_disk_identity(self.serial)


def exports() -> list[Export]:
    return [Export(name=f"v{i}", lun=lun, backstore=f"thurvsa_v{i}", serial=s,
                   block_size=4096, kernel_size=1 << 30, engine=Engine(s))  # type: ignore
            for i, (lun, s) in enumerate(zip((0, 5), SERIALS, strict=True))]


def config(**top: object) -> Any:
    return parse_vsa_config({"data_dir": "/srv/vsa", **top})


def test_iscsi_only_is_unchanged() -> None:
    st = build_target_state(config(), exports())
    assert len(st.iscsi_targets) == 1 and st.loopback_targets == ()
    assert st.nvme_subsystems == () and st.nvme_hosts == ()


def test_nvme_only_exports_namespaces_through_tcm_loop() -> None:
    key = make_dhchap_secret(bytes(32))
    cfg = config(transport="nvmetcp", nvme={"listen": ["127.0.0.1:4420"],
                                             "hosts": [{"nqn": HOST, "dhchap_secret": key}]})
    st = build_target_state(cfg, exports())
    assert st.iscsi_targets == () and st.discovery_auth is None
    (loop,) = st.loopback_targets
    assert loop.wwn == loop_wwn("thurvsa") and [lun.number for lun in loop.luns] == [0, 5]
    (sub,) = st.nvme_subsystems
    assert [ns.nsid for ns in sub.namespaces] == [1, 6]
    naa = thin_disk_identity(SERIALS[0]).naa().hex()
    assert naa.startswith("6") and len(naa) == 32
    assert sub.namespaces[0].device_path == f"/dev/disk/by-id/wwn-0x{naa}"
    assert sub.namespaces[1].loop is not None and sub.namespaces[1].loop.lun == 5
    assert sub.allowed_hosts == (HOST,) and st.nvme_hosts[0].dhchap_key == key
    assert [str(p) for p in sub.ports] == ["127.0.0.1:4420"]
    # identities derive from stable names: the same on every start, unique per volume
    again = build_target_state(cfg, exports()).nvme_subsystems[0]
    assert again == sub
    assert sub.namespaces[0].device_nguid != sub.namespaces[1].device_nguid


def test_both_transports_and_unexport_hides_lun_and_namespace() -> None:
    cfg = config(transport=["iscsi", "nvmetcp"])
    st = build_target_state(cfg, exports(), unexported=("v1",))
    assert [lun.number for lun in st.iscsi_targets[0].luns] == [0]
    assert [lun.number for lun in st.loopback_targets[0].luns] == [0]
    assert [ns.nsid for ns in st.nvme_subsystems[0].namespaces] == [1]
    assert len(st.backstores) == 2  # the backstore stays until its handler stopped
    assert st.nvme_subsystems[0].allowed_hosts == ()  # any host
    labels = {n.key.kind.label for n in desired_nodes(st)}
    assert {"nvmet_subsystem", "nvmet_namespace", "nvmet_port", "nvmet_port_subsystem",
            "loop_lun", "iscsi_lun"} <= labels


def test_tcp_connections_counted_on_our_ports(tmp_path: Path) -> None:
    head = "  sl  local_address rem_address   st tx_queue rx_queue\n"
    (tmp_path / "tcp").write_text(
        head
        + "   0: 0100007F:1144 00000000:0000 0A 0\n"     # listening on 4420
        + "   1: 0100007F:1144 0100007F:D431 01 0\n"     # established to 4420
        + "   2: 0100007F:D431 0100007F:1144 01 0\n"     # the host's end: not ours
        + "   3: 0100007F:0CBC 0100007F:D432 01 0\n")    # iSCSI 3260
    (tmp_path / "tcp6").write_text(
        head + "   0: 00000000000000000000000001000000:1144 "
               "00000000000000000000000001000000:D433 01 0\n")
    assert count_tcp_connections({4420}, tmp_path) == 2
    assert count_tcp_connections({4421}, tmp_path) == 0
    (tmp_path / "tcp").write_text(head + "   0: 0100007F:zz 0100007F:D431 01 0\n")
    assert count_tcp_connections({4420}, tmp_path) is None  # unreadable: cannot tell
    assert count_tcp_connections({4420}, tmp_path / "missing") == 0
