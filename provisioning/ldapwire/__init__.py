"""A small asyncio LDAPv3 client for bulk work: StartTLS, simple bind, pipelined AddRequests,
paged searches of one equality filter, unbind.

ldap3 encodes every request through pyasn1 and waits for each answer in a thread; for tens of
thousands of new entries that is most of the import's CPU, and decoding a listing of tens of
thousands of entries takes it seconds. This package writes the few LDAP messages it needs
itself (BER, X.690 definite lengths, RFC 4511) and keeps up to ``window`` AddRequests in flight
on one connection, matching the answers by messageID.

Only what bulk work needs is here: requests are StartTLS (an ExtendedRequest, sent before the
bind to a directory on ldap:// with TLS), BindRequest (simple), AddRequest, SearchRequest (an
equalityMatch filter, the paged results control) and UnbindRequest; responses are decoded as
far as messageID, protocolOp and the LDAPResult (resultCode, matchedDN, diagnosticMessage),
the controls, and a SearchResultEntry's DN and values (as UTF-8 text); referrals, SASL
credentials and response values are skipped. Everything else (other filters, modifies,
escaping) stays with ldap3 in ``provisioning.directory``.

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
    encode_search_request,
    encode_unbind_request,
    paged_cookie,
)
from provisioning.ldapwire.client import AddEntry, FoundEntry, LdapWire
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
    PAGED_RESULTS,
    RESULT_NAMES,
    SEARCH_RESULT_DONE,
    SEARCH_RESULT_ENTRY,
    SEARCH_RESULT_REFERENCE,
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
    LdapSearchError,
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
    "PAGED_RESULTS",
    "RESULT_NAMES",
    "SEARCH_RESULT_DONE",
    "SEARCH_RESULT_ENTRY",
    "SEARCH_RESULT_REFERENCE",
    "SERVER_DOWN",
    "START_TLS",
    "SUCCESS",
    "TIMEOUT",
    "AddEntry",
    "FoundEntry",
    "LdapBindError",
    "LdapConnectionError",
    "LdapError",
    "LdapProtocolError",
    "LdapResponse",
    "LdapResult",
    "LdapSearchError",
    "LdapTimeoutError",
    "LdapWire",
    "ResponseReader",
    "decode_message",
    "encode_add_request",
    "encode_bind_request",
    "encode_extended_request",
    "encode_search_request",
    "encode_unbind_request",
    "paged_cookie",
]
