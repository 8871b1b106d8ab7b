"""ldap3 TLS for the stack's own LDAPS checks, verified by a standard ``SSLContext`` during the
handshake (certificate chain and host name). ldap3's own host name check calls
``ssl.match_hostname``, deprecated since Python 3.7 and gone in 3.12. Imported only where an
LDAPS check is made: ldap3 is slow to import."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import ldap3


class VerifiedTls(ldap3.Tls):  # type: ignore[misc]
    def __init__(self, ca_file: Path) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        # A failed handshake closes the socket (ssl does), so nothing is left open.
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )
