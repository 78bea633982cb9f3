"""Thur VTL: the tape library daemon (thurvtld) and its CLI (thurvtl)."""
