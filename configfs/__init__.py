"""Kernel target orchestration: desired state in, idempotent apply and exact teardown."""
