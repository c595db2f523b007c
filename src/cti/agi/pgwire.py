"""A minimal, blocking PostgreSQL client: one connection, one parameterised query, a hard deadline.

Why not asyncpg: importing it (and asyncio) costs about 150 ms, most of the AGI's 200 ms budget,
for one indexed SELECT. The frontend/backend protocol v3 subset needed here is small: startup,
authentication (trust, cleartext, MD5, SCRAM-SHA-256), optional TLS, and the extended query
protocol with text parameters, so values never travel inside the SQL text.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_PROTOCOL_3_0 = 196608
_SSL_REQUEST = 80877103


class PgError(Exception):
    """The server refused something, or spoke in a way this client does not follow."""


@dataclass(frozen=True)
class PgTarget:
    host: str  # a host name, an address, or a directory holding the Unix socket
    port: int
    user: str
    password: str
    database: str
    sslmode: str = "disable"  # disable | prefer | require (no certificate verification here)


class ScramSha256:
    """The client side of SCRAM-SHA-256 (RFC 5802 / 7677) as PostgreSQL uses it."""

    def __init__(self, password: str, username: str = "", nonce: str | None = None) -> None:
        import base64  # auth-only imports stay off the trust/no-password path

        # PostgreSQL ignores the SCRAM user name (it uses the startup message's), so "" is usual.
        self._password = password.encode("utf-8")
        self._nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        self.client_first_bare = f"n={username},r={self._nonce}"
        self._server_signature = b""

    def client_first(self) -> str:
        return "n,," + self.client_first_bare

    def client_final(self, server_first: str) -> str:
        import base64
        import hashlib
        import hmac

        fields = dict(part.split("=", 1) for part in server_first.split(","))
        server_nonce, salt, iterations = fields["r"], fields["s"], int(fields["i"])
        if not server_nonce.startswith(self._nonce):
            raise PgError("SCRAM: server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", self._password, base64.b64decode(salt), iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={server_nonce}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self._server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}"

    def verify_server_final(self, server_final: str) -> None:
        import base64
        import hmac

        expected = "v=" + base64.b64encode(self._server_signature).decode("ascii")
        if not hmac.compare_digest(server_final.strip(), expected):
            raise PgError("SCRAM: the server's signature does not match (wrong server?)")


def md5_password(user: str, password: str, salt: bytes) -> str:
    import hashlib

    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


class _Connection:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = b""

    def _arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("PostgreSQL lookup deadline passed")
        self._sock.settimeout(remaining)

    def send(self, *messages: tuple[bytes, bytes]) -> None:
        """Send (kind, payload) messages in one write: small separate writes would wait on
        Nagle's algorithm and the server's delayed ACK, about 40 ms each time."""
        self._arm()
        self._sock.sendall(
            b"".join(kind + struct.pack("!i", len(body) + 4) + body for kind, body in messages)
        )

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._arm()
            chunk = self._sock.recv(65536)
            if not chunk:
                raise PgError("PostgreSQL closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def receive(self) -> tuple[bytes, bytes]:
        header = self._read(5)
        kind, length = header[:1], struct.unpack("!i", header[1:])[0]
        body = self._read(length - 4)
        if kind == b"E":
            raise PgError(_error_text(body))
        return kind, body

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a polite goodbye; the socket closes either way
            self._sock.sendall(b"X\x00\x00\x00\x04")
        self._sock.close()


def _error_text(body: bytes) -> str:
    fields = {part[:1]: part[1:].decode("utf-8", "replace") for part in body.split(b"\x00") if part}
    return f"{fields.get(b'S', 'ERROR')} {fields.get(b'C', '')}: {fields.get(b'M', 'unknown error')}"


def _cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def _open_socket(target: PgTarget, deadline: float) -> socket.socket:
    remaining = max(deadline - time.monotonic(), 0.001)
    if target.host.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(remaining)
        sock.connect(os.path.join(target.host, f".s.PGSQL.{target.port}"))
        return sock
    family, address = _resolve(target.host, target.port, deadline)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _literal_address(host: str) -> socket.AddressFamily | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def _resolve(host: str, port: int, deadline: float) -> tuple[socket.AddressFamily, Any]:
    """getaddrinfo() ignores socket timeouts: a stuck DNS server would hold the call for
    seconds. Resolve in a daemon thread and stop waiting at the deadline."""
    family = _literal_address(host)
    if family is not None:
        return family, (host, port)
    import threading

    found: list[Any] = []

    def resolve() -> None:
        # Every failure is handed back: an exception escaping a thread is reported far from here.
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0])
        except Exception as exc:
            found.append(exc)

    worker = threading.Thread(target=resolve, daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0.0))
    if not found:
        raise TimeoutError(f"resolving {host!r} did not finish before the deadline")
    if isinstance(found[0], Exception):
        raise found[0]
    family_found, _, _, _, address = found[0]
    return family_found, address


def _maybe_tls(sock: socket.socket, target: PgTarget, deadline: float) -> socket.socket:
    if target.sslmode == "disable" or target.host.startswith("/"):
        return sock
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    sock.sendall(struct.pack("!ii", 8, _SSL_REQUEST))
    answer = sock.recv(1)
    if answer != b"S":
        if target.sslmode == "require":
            raise PgError("the server does not offer TLS and sslmode=require")
        return sock
    import ssl  # only paid for when TLS is really used

    context = ssl.create_default_context()
    # libpq's "require" encrypts without verifying the certificate; do the same.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(sock, server_hostname=target.host)


def _authenticate(conn: _Connection, target: PgTarget) -> None:
    scram: ScramSha256 | None = None
    while True:
        kind, body = conn.receive()
        if kind == b"Z":
            return
        if kind != b"R":
            continue  # ParameterStatus, BackendKeyData, notices
        code = struct.unpack("!i", body[:4])[0]
        if code == 0:
            continue
        if code == 3:
            conn.send((b"p", _cstr(target.password)))
        elif code == 5:
            conn.send((b"p", _cstr(md5_password(target.user, target.password, body[4:8]))))
        elif code == 10:
            if b"SCRAM-SHA-256\x00" not in body[4:]:
                raise PgError("the server offers no SASL mechanism this client knows")
            scram = ScramSha256(target.password)
            first = scram.client_first().encode()
            conn.send((b"p", _cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
        elif code == 11 and scram is not None:
            conn.send((b"p", scram.client_final(body[4:].decode()).encode()))
        elif code == 12 and scram is not None:
            scram.verify_server_final(body[4:].decode())
        else:
            raise PgError(f"unsupported authentication request {code}")


def _bind(params: Sequence[str]) -> bytes:
    parts = [b"\x00\x00", struct.pack("!hh", 0, len(params))]
    for value in params:
        encoded = value.encode("utf-8")
        parts.append(struct.pack("!i", len(encoded)) + encoded)
    parts.append(struct.pack("!h", 0))
    return b"".join(parts)


def _decode_row(body: bytes) -> tuple[str | None, ...]:
    count = struct.unpack("!h", body[:2])[0]
    offset = 2
    values: list[str | None] = []
    for _ in range(count):
        length = struct.unpack("!i", body[offset : offset + 4])[0]
        offset += 4
        if length < 0:
            values.append(None)
            continue
        values.append(body[offset : offset + length].decode("utf-8"))
        offset += length
    return tuple(values)


def fetch_all(
    target: PgTarget, sql: str, params: Sequence[str], deadline: float
) -> list[tuple[str | None, ...]]:
    """Rows of `sql` (placeholders $1, $2…) as text, or raise before `deadline` (time.monotonic)."""
    sock = _maybe_tls(_open_socket(target, deadline), target, deadline)
    conn = _Connection(sock, deadline)
    try:
        startup = b"".join(
            _cstr(k) + _cstr(v)
            for k, v in (
                ("user", target.user),
                ("database", target.database),
                ("application_name", "cti-agi"),
            )
        )
        payload = struct.pack("!i", _PROTOCOL_3_0) + startup + b"\x00"
        conn._arm()
        sock.sendall(struct.pack("!i", len(payload) + 4) + payload)
        _authenticate(conn, target)
        conn.send(
            (b"P", b"\x00" + _cstr(sql) + struct.pack("!h", 0)),
            (b"B", _bind(params)),
            (b"E", b"\x00" + struct.pack("!i", 0)),
            (b"S", b""),
        )
        rows: list[tuple[str | None, ...]] = []
        while True:
            kind, body = conn.receive()
            if kind == b"D":
                rows.append(_decode_row(body))
            elif kind == b"Z":
                return rows
    finally:
        conn.close()
