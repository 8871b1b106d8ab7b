"""ldap3 connections for the directory adapter: verified TLS (ldaps://, or StartTLS before the
bind on ldap://), a small pool used from worker threads (a stale pooled connection is retried
once on a fresh one), and what a refusal means."""

from __future__ import annotations

import asyncio
import math
import queue
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import ldap3
from ldap3.core import exceptions as ldap_exc

from provisioning.directory.entries import TEMPORARY_RESULTS, DirectoryConfig, bind_refusal_hint
from provisioning.errors import DirectoryError, DirectoryUnavailable

T = TypeVar("T")


class _VerifiedTls(ldap3.Tls):  # type: ignore[misc]
    """ldap3's TLS settings, verifying through a standard ``SSLContext``: certificate chain and
    host name during the handshake. (ldap3 checks host names with ``ssl.match_hostname``,
    deprecated since Python 3.7 and removed in 3.12.)"""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


def _close_quietly(conn: ldap3.Connection) -> None:
    """Close a connection whose socket may be half-open or gone, without raising."""
    try:
        conn.unbind()
    except Exception:  # noqa: S110 - nothing more to do with a dead socket
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def _starttls_refused(url: str, result: dict[str, Any] | None) -> str:
    what = (result or {}).get("description") or "no answer"
    detail = (result or {}).get("message")
    return (
        f"directory {url} refused StartTLS: {what}{f' ({detail})' if detail else ''}; it "
        "offers no TLS on this port (use ldaps://, or enable TLS on the directory)"
    )


def check_result(conn: ldap3.Connection, ok: bool, what: str) -> None:
    """Nothing if ``ok``; else DirectoryUnavailable (try later) or DirectoryError (refused)."""
    if ok:
        return
    code = conn.result.get("result")
    if code in TEMPORARY_RESULTS or code is None:
        raise DirectoryUnavailable(f"directory could not {what}: {conn.result.get('description')}")
    raise DirectoryError(
        f"directory refused to {what}: {conn.result.get('description')} "
        f"({conn.result.get('message') or 'no detail'})"
    )


class ConnectionPool:
    """Up to ``config.pool_size`` ldap3 connections bound as the service, opened lazily."""

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config
        self._ssl: ssl.SSLContext | None = None
        self._pool: queue.LifoQueue[ldap3.Connection | None] = queue.LifoQueue()
        # Set by close(): a connection that a worker thread still holds then is closed when
        # it comes back instead of being pooled (a cancelled caller's thread runs on, and its
        # connection would otherwise outlive the pool, unclosed).
        self._closed = False
        self._closing = threading.Lock()
        for _ in range(config.pool_size):
            self._pool.put(None)  # connections are opened lazily

    def server(self) -> ldap3.Server:
        """The directory server as ldap3 sees it. TLS (ldaps://, or StartTLS) always verifies
        the certificate and the host name (ldap3 alone would accept any certificate), against
        ``ca_file`` when it is set."""
        return ldap3.Server(
            self.config.url,
            connect_timeout=self.config.timeout,
            get_info=ldap3.NONE,
            tls=_VerifiedTls(self.ssl_context()),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same verification for bulk additions (``ldapwire``). Made once: loading the
        CA certificates costs tens of milliseconds, and every new connection and every bulk
        addition asks for it (a context is safe to share between threads)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self.config.ca_file or None)
        return self._ssl

    def _open(self, user: str, password: str) -> ldap3.Connection:
        """A connection to the directory, not yet bound; with ``starttls`` already under TLS.

        Raises DirectoryUnavailable if the directory is unreachable, refuses StartTLS or shows
        a certificate that does not verify: no bind is ever sent in clear text instead.
        """
        conn = ldap3.Connection(
            self.server(),
            user=user,
            password=password,
            receive_timeout=max(1, math.ceil(self.config.timeout)),  # ldap3 packs it as an int
            raise_exceptions=False,
            auto_referrals=False,
        )
        if not self.config.starttls:
            return conn  # bind() opens the connection (TLS from the start with ldaps://)
        url = self.config.url
        try:
            conn.open(read_server_info=False)
            started = conn.start_tls(read_server_info=False)
        except ldap_exc.LDAPStartTLSError as exc:
            _close_quietly(conn)
            code = conn.result.get("result") if conn.result else None
            if code not in (0, None):  # the directory answered StartTLS with an error
                raise DirectoryUnavailable(_starttls_refused(url, conn.result)) from exc
            detail = str(exc.args[0] if exc.args else exc).removeprefix("wrap socket error: ")
            raise DirectoryUnavailable(f"directory {url}: TLS handshake failed: {detail}") from exc
        except (ldap_exc.LDAPException, OSError) as exc:
            _close_quietly(conn)
            raise DirectoryUnavailable(f"directory {url} unreachable: {exc}") from exc
        if not (started and conn.tls_started):
            _close_quietly(conn)
            raise DirectoryUnavailable(_starttls_refused(url, conn.result))
        return conn

    def _connect(self) -> ldap3.Connection:
        conn = self._open(self.config.bind_dn, self.config.bind_password)
        try:
            ok = conn.bind()
        except ldap_exc.LDAPException as exc:
            _close_quietly(conn)
            raise DirectoryUnavailable(f"directory {self.config.url} unreachable: {exc}") from exc
        if not ok:
            _close_quietly(conn)
            code = conn.result.get("result")
            if code in TEMPORARY_RESULTS:
                raise DirectoryUnavailable(f"directory {self.config.url} busy: {conn.result}")
            raise DirectoryError(
                f"directory {self.config.url} refused the bind as {self.config.bind_dn}: "
                f"{conn.result.get('description')}; {bind_refusal_hint(code)}"
            )
        return conn

    def _discard(self, conn: ldap3.Connection | None) -> None:
        if conn is not None:
            _close_quietly(conn)
        self._pool.put(None)

    def _give_back(self, conn: ldap3.Connection | None) -> None:
        with self._closing:
            if not self._closed:
                self._pool.put(conn)
                return
        self._discard(conn)

    def _call(self, fn: Callable[[ldap3.Connection], T]) -> T:
        # A pooled connection may have gone stale (server restarted): on a communication error
        # with a reused connection, try once more on a fresh one before calling it unavailable.
        for attempt in (1, 2):
            conn = self._pool.get()
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect()
                result = fn(conn)
            except (
                ldap_exc.LDAPCommunicationError,
                ldap_exc.LDAPResponseTimeoutError,
                OSError,
            ) as exc:
                self._discard(conn)
                if (
                    reused
                    and attempt == 1
                    and not isinstance(exc, ldap_exc.LDAPResponseTimeoutError)
                ):
                    continue
                raise DirectoryUnavailable(
                    f"directory {self.config.url} unreachable: {exc}"
                ) from exc
            except DirectoryUnavailable:
                self._discard(conn)
                raise
            except BaseException:
                self._give_back(conn)
                raise
            self._give_back(conn)
            return result
        raise AssertionError("unreachable")

    async def run(self, fn: Callable[[ldap3.Connection], T]) -> T:
        """``fn`` on a pooled connection, in a worker thread."""
        return await asyncio.to_thread(self._call, fn)

    def bind_as(self, dn: str, password: str) -> bool:
        """Whether ``dn`` binds with ``password``, on a connection of its own (blocking)."""
        conn = self._open(dn, password)
        try:
            ok = bool(conn.bind())
            code = conn.result.get("result") if conn.result else None
        except ldap_exc.LDAPException as exc:
            raise DirectoryUnavailable(f"directory {self.config.url} unreachable: {exc}") from exc
        finally:
            _close_quietly(conn)
        if not ok and code in TEMPORARY_RESULTS:
            raise DirectoryUnavailable(f"directory {self.config.url} busy")
        return ok

    async def close(self) -> None:
        """Close the pooled connections; one still in use is closed when its call ends. Calls
        made after this still work, each on a connection of its own that it closes."""

        def close_all() -> None:
            with self._closing:
                self._closed = True
                pooled = []
                while True:
                    try:
                        pooled.append(self._pool.get_nowait())
                    except queue.Empty:
                        break
                for _ in pooled:  # still usable: each later call opens and closes its own
                    self._pool.put(None)
            for conn in pooled:
                if conn is not None:
                    _close_quietly(conn)

        await asyncio.to_thread(close_all)
