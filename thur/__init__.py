"""Thur: the products (config, storage engine, tape and volume models, daemons, CLIs)."""
