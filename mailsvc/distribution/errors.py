"""What goes wrong in a clerk's request, and the language the clerk reads it in."""

from __future__ import annotations

from mailsvc.config import Settings
from mailsvc.domain.notice import NoticeBreach
from mailsvc.errors import MailsvcError


class DistributionError(MailsvcError):
    """A clerk's request that cannot be carried out; the message says what to change."""


class NoticeRefused(DistributionError):
    def __init__(self, breach: NoticeBreach) -> None:
        super().__init__(breach.message)
        self.breach = breach


def in_language(settings: Settings, pl: str, en: str) -> str:
    """The clerk-facing text in the configured language."""
    return en if settings.language == "en" else pl


def unknown_distribution(settings: Settings, distribution_id: int) -> DistributionError:
    return DistributionError(
        in_language(
            settings,
            f"nie ma rozesłania {distribution_id}",
            f"distribution {distribution_id} not found",
        )
    )
