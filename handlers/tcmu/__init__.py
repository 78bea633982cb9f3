"""The TCMU ring: cffi over the kernel UAPI, device discovery, the command loop."""

from handlers.tcmu.device import (
    DeviceBusy,
    DeviceGone,
    DeviceNotFound,
    Doorbell,
    FdDoorbell,
    TcmuDevice,
    UioDevice,
    find_tcmu_device,
    list_tcmu_devices,
    parse_uio_name,
)
from handlers.tcmu.fake_kernel import Completion, FakeKernel, HandlerBug, RingFull
from handlers.tcmu.ring import CommandListener, Ring, RingError, RingStats, TmrListener
from handlers.tcmu.uapi import TcmuTmr

__all__ = [
    "CommandListener",
    "Completion",
    "DeviceBusy",
    "DeviceGone",
    "DeviceNotFound",
    "Doorbell",
    "FakeKernel",
    "FdDoorbell",
    "HandlerBug",
    "Ring",
    "RingError",
    "RingFull",
    "RingStats",
    "TcmuDevice",
    "TcmuTmr",
    "TmrListener",
    "UioDevice",
    "find_tcmu_device",
    "list_tcmu_devices",
    "parse_uio_name",
]
