"""The LDAPv3 vocabulary of the bulk-add client: result codes, response tags, its errors, and
what a decoded answer holds (RFC 4511)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final

from provisioning.errors import ProvisioningError

# --- result codes -----------------------------------------------------------------------------

SUCCESS: Final = 0
# Client-side codes (never sent by a server; the numbers of the LDAP C API): the answer is
# missing, so whether the entry was added is unknown until the directory is read again.
SERVER_DOWN: Final = 81
ENCODING_ERROR: Final = 83
TIMEOUT: Final = 85

RESULT_NAMES: Final[Mapping[int, str]] = {
    0: "success",
    1: "operationsError",
    2: "protocolError",
    3: "timeLimitExceeded",
    4: "sizeLimitExceeded",
    5: "compareFalse",
    6: "compareTrue",
    7: "authMethodNotSupported",
    8: "strongerAuthRequired",
    10: "referral",
    11: "adminLimitExceeded",
    12: "unavailableCriticalExtension",
    13: "confidentialityRequired",
    14: "saslBindInProgress",
    16: "noSuchAttribute",
    17: "undefinedAttributeType",
    18: "inappropriateMatching",
    19: "constraintViolation",
    20: "attributeOrValueExists",
    21: "invalidAttributeSyntax",
    32: "noSuchObject",
    33: "aliasProblem",
    34: "invalidDNSyntax",
    36: "aliasDereferencingProblem",
    48: "inappropriateAuthentication",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    51: "busy",
    52: "unavailable",
    53: "unwillingToPerform",
    54: "loopDetect",
    64: "namingViolation",
    65: "objectClassViolation",
    66: "notAllowedOnNonLeaf",
    67: "notAllowedOnRDN",
    68: "entryAlreadyExists",
    69: "objectClassModsProhibited",
    71: "affectsMultipleDSAs",
    80: "other",
    SERVER_DOWN: "serverDown",
    ENCODING_ERROR: "encodingError",
    TIMEOUT: "timeout",
}

NOTICE_OF_DISCONNECTION: Final = "1.3.6.1.4.1.1466.20036"
# The StartTLS extended operation (RFC 4511 4.14): TLS on an ldap:// connection before the bind.
START_TLS: Final = "1.3.6.1.4.1.1466.20037"

# protocolOp tags (APPLICATION n) of the responses this client understands: the ones made of
# an LDAPResult. The client only sends StartTLS, binds and adds, so only 24, 1 and 9 are
# expected.
BIND_RESPONSE: Final = 1
SEARCH_RESULT_ENTRY: Final = 4  # not an LDAPResult: a DN and its attributes
SEARCH_RESULT_DONE: Final = 5
SEARCH_RESULT_REFERENCE: Final = 19  # not an LDAPResult: URIs, skipped
MODIFY_RESPONSE: Final = 7
ADD_RESPONSE: Final = 9
DELETE_RESPONSE: Final = 11
MODIFY_DN_RESPONSE: Final = 13
COMPARE_RESPONSE: Final = 15
EXTENDED_RESPONSE: Final = 24

MAX_MESSAGE_ID: Final = 2**31 - 1
# The paged results control (RFC 2696): a search's pages and the cookie to ask for the next.
PAGED_RESULTS: Final = "1.2.840.113556.1.4.319"
# A response to a bind or an add is a few dozen bytes, a searched entry a few hundred;
# anything near this is not one.
DEFAULT_MAX_RESPONSE_BYTES: Final = 1 << 20

# --- errors -----------------------------------------------------------------------------------


class LdapError(ProvisioningError):
    """Base of the bulk-add client's errors."""


class LdapProtocolError(LdapError, ValueError):
    """Bytes from the server that are not a well-formed LDAPv3 response."""


class LdapConnectionError(LdapError, ConnectionError):
    """The directory cannot be reached, or the connection broke."""


class LdapTimeoutError(LdapConnectionError, TimeoutError):
    """The directory did not answer in time."""


class LdapBindError(LdapError):
    """The directory refused the bind; ``result`` says why (49: wrong DN or password)."""

    def __init__(self, message: str, result: LdapResult) -> None:
        super().__init__(message)
        self.result = result


# --- results and responses --------------------------------------------------------------------


class LdapSearchError(LdapError):
    """The directory answered a search with an error (``result``)."""

    def __init__(self, message: str, result: LdapResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class LdapResult:
    """An LDAPResult: what the directory answered (or a client-side code: 81, 83, 85)."""

    code: int
    matched_dn: str = ""
    message: str = ""

    @property
    def name(self) -> str:
        return RESULT_NAMES.get(self.code, f"result {self.code}")

    def __str__(self) -> str:
        text = f"{self.name} ({self.code})"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True, slots=True)
class LdapResponse:
    """One decoded LDAPMessage from the server."""

    message_id: int
    op: int  # protocolOp tag number, [APPLICATION op]
    result: LdapResult
    response_name: str | None = None  # ExtendedResponse only
    # SearchResultEntry only (its ``result`` is then a plain success): DN, attribute → values.
    entry: tuple[str, dict[str, list[str]]] | None = None
    controls: tuple[tuple[str, bytes], ...] = ()  # (controlType, controlValue) of the message

    @property
    def is_notice_of_disconnection(self) -> bool:
        return (
            self.message_id == 0
            and self.op == EXTENDED_RESPONSE
            and self.response_name in (None, NOTICE_OF_DISCONNECTION)
        )


# The slots of LdapResponse, set directly: what its frozen __init__ does through
# object.__setattr__, field by field, at well under half the cost. A listing makes one
# response per entry, tens of thousands of them. Every field must be set here (an unset slot
# is an AttributeError when read): the check below fails the import if one is added.
if [f.name for f in fields(LdapResponse)] != [
    "message_id",
    "op",
    "result",
    "response_name",
    "entry",
    "controls",
]:
    raise TypeError("LdapResponse's fields changed: update entry_response")
_SET_MESSAGE_ID = vars(LdapResponse)["message_id"].__set__
_SET_OP = vars(LdapResponse)["op"].__set__
_SET_RESULT = vars(LdapResponse)["result"].__set__
_SET_RESPONSE_NAME = vars(LdapResponse)["response_name"].__set__
_SET_ENTRY = vars(LdapResponse)["entry"].__set__
_SET_CONTROLS = vars(LdapResponse)["controls"].__set__
_FOUND: Final = LdapResult(0)


def entry_response(
    message_id: int,
    entry: tuple[str, dict[str, list[str]]],
    controls: tuple[tuple[str, bytes], ...] = (),
) -> LdapResponse:
    """``LdapResponse(message_id, SEARCH_RESULT_ENTRY, LdapResult(0), entry=entry,
    controls=controls)``, made faster."""
    response = object.__new__(LdapResponse)
    _SET_MESSAGE_ID(response, message_id)
    _SET_OP(response, SEARCH_RESULT_ENTRY)
    _SET_RESULT(response, _FOUND)
    _SET_RESPONSE_NAME(response, None)
    _SET_ENTRY(response, entry)
    _SET_CONTROLS(response, controls)
    return response
