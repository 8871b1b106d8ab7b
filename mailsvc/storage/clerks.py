"""Tables and repository of the clerks' web interface: login sessions, API tokens, audit reads.

Only hashes are stored: a session cookie and an API token are random 256-bit secrets shown to
their holder once, and the database keeps their SHA-256. Someone who reads the database cannot
log in with what they find there. The audit log itself belongs to the register
(``storage.register``); this module adds the clerks' records to it and reads it page by page.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc.storage.db import utcnow
from mailsvc.storage.register import AuditEntry
from mailsvc.storage.tables import api_tokens, audit_log, web_sessions

TOKEN_PREFIX = "msv_"  # noqa: S105 (a prefix, recognisable in logs and secret scanners)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ClerkSession:
    """A logged-in clerk: who, and the CSRF token every form of theirs must carry."""

    id: int
    clerk: str
    name: str
    csrf: str
    created_at: datetime
    last_seen: datetime
    checked_at: datetime | None = None  # account and group last confirmed in the directory

    @property
    def actor(self) -> str:
        """How the audit log names the clerk: "Anna Nowak <anna.nowak@…>"."""
        return f"{self.name} <{self.clerk}>" if self.name else self.clerk


# What an API token may do: read anything; sessions, documents, distributions and the queue;
# councillors (roster import, password reset, end of mandate).
SCOPES = ("read", "distributions", "councillors")


@dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None
    scopes: tuple[str, ...] = SCOPES

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


def _api_token(row: Any) -> ApiToken:
    scopes = tuple(s for s in (row.scopes or ",".join(SCOPES)).split(",") if s)
    return ApiToken(
        row.id,
        row.name,
        row.created_at,
        row.created_by,
        row.last_used_at,
        row.revoked_at,
        row.expires_at,
        scopes,
    )


class WebStore:
    """Login sessions, API tokens and the audit records of the web interface."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- login sessions -------------------------------------------------------------------

    async def open_session(self, clerk: str, name: str) -> tuple[str, ClerkSession]:
        """A new session; returns the cookie value (shown only now) and the session."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        csrf = secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                web_sessions.insert().values(
                    token_hash=token_hash(token),
                    clerk=clerk,
                    name=name,
                    csrf=csrf,
                    created_at=now,
                    last_seen=now,
                )
            )
            session_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        return token, ClerkSession(session_id, clerk, name, csrf, now, now, now)

    async def session(
        self, token: str, idle: timedelta, lifetime: timedelta | None = None
    ) -> ClerkSession | None:
        """The session of this cookie if it was used within ``idle`` and began less than
        ``lifetime`` ago; marks it used now."""
        now = utcnow()
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(web_sessions).where(web_sessions.c.token_hash == token_hash(token))
                )
            ).first()
            if row is None:
                return None
            expired = lifetime is not None and now - row.created_at > lifetime
            if expired or now - row.last_seen > idle:
                await conn.execute(delete(web_sessions).where(web_sessions.c.id == row.id))
                return None
            # Written at most once a minute: every page view need not be a write.
            if now - row.last_seen > timedelta(minutes=1):
                await conn.execute(
                    update(web_sessions).where(web_sessions.c.id == row.id).values(last_seen=now)
                )
        checked = row.checked_at or row.created_at
        return ClerkSession(row.id, row.clerk, row.name, row.csrf, row.created_at, now, checked)

    async def mark_checked(self, session_id: int) -> None:
        """The clerk's account was found still valid in the directory now."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(web_sessions)
                .where(web_sessions.c.id == session_id)
                .values(checked_at=utcnow())
            )

    async def end_session(self, session_id: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(web_sessions).where(web_sessions.c.id == session_id))

    async def close_session(self, token: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(web_sessions).where(web_sessions.c.token_hash == token_hash(token))
            )

    async def purge_sessions(self, idle: timedelta) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(web_sessions).where(web_sessions.c.last_seen < utcnow() - idle)
            )
        return int(result.rowcount or 0)

    # --- API tokens -----------------------------------------------------------------------

    async def create_token(
        self,
        name: str,
        created_by: str,
        *,
        scopes: tuple[str, ...] = ("read",),
        valid_days: int = 365,
    ) -> str:
        """A new API token called ``name`` with ``scopes``, valid for ``valid_days``; the token
        itself is returned once, never stored."""
        name = " ".join(name.split())
        if not name or len(name) > 128:
            raise ValueError("token name: expected 1-128 characters, e.g. 'bip-integration'")
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise ValueError(
                f"token scopes {', '.join(unknown) or '(none)'}: expected some of "
                + ", ".join(SCOPES)
            )
        if not 1 <= valid_days <= 3650:
            raise ValueError(f"token validity {valid_days} days: expected 1 to 3650")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            taken = (
                await conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name))
            ).first()
            if taken is not None:
                raise ValueError(f"token name {name!r} is taken: choose another or revoke it")
            await conn.execute(
                api_tokens.insert().values(
                    name=name,
                    token_hash=token_hash(token),
                    created_at=utcnow(),
                    created_by=created_by,
                    expires_at=utcnow() + timedelta(days=valid_days),
                    scopes=",".join(dict.fromkeys(scopes)),
                )
            )
        return token

    async def verify_token(self, token: str) -> ApiToken | None:
        """The token's record if it exists and is not revoked; records its use."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(api_tokens).where(
                        api_tokens.c.token_hash == token_hash(token),
                        api_tokens.c.revoked_at.is_(None),
                        api_tokens.c.expires_at.is_(None) | (api_tokens.c.expires_at > utcnow()),
                    )
                )
            ).first()
            if row is None:
                return None
            await conn.execute(
                update(api_tokens).where(api_tokens.c.id == row.id).values(last_used_at=utcnow())
            )
        return _api_token(row)

    async def tokens(self) -> list[ApiToken]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(api_tokens).order_by(api_tokens.c.name))).all()
        return [_api_token(r) for r in rows]

    async def revoke_token(self, name: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)

    # --- the audit log --------------------------------------------------------------------

    async def audit(
        self,
        actor: str,
        command: str,
        action: str,
        *,
        address: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one clerk action (``details`` go to the entry's "after" as JSON)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                audit_log.insert().values(
                    at=utcnow(),
                    actor=actor[:500],
                    command=command[:500],
                    address=address,
                    action=action[:32],
                    before=None,
                    after=json.dumps(dict(details), ensure_ascii=False, default=str)
                    if details
                    else None,
                )
            )

    async def audit_entries(
        self, *, limit: int = 100, offset: int = 0, actor: str | None = None
    ) -> tuple[list[AuditEntry], int]:
        """The newest entries first, a page at a time, and how many there are in all."""
        query = select(audit_log)
        count = select(func.count()).select_from(audit_log)
        if actor:
            pattern = f"%{actor}%"
            query = query.where(audit_log.c.actor.like(pattern))
            count = count.where(audit_log.c.actor.like(pattern))
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    query.order_by(audit_log.c.id.desc()).limit(limit).offset(offset)
                )
            ).all()
            total = int((await conn.execute(count)).scalar_one())
        return [
            AuditEntry(
                at=r.at,
                actor=r.actor,
                command=r.command,
                address=r.address,
                action=r.action,
                before=json.loads(r.before) if r.before else None,
                after=json.loads(r.after) if r.after else None,
            )
            for r in rows
        ], total
