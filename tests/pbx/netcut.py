"""A TCP relay between the daemon and Asterisk's AMI that a test can cut: a network outage
without stopping either process (Asterisk keeps its calls, the daemon keeps running)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class AmiRelay:
    target_port: int
    listener: socket.socket = field(init=False)
    port: int = field(init=False)
    _open: list[socket.socket] = field(default_factory=list)
    _refuse_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: bool = False
    # cut_on(): bytes that cut the line once they have gone through to the daemon, and for how long
    _trigger: tuple[bytes, float] | None = None

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, name="ami-relay", daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                client.close()  # the daemon's reconnect attempts fail while the line is down
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, a is upstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_daemon: bool) -> None:
        tail = b""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                trigger = self._trigger
                if to_daemon and trigger is not None and trigger[0] in tail + data:
                    self._trigger = None
                    self.cut(trigger[1])
                    return
                tail = data[-256:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self, for_s: float) -> None:
        """Drop every relayed connection and refuse new ones for `for_s` seconds."""
        self._refuse_until = time.monotonic() + for_s
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut_on(self, marker: bytes, for_s: float) -> None:
        """Cut (as `cut`) right after the first bytes from Asterisk holding `marker` reached the
        daemon: an outage at a given point of a call, not at a given time."""
        self._trigger = (marker, for_s)

    def close(self) -> None:
        self._closing = True
        self.cut(0)
        self.listener.close()
