"""The ring tests' shared parts: CDB builders, a stub engine and one served pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from handlers.scsi.engine import Response
from handlers.tcmu.fake_kernel import Completion, FakeKernel
from handlers.tcmu.ring import Ring

TUR = bytes(6)
HW_ERROR_44 = (0x04, 0x44, 0x00)
WRITE_OPS = {0x0A, 0x2A, 0x8A}


def write6(n: int) -> bytes:
    return bytes([0x0A, 0, n >> 16 & 0xFF, n >> 8 & 0xFF, n & 0xFF, 0])


def read6(n: int) -> bytes:
    return bytes([0x08, 0, n >> 16 & 0xFF, n >> 8 & 0xFF, n & 0xFF, 0])


def sense_key(sense: bytes) -> tuple[int, int, int]:
    return sense[2] & 0x0F, sense[12], sense[13]


class StubEngine:
    """Writes (0Ah/2Ah/8Ah) carry data-out; reads answer `read_data`; `handler` overrides."""

    def __init__(self, handler: Callable[[bytes, memoryview | None], Response] | None = None):
        self.calls: list[tuple[bytes, bytes | None]] = []
        self.handler = handler
        self.read_data = b""

    def wants_data_out(self, cdb: bytes) -> bool:
        return bool(cdb) and cdb[0] in WRITE_OPS

    def execute(self, cdb: bytes, data_out: memoryview | None) -> Response:
        self.calls.append((cdb, None if data_out is None else bytes(data_out)))
        if self.handler is not None:
            return self.handler(cdb, data_out)
        if cdb[0] == 0x08:
            return Response(data=self.read_data)
        return Response()


def small_kernel() -> Iterator[FakeKernel]:
    """The `fake` fixture of both ring test modules: a 4 KiB command ring, 64 data blocks."""
    kernel = FakeKernel(cmdr_size=4096 - 128, data_blocks=64, block_size=512)
    yield kernel
    kernel.close()


def serve(fake: FakeKernel, engine: StubEngine, **kw: object) -> tuple[Ring, dict[int, Completion]]:
    ring = Ring(fake.map, engine, **kw)  # type: ignore[arg-type]
    ring.process()
    done = fake.completions()
    ring.close()
    return ring, done
