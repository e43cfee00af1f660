"""The embedded MQTT broker (amqtt) for the zero-install demo and `mqtt: {url: embedded}`.

amqtt is about 6-7x slower than Mosquitto and speaks MQTT 3.1.1 only: it is for the demo and small
sites; use Mosquitto or EMQX for real installations. amqtt 0.12 must be created inside a running
event loop, and a configured ``plugins`` section must include an authentication plugin or every
CONNECT is refused.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

log = logging.getLogger("bafang.broker")


class OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Accepts every client without marking it anonymous.

    amqtt's AnonymousAuthPlugin flags sessions anonymous, and amqtt then drops their queued QoS 1
    messages while they are away: our persistent session would lose messages across a reconnect.
    The embedded broker listens on the loopback interface by default.
    """

    @dataclass
    class Config:
        """No options."""

    async def authenticate(self, *, session: Any) -> bool:
        """Accept the client."""
        return True


def _bindable(host: str, port: int) -> bool:
    # Probed here because amqtt logs a traceback when its own bind fails.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedBroker:
    """An in-process MQTT 3.1.1 broker on a free (or the requested) TCP port."""

    def __init__(self) -> None:
        self._broker: Broker | None = None
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start listening and return the bound port; a busy requested port falls back to a free one."""
        if self._broker is not None:
            raise RuntimeError("embedded broker already started")
        if port != 0 and not _bindable(host, port):
            log.warning(
                "embedded broker: port %s:%d is in use (another broker?); using a free port", host, port
            )
            port = 0
        try:
            broker = await self._start(host, port)
        except OSError as exc:  # lost a race for the port since the probe
            if port == 0 or exc.errno != errno.EADDRINUSE:
                raise
            log.warning(
                "embedded broker: port %s:%d is in use (another broker?); using a free port", host, port
            )
            broker = await self._start(host, 0)
        self._broker = broker
        self.host = host
        # amqtt does not expose the bound address; port 0 needs it read from the server socket.
        server = broker._servers["default"].instance
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d", host, self.port)
        return self.port

    @staticmethod
    async def _start(host: str, port: int) -> Broker:
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            # Sessions of clients that stay away are kept a week, like MqttBroker.session_expiry.
            "session_expiry_interval": 7 * 86400,
            "plugins": {f"{__name__}.OpenAuthPlugin": {}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:
            # amqtt wraps the bind error in BrokerError; unwrap it so callers see the OSError.
            cause = exc.__cause__
            if isinstance(cause, OSError):
                raise cause from exc
            raise
        return broker

    async def stop(self) -> None:
        """Close every session and the listener."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
