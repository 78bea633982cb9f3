"""nvmet desired state: NQNs, DHHC-1 secrets, namespaces, ports and how a TargetState
ties them to hosts and loopback LUNs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from configfs import (
    LoopbackTarget,
    LoopRef,
    NvmeHost,
    NvmeNamespace,
    NvmePort,
    NvmeSubsystem,
    StateError,
    TargetState,
    UserBackstore,
    check_dhchap_secret,
    check_nqn,
    make_dhchap_secret,
)

NQN = "nqn.2026-11.io.thur:vsa"
HOST = "nqn.2014-08.org.nvmexpress:uuid:8cc79367-1198-4576-b8e0-6862a4f558ef"
# printed by `nvme gen-dhchap-key` (nvme-cli 2.13) in the test VM
CLI_KEYS = ("DHHC-1:00:JVUvfkHalXYDfb55KP6AwwdzUPOgMtQiN9gjZsDRHKSy6qnS:",
            "DHHC-1:01:k8zSIsHLMK5dEC5GpkWQl1sdT+IZJxzAVIpCv0X2GeRBn/Yj:")
U = "7d3f2b1c-0000-4000-8000-000000000001"
WWN = "naa.5001405aaaaaaaaa"


@pytest.mark.parametrize("value", [NQN, HOST, "nqn.2014-08.org.nvmexpress.discovery:x",
                                   "nqn.2026-11.com.Example:Disk_1"])
def test_good_nqns(value: str) -> None:
    check_nqn(value, "x")


@pytest.mark.parametrize("value", ["iqn.2026-11.io.thur:vsa", "nqn.2026-13.io.thur:x",
                                   "nqn.2026-11.io.thur", "nqn.2026-11.io.thur:a b",
                                   "nqn.2026-11.io.thur:a/b", "nqn.2026-11.io.thur:" + "x" * 220,
                                   None])
def test_bad_nqns(value: object) -> None:
    with pytest.raises(StateError, match="^x: "):
        check_nqn(value, "x")


def test_nvme_cli_keys_validate_and_ours_round_trip() -> None:
    for key in CLI_KEYS:
        check_dhchap_secret(key, "k")
    for size in (32, 48, 64):
        secret = make_dhchap_secret(bytes(size), 3)
        check_dhchap_secret(secret, "k")
        assert secret.startswith("DHHC-1:03:") and secret.endswith(":")
        assert base64.b64decode(secret.split(":")[2])[:size] == bytes(size)
    with pytest.raises(ValueError):
        make_dhchap_secret(bytes(16))


@pytest.mark.parametrize(("value", "why"), [
    ("hunter2", "must be a DHHC-1 secret"),
    ("DHHC-1:04:" + CLI_KEYS[0][10:], "must be a DHHC-1 secret"),
    (CLI_KEYS[0][:-2] + "T:", "CRC-32 does not match"),
    ("DHHC-1:00:" + base64.b64encode(bytes(20)).decode() + ":", "must be 32, 48 or 64"),
    ("DHHC-1:00:!!!!:", "must be a DHHC-1 secret"),
])
def test_bad_secrets_are_explained_without_echo(value: str, why: str) -> None:
    with pytest.raises(StateError, match=why) as err:
        check_dhchap_secret(value, "k")
    assert value not in str(err.value)


def test_host_rules() -> None:
    NvmeHost(nqn=HOST)
    NvmeHost(nqn=HOST, dhchap_key=CLI_KEYS[0], dhchap_ctrl_key=CLI_KEYS[1])
    assert CLI_KEYS[0] not in repr(NvmeHost(nqn=HOST, dhchap_key=CLI_KEYS[0]))
    with pytest.raises(StateError, match="needs dhchap_key"):
        NvmeHost(nqn=HOST, dhchap_ctrl_key=CLI_KEYS[1])
    with pytest.raises(StateError, match="must differ"):
        NvmeHost(nqn=HOST, dhchap_key=CLI_KEYS[0], dhchap_ctrl_key=CLI_KEYS[0])
    with pytest.raises(StateError, match="dhchap_hash"):
        NvmeHost(nqn=HOST, dhchap_hash="sha1")
    with pytest.raises(StateError, match="dhchap_dhgroup"):
        NvmeHost(nqn=HOST, dhchap_dhgroup="modp")


def test_namespace_and_port_rules() -> None:
    ns = NvmeNamespace(nsid=1, device_path="/dev/sdb", device_uuid=U.upper(),
                       device_nguid=U.replace("-", ""))
    assert ns.device_uuid == U and ns.device_nguid == U  # canonical, as the kernel shows it
    for bad in ({"nsid": 0}, {"nsid": 0xFFFFFFFF}, {"device_path": "sdb"},
                {"device_uuid": "nope"}):
        with pytest.raises(StateError):
            NvmeNamespace(**{"nsid": 1, "device_path": "/dev/sdb", "device_uuid": U,
                             "device_nguid": U, **bad})  # type: ignore[arg-type]
    port = NvmePort(traddr="[::1]", trsvcid=4420, tls=True)
    assert (port.traddr, port.adrfam, port.tsas, str(port)) == ("::1", "ipv6", "tls1.3",
                                                                 "[::1]:4420")
    assert NvmePort(traddr="0.0.0.0").tsas == "none"
    with pytest.raises(StateError):
        NvmePort(traddr="localhost")
    with pytest.raises(StateError):
        NvmePort(traddr="127.0.0.1", trsvcid=0)


def test_subsystem_rules() -> None:
    ns = NvmeNamespace(nsid=1, device_path="/dev/sdb", device_uuid=U, device_nguid=U)
    with pytest.raises(StateError, match="duplicate nsid"):
        NvmeSubsystem(nqn=NQN, serial="1", namespaces=[ns, ns])
    with pytest.raises(StateError, match="serial"):
        NvmeSubsystem(nqn=NQN, serial="x" * 21)
    with pytest.raises(StateError, match="duplicate port"):
        NvmeSubsystem(nqn=NQN, serial="1", ports=[NvmePort(traddr="127.0.0.1")] * 2)


def test_state_ties_hosts_and_loop_luns() -> None:
    bs = UserBackstore(name="b", dev_config="thur/b", size_bytes=1 << 20, wwn_serial="s",
                       hw_block_size=4096, hw_max_sectors=256)
    loop = LoopbackTarget(wwn=WWN, luns=((0, "b"),))
    ns = NvmeNamespace(nsid=1, device_path="/dev/x", device_uuid=U, device_nguid=U,
                       loop=LoopRef(WWN, 0))
    sub = NvmeSubsystem(nqn=NQN, serial="1", namespaces=(ns,), allowed_hosts=(HOST,))
    TargetState(db_root=Path("/d"), backstores=(bs,), loopback_targets=(loop,),
                nvme_hosts=(NvmeHost(nqn=HOST),), nvme_subsystems=(sub,))
    with pytest.raises(StateError, match="not one of nvme_hosts"):
        TargetState(db_root=Path("/d"), backstores=(bs,), loopback_targets=(loop,),
                    nvme_subsystems=(sub,))
    with pytest.raises(StateError, match="loopback LUN"):
        TargetState(db_root=Path("/d"), nvme_hosts=(NvmeHost(nqn=HOST),),
                    nvme_subsystems=(sub,))
    a = NvmeSubsystem(nqn=NQN, serial="1", ports=(NvmePort(traddr="127.0.0.1"),))
    b = NvmeSubsystem(nqn=NQN + "2", serial="1",
                      ports=(NvmePort(traddr="127.0.0.1", tls=True),))
    with pytest.raises(StateError, match="with and without TLS"):
        TargetState(db_root=Path("/d"), nvme_subsystems=(a, b))
