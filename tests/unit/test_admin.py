"""The admin socket: requests, refusals, and a clear error when nobody listens."""

from pathlib import Path

import pytest

from thur.admin import AdminError, AdminServer, call


def test_round_trip_and_errors(tmp_path: Path) -> None:
    def refuse(args: dict) -> None:
        raise AdminError(f"no {args['what']}")

    server = AdminServer(tmp_path / "a.sock", {"echo": lambda a: a, "refuse": refuse})
    server.start()
    try:
        assert call(tmp_path / "a.sock", "echo", {"x": 1}) == {"x": 1}
        with pytest.raises(AdminError, match="no cheese"):
            call(tmp_path / "a.sock", "refuse", {"what": "cheese"})
        with pytest.raises(AdminError, match="unknown verb"):
            call(tmp_path / "a.sock", "nope")
        assert (tmp_path / "a.sock").stat().st_mode & 0o777 == 0o660
    finally:
        server.close()
    with pytest.raises(AdminError, match="not running"):
        call(tmp_path / "a.sock", "echo")
