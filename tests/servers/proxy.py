"""A TCP proxy that can sever a connection after a given number of server->client bytes.

Typical use, to cut an IMAP connection in the middle of a FETCH:

    with CuttingTcpProxy(dovecot.host, dovecot.port) as proxy:
        client = IMAPClient(proxy.host, proxy.port, ssl=False)
        client.login(...); client.select_folder("INBOX")
        proxy.cut_after(500)           # counts from now, on every open connection
        client.fetch([uid], ["BODY.PEEK[]"])   # raises: the connection is reset mid-literal

The cut is abrupt: both sockets are closed with SO_LINGER 0, so both peers get a TCP RST
rather than an orderly FIN, like a dropped NAT entry or a crashed server. Data already
forwarded stays readable by the client before the reset (Linux delivers queued data first).
"""

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from .common import LOCALHOST, ManagedServer, register_running, unregister_running

_BUFFER = 65536


@dataclass
class _Arm:
    limit: int
    persistent: bool


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    upstream: socket.socket
    since_arm: int = 0  # server->client bytes since the proxy was last armed
    aborted: bool = False
    open_pumps: int = 2
    lock: threading.Lock = field(default_factory=threading.Lock)


def _arm_reset(sock: socket.socket) -> None:
    """Make the coming close() send a TCP RST, and wake up a thread blocked in recv() on it.

    SHUT_RD wakes the reader without sending anything to the peer. The socket itself is
    closed by the last pump thread: closing it under a thread still using its fd number
    could make that thread read from an unrelated socket that reused the number.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


class CuttingTcpProxy(ManagedServer):
    def __init__(
        self,
        target_host: str | tuple[str, int],
        target_port: int | None = None,
        *,
        host: str = LOCALHOST,
        port: int = 0,
    ) -> None:
        """Forward 127.0.0.1:`port` (0: a free one) to the target, given as (host, port) or host, port."""
        if isinstance(target_host, tuple):
            self.target = target_host
        else:
            if target_port is None:
                raise TypeError("CuttingTcpProxy needs a target port")
            self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.bytes_to_client = 0
        self.bytes_to_server = 0
        self.connections_accepted = 0
        # Command lines the clients sent that end in " IDLE" (RFC 2177), over all connections:
        # counts what really went over the wire, renewals included.
        self.idle_commands = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._arm: _Arm | None = None
        self._connections: set[_Connection] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._cut_happened = threading.Event()

    # -- control -----------------------------------------------------------------------------

    def cut_after(self, k: int, *, persistent: bool = False) -> None:
        """Reset the connection once `k` more bytes went server->client.

        Counting starts now for open connections and at accept for new ones. One-shot by
        default: the first connection reaching `k` is cut and the proxy disarms itself;
        with persistent=True every connection is cut after `k` bytes until `disarm()`.
        """
        with self._lock:
            self._arm = _Arm(k, persistent)
            self._cut_happened.clear()
            for conn in self._connections:
                conn.since_arm = 0

    def disarm(self) -> None:
        with self._lock:
            self._arm = None

    def wait_for_cut(self, timeout: float = 10.0) -> bool:
        return self._cut_happened.wait(timeout)

    def drop_all(self) -> None:
        """Reset every open connection now (new ones are still accepted)."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            self._abort(conn)

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        if self._listener is not None:
            return
        started = time.monotonic()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        # accept() is polled so that stop() doesn't depend on closing a socket under a thread.
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._spawn(self._accept_loop, "accept")
        register_running(self)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self._listener is None:
            return
        self._stopping.set()
        self.drop_all()
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(5)
        self._listener.close()
        self._listener = None
        unregister_running(self)

    # -- forwarding --------------------------------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"proxy-{self.port}-{name}", daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stopping.is_set():
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _arm_reset(client)  # the target is down: the client sees a reset, as it would
                client.close()
                continue
            upstream.settimeout(None)
            conn = _Connection(client, upstream)
            with self._lock:
                self.connections_accepted += 1
                self._connections.add(conn)
            self._spawn(self._pump, "up", conn, client, upstream, False)
            self._spawn(self._pump, "down", conn, upstream, client, True)

    def _pump(self, conn: _Connection, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        try:
            while True:
                data = src.recv(_BUFFER)
                if conn.aborted:
                    # Linux still delivers bytes that arrive after SHUT_RD: an aborted connection
                    # must not forward them (a NOOP sent after drop_all() got its answer).
                    return
                if not data:
                    # Orderly EOF: pass the half-close on, the other direction may go on.
                    if not conn.aborted:
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                    return
                if to_client:
                    data, cut = self._take_to_client(conn, data)
                    if data:
                        dst.sendall(data)
                    if cut:
                        self._abort(conn)
                        self._cut_happened.set()
                        return
                else:
                    dst.sendall(data)
                    with self._lock:
                        self.bytes_to_server += len(data)
                        # A command line arrives whole in one recv() here (loopback, short lines).
                        self.idle_commands += sum(
                            line.upper().endswith(b" IDLE") for line in data.split(b"\r\n")
                        )
        except OSError:
            # One side reset or was aborted: reset the other side too.
            self._abort(conn)
        finally:
            self._pump_done(conn)

    def _take_to_client(self, conn: _Connection, data: bytes) -> tuple[bytes, bool]:
        """The part of `data` to forward, and whether to cut the connection after it."""
        with self._lock:
            arm = self._arm
            if arm is None:
                self.bytes_to_client += len(data)
                return data, False
            remaining = max(arm.limit - conn.since_arm, 0)
            if len(data) < remaining:
                conn.since_arm += len(data)
                self.bytes_to_client += len(data)
                return data, False
            if not arm.persistent:
                self._arm = None
            conn.since_arm += remaining
            self.bytes_to_client += remaining
            self.cuts += 1
            return data[:remaining], True

    def _abort(self, conn: _Connection) -> None:
        with conn.lock:
            if conn.aborted:
                return
            conn.aborted = True
        _arm_reset(conn.client)
        _arm_reset(conn.upstream)
        with self._lock:
            self._connections.discard(conn)

    def _pump_done(self, conn: _Connection) -> None:
        with conn.lock:
            conn.open_pumps -= 1
            last = conn.open_pumps == 0
        if last:
            conn.client.close()
            conn.upstream.close()
            with self._lock:
                self._connections.discard(conn)
