"""A small asyncio LDAPv3 client for bulk adds: StartTLS, simple bind, pipelined AddRequests,
unbind.

ldap3 encodes every request through pyasn1 and waits for each answer in a thread; for tens of
thousands of new entries that is most of the import's CPU. This package writes the few LDAP
messages it needs itself (BER, X.690 definite lengths, RFC 4511) and keeps up to ``window``
AddRequests in flight on one connection, matching the answers by messageID.

Only what bulk adds need is here: requests are StartTLS (an ExtendedRequest, sent before the
bind to a directory on ldap:// with TLS), BindRequest (simple), AddRequest and UnbindRequest;
responses are decoded as far as messageID, protocolOp and the LDAPResult (resultCode,
matchedDN, diagnosticMessage); referrals, SASL credentials, response values and
controls are skipped. Everything else (searches, modifies, escaping) stays with ldap3 in
``provisioning.directory``.

    async with await LdapWire.connect("ldap://127.0.0.1:389", admin_dn, password) as wire:
        results = await wire.add_many(entries, object_classes=["top", "inetOrgPerson"])
    # results[i] is 0 (added) or an LdapResult saying why not

``protocol`` holds the result codes, errors and decoded answers, ``ber`` the encoder and the
decoder, ``client`` the connection (:class:`LdapWire`).
"""

from provisioning.ldapwire.ber import (
    ResponseReader,
    decode_message,
    encode_add_request,
    encode_bind_request,
    encode_extended_request,
    encode_unbind_request,
)
from provisioning.ldapwire.client import AddEntry, LdapWire
from provisioning.ldapwire.protocol import (
    ADD_RESPONSE,
    BIND_RESPONSE,
    COMPARE_RESPONSE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DELETE_RESPONSE,
    ENCODING_ERROR,
    EXTENDED_RESPONSE,
    MAX_MESSAGE_ID,
    MODIFY_DN_RESPONSE,
    MODIFY_RESPONSE,
    NOTICE_OF_DISCONNECTION,
    RESULT_NAMES,
    SEARCH_RESULT_DONE,
    SERVER_DOWN,
    START_TLS,
    SUCCESS,
    TIMEOUT,
    LdapBindError,
    LdapConnectionError,
    LdapError,
    LdapProtocolError,
    LdapResponse,
    LdapResult,
    LdapTimeoutError,
)

__all__ = [
    "ADD_RESPONSE",
    "BIND_RESPONSE",
    "COMPARE_RESPONSE",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DELETE_RESPONSE",
    "ENCODING_ERROR",
    "EXTENDED_RESPONSE",
    "MAX_MESSAGE_ID",
    "MODIFY_DN_RESPONSE",
    "MODIFY_RESPONSE",
    "NOTICE_OF_DISCONNECTION",
    "RESULT_NAMES",
    "SEARCH_RESULT_DONE",
    "SERVER_DOWN",
    "START_TLS",
    "SUCCESS",
    "TIMEOUT",
    "AddEntry",
    "LdapBindError",
    "LdapConnectionError",
    "LdapError",
    "LdapProtocolError",
    "LdapResponse",
    "LdapResult",
    "LdapTimeoutError",
    "LdapWire",
    "ResponseReader",
    "decode_message",
    "encode_add_request",
    "encode_bind_request",
    "encode_extended_request",
    "encode_unbind_request",
]
