"""Thur VSA: thin SBC-3 volumes served through LIO + TCMU (thurvsad, thurvsa)."""
