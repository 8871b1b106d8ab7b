"""DKIM for outgoing mail: key files (``keys``), relaxed canonicalization (``canon``) and the
signer the smarthost client calls (``signer``)."""

from mailsvc.relay.dkim.signer import DkimSigner

__all__ = ["DkimSigner"]
