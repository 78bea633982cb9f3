"""Build a backend from its kind and options (what the config file holds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .azure import AzureBackend, AzureOptions
from .backend import Backend
from .gcs import GcsBackend, GcsOptions
from .local import LocalBackend
from .s3 import S3Backend, S3Options

KINDS = ("local", "s3", "gcs", "azure")


def open_backend(kind: str, options: Mapping[str, Any]) -> Backend:
    """`local` takes `path` (and `fsync`); the others take their *Options fields.

    Unknown option names raise TypeError, so a typo in the config is loud.
    """
    opts = dict(options)
    if kind == "local":
        return LocalBackend(opts.pop("path"), **opts)
    if kind == "s3":
        return S3Backend(S3Options(**opts))
    if kind == "gcs":
        return GcsBackend(GcsOptions(**opts))
    if kind == "azure":
        return AzureBackend(AzureOptions(**opts))
    raise ValueError(f"unknown backend kind {kind!r}; expected one of {', '.join(KINDS)}")
