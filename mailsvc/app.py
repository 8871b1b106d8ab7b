"""Composition root: builds every part from settings, starts and stops them in order."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mailsvc import secret_store
from mailsvc.config import Settings
from mailsvc.directory.clerks import Clerks
from mailsvc.directory.councillors import Councillors
from mailsvc.distribution.ackpage import AckPages
from mailsvc.distribution.links import RECEIPTS_KEY, signer_for
from mailsvc.distribution.service import Distributions
from mailsvc.node import node_id
from mailsvc.receipts.sink import ReportSink
from mailsvc.relay.counters import Counters
from mailsvc.relay.delivery.capture import CaptureSink, capture_dir, running_capture
from mailsvc.relay.delivery.process import DeliveryProcess
from mailsvc.relay.delivery.worker import DeliveryWorkers
from mailsvc.relay.dkim import DkimSigner
from mailsvc.relay.smtp.inbound import InboundHandler, start_inbound
from mailsvc.relay.smtp.recipients import CachedRecipients
from mailsvc.relay.smtp.submission import (
    SubmissionHandler,
    start_submission,
    start_submission_tls,
)
from mailsvc.relay.smtp.tls import ServerTls, server_tls
from mailsvc.storage.db import create_engine, create_schema
from mailsvc.storage.jobruns import JobRuns
from mailsvc.storage.leader import Leadership, leadership_for
from mailsvc.storage.nodes import Heartbeat
from mailsvc.storage.queue import MailQueue
from mailsvc.storage.register import Register
from mailsvc.storage.relaylog import RelayLog
from mailsvc.storage.sessions import ReceiptStore
from mailsvc.storage.shared_files import SharedFiles
from provisioning.directory import Directory, DirectoryConfig

if TYPE_CHECKING:
    from mailsvc.metrics import MetricsServer
    from mailsvc.web.server import WebServer

log = logging.getLogger(__name__)


def directory_config(settings: Settings) -> DirectoryConfig:
    """The directory library's config from our settings (same names where they overlap)."""
    d = settings.ldap
    explicit: dict[str, Any] = {
        "url": settings.ldap_url,
        "bind_dn": d.admin_dn,
        "bind_password": secret_store.admin_password(settings),
    }
    shared = {
        f.name: getattr(d, f.name)
        for f in dataclasses.fields(DirectoryConfig)
        if f.name not in explicit and hasattr(d, f.name)
    }
    return DirectoryConfig(**explicit, **shared)


def open_directory(settings: Settings) -> Directory:
    return Directory(directory_config(settings))


def open_reader_directory(settings: Settings) -> Directory:
    """The directory as its read-only reader entry (RCPT lookups): slapd's rules show it the
    entries but never their password hashes, and it can change nothing."""
    config = dataclasses.replace(
        directory_config(settings),
        bind_dn=settings.ldap.reader_dn,
        bind_password=secret_store.reader_password(settings),
    )
    return Directory(config)


async def open_database(settings: Settings, *, any_schema: bool = False) -> AsyncEngine:
    """The database with its schema at this version's revision: a fresh one is made so, one
    at another revision refused (SchemaVersionError: run `mailsvc db upgrade`).
    ``any_schema``: opened as it is, whatever its revision (a backup of it, for one)."""
    engine = create_engine(settings.database_url)
    if not any_schema:
        try:
            await create_schema(engine)
        except BaseException:
            await engine.dispose()
            raise
    return engine


def cli_command_line() -> str:
    return " ".join(["mailsvc", *sys.argv[1:]])[:500]


@dataclass
class Parts:
    """What the clerk commands work with: database, directory, register, queue, use cases."""

    settings: Settings
    engine: AsyncEngine
    directory: Directory
    register: Register
    queue: MailQueue
    # Set by the running service: wakes the delivery workers.
    on_queued: Callable[[], None] | None = None
    _distributions: Distributions | None = None

    @functools.cached_property
    def relay_log(self) -> RelayLog:
        return RelayLog(self.engine, units=self.queue.units)

    def distributions(self) -> Distributions:
        """The distributions use cases (one per Parts: it holds the per-distribution locks)."""
        if self._distributions is None:
            self._distributions = Distributions(
                self.settings,
                ReceiptStore(self.engine),
                self.queue,
                self.directory,
                on_queued=self.on_queued,
            )
        return self._distributions

    def clerks(self) -> Clerks:
        """The clerks' accounts (staff subtree, clerks group), audited in the register."""
        return Clerks(self.settings, self.directory, self.register)

    def councillors(self) -> Councillors:
        from mailsvc.compose import welcome_message

        def compose(display_name: str, address: str) -> EmailMessage:
            return welcome_message(self.settings, display_name=display_name, address=address)

        send = self.settings.provisioning.send_welcome
        return Councillors(
            self.settings,
            self.directory,
            self.register,
            self.queue if send else None,
            compose if send else None,
        )

    async def deliver_queued(self) -> int:
        """Deliver everything due now (welcome messages, outside serve); the rest waits."""
        async with smarthost_target(self.settings) as smarthost:
            return await DeliveryWorkers(self.queue, self.settings, smarthost=smarthost).drain()


def open_queue(settings: Settings, engine: AsyncEngine) -> MailQueue:
    """The queue; recipients in the council's domain go to the mailbox store, others out."""
    # The node's id names its claims where several nodes may share the queue (PostgreSQL).
    leased = engine.dialect.name == "postgresql"
    return MailQueue(
        engine,
        local_domains=(settings.domain,),
        node=node_id(settings) if leased else None,
        lease_seconds=settings.cluster.lease_seconds,
    )


@asynccontextmanager
async def smarthost_target(settings: Settings) -> AsyncIterator[tuple[str, int] | None]:
    """Where smarthost mail goes: None for the configured smarthost, else a capture sink
    running for the duration of the block (``smarthost.port = 0``)."""
    if settings.smarthost.port != 0:
        yield None
        return
    async with running_capture(capture_dir(settings.var_dir), settings.smtp_hostname) as addr:
        yield addr


@asynccontextmanager
async def open_parts(settings: Settings) -> AsyncIterator[Parts]:
    engine = await open_database(settings)
    directory = open_directory(settings)
    try:
        queue = open_queue(settings, engine)
        parts = Parts(settings, engine, directory, Register(engine), queue)
        try:
            yield parts
        finally:
            if "relay_log" in parts.__dict__:  # used: write what it buffered
                await parts.relay_log.close()
            await queue.close()
    finally:
        await directory.close()
        await engine.dispose()


@dataclass
class Service:
    """The running service: inbound SMTP, delivery workers, scheduled jobs."""

    settings: Settings
    parts: Parts
    # In this process, or (delivery.separate_process) a handle on the delivery process.
    workers: DeliveryWorkers | DeliveryProcess
    servers: list[asyncio.Server] = field(default_factory=list)
    scheduler: Any = None
    capture: CaptureSink | None = None
    web: WebServer | None = None
    # The reader's directory for RCPT lookups (open_reader_directory).
    reader: Directory | None = None
    # What the SMTP servers and the delivery workers count, for /metrics.
    counters: Counters = field(default_factory=Counters)
    metrics: MetricsServer | None = None
    # The certificates the SMTP servers present (reload_tls reads them again).
    tls: list[ServerTls] = field(default_factory=list)
    # Implicit-TLS submission (submission.tls_port), when on.
    submission_tls: asyncio.Server | None = None
    # This node's row in the nodes table (mailsvc.storage.nodes), kept fresh while it runs.
    heartbeat: Heartbeat | None = None
    # Whether this node leads the scheduler's cluster-wide jobs (mailsvc.storage.leader).
    leadership: Leadership = field(default_factory=lambda: Leadership("follower"))

    @property
    def engine(self) -> AsyncEngine:
        return self.parts.engine

    @property
    def directory(self) -> Directory:
        return self.parts.directory

    @property
    def queue(self) -> MailQueue:
        return self.parts.queue

    @property
    def smtp_port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])

    @property
    def submission_port(self) -> int:
        return int(self.servers[1].sockets[0].getsockname()[1])

    @property
    def submission_tls_port(self) -> int:
        assert self.submission_tls is not None
        return int(self.submission_tls.sockets[0].getsockname()[1])

    async def reload_tls(self) -> bool:
        """Read the certificate and key files again (SIGHUP): the next TLS handshake, STARTTLS
        or implicit, presents them; connections already encrypted keep what they have. A file
        that cannot be used keeps the pair in use (logged): then False."""
        if not self.tls:
            log.info("TLS reload: no certificate configured")
        done = [await asyncio.to_thread(tls.reload) for tls in self.tls]
        return all(done)

    @property
    def web_port(self) -> int:
        assert self.web is not None
        return self.web.port

    @property
    def metrics_port(self) -> int:
        assert self.metrics is not None
        return self.metrics.port

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        if self.web is not None:
            await self.web.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self.leadership.stop()
        await self.parts.relay_log.close()
        await self.workers.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        await self.parts.queue.close()
        if self.capture is not None:
            await self.capture.stop()
        await self.parts.directory.close()
        if self.reader is not None:
            await self.reader.close()
        await self.parts.engine.dispose()
        log.info("mailsvc stopped")


async def start_web(settings: Settings, parts: Parts) -> WebServer:
    """The web server: acknowledgement pages, document downloads, mail programs' automatic
    setup, the clerks' interface and the JSON API, over the service's own parts."""
    from mailsvc.storage.clerks import WebStore
    from mailsvc.web.actions import ClerkServices
    from mailsvc.web.app import create_app
    from mailsvc.web.mailclients import mail_client_routes
    from mailsvc.web.mtasts import mta_sts_routes
    from mailsvc.web.server import web_server
    from mailsvc.web.site import clerk_routes, secure_cookies

    distributions = parts.distributions()
    services = ClerkServices(
        settings=settings,
        councillors=parts.councillors(),
        distributions=distributions,
        queue=parts.queue,
        relay_log=parts.relay_log,
        wake_delivery=parts.on_queued,
    )
    app = create_app(
        signer=distributions.signer,
        backend=AckPages(settings, distributions.store, distributions.links),
        language=settings.language,
        office_address=settings.office_address,
        time_zone=settings.distribution.timezone,
        extra_routes=[
            *mail_client_routes(settings),
            *mta_sts_routes(settings),
            *clerk_routes(services, WebStore(parts.engine), parts.directory),
        ],
        https=secure_cookies(settings.web.public_url),
    )
    server = web_server(app, settings.web.host, settings.web.port)
    await server.start()
    if not settings.web.public_url:
        distributions.web_url = f"http://{settings.web.host}:{server.port}"
    log.info("web pages on http://%s:%d", settings.web.host, server.port)
    return server


def shared_secret_paths(settings: Settings) -> list[Path]:
    """The secrets under var_dir that every node of a cluster must have the same of."""
    from mailsvc.mailstore import MASTER_SECRET_NAME
    from mailsvc.receipts.evidence.signing import SELF_SIGNED_FILE, SELF_SIGNED_PASSWORD
    from mailsvc.web.auth import SECRET_NAME as COOKIE_KEY

    names = [RECEIPTS_KEY, COOKIE_KEY, MASTER_SECRET_NAME]
    if not settings.evidence.signing_certificate:
        names += [SELF_SIGNED_PASSWORD, SELF_SIGNED_FILE]
    paths = [secret_store.secret_path(settings, name) for name in names]
    if settings.dkim.enabled:
        paths += [settings.dkim_key_file(selector) for selector in settings.dkim.selectors]
    return paths


def _make_secrets(settings: Settings) -> None:
    """Every shared secret that is still missing here (each is made once, on first use)."""
    from mailsvc.mailstore import master_secret
    from mailsvc.receipts.evidence.signing import identity
    from mailsvc.web.auth import SECRET_NAME as COOKIE_KEY

    signer_for(settings)
    secret_store.load_or_create_secret(settings, COOKIE_KEY, length=48)
    master_secret(settings)
    if not settings.evidence.signing_certificate:
        identity(settings)


async def share_secrets(settings: Settings, engine: AsyncEngine) -> SharedFiles:
    """PostgreSQL: fetch the secrets other nodes made, make the missing ones, publish them
    (mailsvc.storage.shared_files). SQLite: nothing (files only, made on first use)."""
    shared = SharedFiles(engine, settings.var_dir, node_id(settings))
    await shared.sync(shared_secret_paths(settings), lambda: _make_secrets(settings))
    return shared


async def start_service(settings: Settings, *, scheduler: bool = True) -> Service:
    """Start delivery first (so the backlog drains), then jobs, then accept mail."""
    from mailsvc.jobs import JobContext, job_specs, start_scheduler

    engine = await open_database(settings)
    try:
        # Several nodes on PostgreSQL: the secrets one node made are every node's.
        shared = await share_secrets(settings, engine)
        # The DKIM keys before anything else is started: a missing one is one ConfigError
        # here, not a delivery process that dies at every start.
        signer = DkimSigner.from_settings(settings)
        if signer is not None:
            await asyncio.to_thread(signer.load)
    except BaseException:
        await engine.dispose()
        raise
    directory = open_directory(settings)
    parts = Parts(settings, engine, directory, Register(engine), open_queue(settings, engine))
    capture = None
    if settings.smarthost.port == 0:  # the embedded default: keep outgoing mail as files
        capture = CaptureSink(capture_dir(settings.var_dir), settings.smtp_hostname)
        await capture.start()
    smarthost = capture.address if capture else None
    counters = Counters()
    workers: DeliveryWorkers | DeliveryProcess
    if settings.delivery.separate_process:
        workers = DeliveryProcess(settings, smarthost=smarthost, counters=counters)
    else:
        workers = DeliveryWorkers(
            parts.queue, settings, smarthost=smarthost, counters=counters, shared=shared
        )
    await workers.start()
    parts.on_queued = workers.wake
    service = Service(settings, parts, workers, capture=capture, counters=counters)
    service.leadership = leadership_for(settings, scheduler=scheduler)
    try:
        # Before the first heartbeat, so that the nodes table shows the role from the start.
        await service.leadership.start()
        service.heartbeat = Heartbeat(
            engine,
            node_id(settings),
            settings.cluster.heartbeat_seconds,
            lambda: service.leadership.role,
            units=parts.queue.units,
        )
        await service.heartbeat.start()
        distributions = parts.distributions()
        if settings.web.enabled:
            service.web = await start_web(settings, parts)
        specs = job_specs(
            settings.provisioning.lifecycle_interval, distribution=settings.distribution
        )
        if settings.metrics.port:
            from mailsvc.metrics import start_metrics

            service.metrics = await start_metrics(settings, counters, [s.id for s in specs])
        if scheduler:
            jobs = JobContext(
                settings=settings,
                councillors=parts.councillors(),
                distributions=distributions,
                relay_log=parts.relay_log,
                runs=JobRuns(engine, units=parts.queue.units),
                queue=parts.queue,
                shared=shared,
            )
            service.scheduler = start_scheduler(jobs, specs, service.leadership)
        reports = ReportSink(distributions.store, distributions.signer, settings.domain)
        service.reader = open_reader_directory(settings)
        recipients = CachedRecipients(service.reader, settings.smtp.directory_cache_seconds)
        handler = InboundHandler(
            settings,
            recipients,
            parts.queue,
            on_queued=workers.wake,
            relay_log=parts.relay_log,
            reports=reports,
            counters=counters,
            shared=shared,
        )
        tls = server_tls(settings)
        if tls is not None:
            service.tls.append(tls)
        service.servers.append(
            await start_inbound(settings, handler, tls.context if tls is not None else None)
        )
        if settings.submission.enabled:
            submission = SubmissionHandler(
                settings,
                directory,
                parts.queue,
                parts.relay_log,
                on_queued=workers.wake,
                reports=reports,
                counters=counters,
            )
            # Submission always offers TLS: a self-signed pair when none is configured.
            sub_tls = tls or server_tls(settings, auto=True)
            assert sub_tls is not None
            if sub_tls is not tls:
                service.tls.append(sub_tls)
            service.servers.append(await start_submission(settings, submission, sub_tls.context))
            if settings.submission.tls_port:
                service.submission_tls = await start_submission_tls(
                    settings, submission, sub_tls.context
                )
                service.servers.append(service.submission_tls)
    except BaseException:
        await service.stop()
        raise
    log.info("mailsvc accepting mail on %s:%d", settings.smtp.host, service.smtp_port)
    return service
