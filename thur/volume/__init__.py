"""Thin volumes: the `Volume` contract (protocol.py) and its errors; the pool-backed
implementation lands separately."""
