"""Ordinary trouble outside memberflow, as exceptions any command can name without loading the
servers and clients that raise them (the CLI turns each into one clear line)."""

from __future__ import annotations


class PortBusy(OSError):
    """The address is taken (or not ours to bind): says which, and the setting that moves it."""


class BrokerUnreachable(ConnectionError):
    """No Kafka broker answered at the configured address within the bound."""
