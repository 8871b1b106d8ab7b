"""The signed addresses each recipient's mail carries: the acknowledgement link, the document
downloads and the VERP return path, all valid until some days after the session."""

from __future__ import annotations

from datetime import datetime, timedelta

from mailsvc import secret_store
from mailsvc.config import Settings
from mailsvc.distribution.clock import Clock
from mailsvc.receipts.tokens import TokenSigner
from mailsvc.storage.sessions import CouncilSessionRow

RECEIPTS_KEY = "receipts-key"  # the name of a secret file


def signer_for(settings: Settings) -> TokenSigner:
    """The token signer with the service's key (made once, kept in var/secrets)."""
    key = secret_store.load_or_create_secret(settings, RECEIPTS_KEY, length=48)
    return TokenSigner(key.encode("ascii"))


class RecipientLinks:
    def __init__(self, settings: Settings, signer: TokenSigner, clock: Clock) -> None:
        self.settings = settings
        self.signer = signer
        self.clock = clock
        # Where links point; the running service sets the address it actually bound.
        self.web_url = settings.web_url

    def link_expiry(self, session: CouncilSessionRow) -> datetime:
        return self.clock.to_utc(session.starts_at) + timedelta(
            days=self.settings.distribution.link_valid_days
        )

    def ack_url(self, recipient_id: int, distribution_id: int, expires: datetime) -> str:
        token = self.signer.ack_token(recipient_id, distribution_id, expires)
        return f"{self.web_url}/a/{token}"

    def download_url(self, recipient_id: int, sha256: str, expires: datetime) -> str:
        return f"{self.web_url}/d/{self.signer.download_token(recipient_id, sha256, expires)}"

    def return_path(self, recipient_id: int) -> str:
        return f"bounces+{self.signer.verp_token(recipient_id)}@{self.settings.domain}"
