"""Collectors: one module per protocol, each handing readings and errors to one Sink."""
