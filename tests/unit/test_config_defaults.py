"""`config defaults` is generated from the loader's own schema and loads back unchanged."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from thur.config import VtlConfig, parse_vtl_config
from thur.config_schema import VSA_SCHEMA, VTL_SCHEMA, Section, render
from thur.configkit import ConfigError
from thur.vsa import cli as vsa_cli
from thur.vsa.config import VsaConfig, parse_vsa_config
from thur.vtl import cli as vtl_cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"

PRODUCTS = [
    pytest.param("thurvtl", VTL_SCHEMA, parse_vtl_config, vtl_cli.main,
                 VtlConfig(data_dir=Path("/var/lib/thurvtl")), id="thurvtl"),
    pytest.param("thurvsa", VSA_SCHEMA, parse_vsa_config, vsa_cli.main,
                 VsaConfig(data_dir=Path("/var/lib/thurvsa")), id="thurvsa"),
]
Parse = Callable[[object], Any]


def _minimal(product: str) -> dict[str, Any]:
    top: dict[str, Any] = {"data_dir": f"/var/lib/{product}"}
    if product == "thurvtl":
        top["library"] = {}
    return top


@pytest.mark.parametrize(("product", "schema", "parse", "main", "built_in"), PRODUCTS)
def test_defaults_output_loads_back_to_the_built_in_defaults(
    product: str, schema: Section, parse: Parse, main: Callable[[list[str]], int],
    built_in: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    assert main(["config", "defaults"]) == 0
    text = capsys.readouterr().out
    assert text == render(schema, product)
    loaded = yaml.safe_load(text)
    # Every key is written out, with exactly the value the schema holds...
    assert loaded == schema.defaults()
    # ...and loading it gives the same config as a minimal file and as the dataclasses'
    # own defaults: the printed reference, the loader and the code agree.
    assert parse(loaded) == parse(_minimal(product)) == built_in
    # The daemon's own file check accepts it too.
    path = tmp_path / f"{product}.yaml"
    path.write_text(text)
    assert main(["config", "check", "--config", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize(("product", "schema", "parse", "main", "built_in"), PRODUCTS)
def test_every_line_has_a_meaning(
    product: str, schema: Section, parse: Parse, main: Any, built_in: Any
) -> None:
    for line in render(schema, product).splitlines():
        stripped = line.lstrip("# ")
        if ":" in stripped and not stripped.startswith(("kind:", "Other kinds", "Keys", "thur")):
            assert " # " in line, f"no meaning on: {line!r}"


@pytest.mark.parametrize(("product", "schema", "parse", "main", "built_in"), PRODUCTS)
def test_unknown_key_in_any_section_is_named(
    product: str, schema: Section, parse: Parse, main: Any, built_in: Any
) -> None:
    def sections(section: Section, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        out = [path]
        for key in section.keys:
            if isinstance(key, Section):
                out += sections(key, (*path, key.name))
        return out

    for path in sections(schema, ()):
        raw = copy.deepcopy(schema.defaults())
        where = raw
        for name in path:
            where = where[name]
        where["surprise"] = 1
        with pytest.raises(ConfigError) as err:
            parse(raw)
        assert err.value.key == ".".join((*path, "surprise"))


@pytest.mark.parametrize(("product", "schema", "parse", "main", "built_in"), PRODUCTS)
def test_check_names_the_bad_key(
    product: str, schema: Section, parse: Parse, main: Callable[[list[str]], int],
    built_in: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**_minimal(product), "pool": {"compression": "gzip"}}))
    assert main(["config", "check", "--config", str(path)]) == 2
    assert "'pool.compression': 'gzip'" in capsys.readouterr().err


def test_docs_catalogue_every_key() -> None:
    text = DOCS.read_text()
    for schema in (VTL_SCHEMA, VSA_SCHEMA):
        for path in schema.paths():
            last = path.rsplit(".", 1)[-1]
            assert f"`{path}`" in text or re.search(rf"`{re.escape(last)}`", text), path
