"""Health for orchestrators: a file that exists, and an HTTP ``/healthz``
that answers 200, while the worker has a stream to the leader (or lost it
less than ``unhealthy_after`` seconds ago); the file is removed and the
endpoint answers 503 otherwise."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Optional, Tuple


class Health:
    """Tracks whether the worker has had a stream recently, and publishes it."""

    def __init__(self, unhealthy_after: float, path: Optional[str], port: Optional[int]) -> None:
        self.unhealthy_after = unhealthy_after
        self.path = path
        self.port = port
        #: Whether a stream is up now, and since when it has been down.
        self.up = False
        self.down_since = time.monotonic()
        self._server: Optional[asyncio.AbstractServer] = None
        self._written = 0.0

    def stream_up(self) -> None:
        self.up = True

    def stream_down(self) -> None:
        if self.up:
            self.up = False
            self.down_since = time.monotonic()

    def status(self) -> Tuple[bool, str]:
        """(healthy, why)."""
        if self.up:
            return True, "ok: connected"
        down = time.monotonic() - self.down_since
        if down < self.unhealthy_after:
            return True, f"ok: reconnecting for {down:.1f}s"
        return False, f"unhealthy: no stream for {down:.1f}s"

    async def start(self) -> Optional[int]:
        """Start the HTTP endpoint if a port was given; returns the bound port."""
        if self.port is None:
            return None
        self._server = await asyncio.start_server(self._serve, "0.0.0.0", self.port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readline(), 2)
            ok, why = self.status()
            body = (why + "\n").encode()
            head = f"HTTP/1.1 {'200 OK' if ok else '503 Service Unavailable'}\r\n"
            head += f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def publish(self) -> None:
        """Write (at most once a second) or remove the health file."""
        if self.path is None:
            return
        ok, why = self.status()
        if ok:
            now = time.monotonic()
            if now - self._written >= 1.0:
                tmp = f"{self.path}.tmp"
                with open(tmp, "w") as f:
                    f.write(f"{why} at {time.time():.0f}\n")
                os.replace(tmp, self.path)
                self._written = now
        else:
            self._remove()

    def _remove(self) -> None:
        self._written = 0.0
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def stop(self) -> None:
        self._remove()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


