"""A session's receipts: the councillor x document matrix as a page, as JSON for the page's
live refresh, and as CSV and PDF exports (``receipts.report``)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailsvc.domain.receipt_states import EventKind, ReceiptMatrix, summary
from mailsvc.domain.vocabulary import STATE_ORDER, state_label
from mailsvc.storage.clerks import ClerkSession
from mailsvc.web.http import content_disposition
from mailsvc.web.pages import ClerkArea

_RANK = {kind: i for i, kind in enumerate(STATE_ORDER)}


class ReceiptPages(ClerkArea):
    """``/sessions/{id}/receipts`` and its ``.json``, ``.csv`` and ``.pdf``."""

    async def receipts(self, request: Request, clerk: ClerkSession) -> Response:
        session_id = request.path_params["id"]
        matrix = await self.actions.matrix(session_id)
        lang = self.pages.language(request)
        return self.pages.render(
            request,
            "receipts",
            clerk,
            session_id=session_id,
            matrix=matrix,
            grid=document_grid(matrix, lang),
            counts=state_counts(matrix),
            refresh=self.settings.web.refresh_seconds,
            to_local=self.actions.distributions.to_local,
        )

    async def receipts_json(self, request: Request, clerk: ClerkSession) -> Response:
        matrix = await self.actions.matrix(request.path_params["id"])
        lang = self.pages.language(request)
        grid = document_grid(matrix, lang)
        return JSONResponse(
            {
                "generated_at": matrix.generated_at.isoformat() + "Z",
                "rows": [
                    {
                        "address": row["address"],
                        "cells": {c["sha256"]: [c["state"], c["label"]] for c in row["cells"]},
                    }
                    for row in grid["rows"]
                ],
                "counts": {k.value: v for k, v in state_counts(matrix).items()},
                "labels": {k.value: state_label(k, lang) for k in STATE_ORDER},
            }
        )

    async def receipts_csv(self, request: Request, clerk: ClerkSession) -> Response:
        from mailsvc.receipts.report import render_csv

        matrix = await self.actions.matrix(request.path_params["id"])
        return Response(
            render_csv(matrix),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": _report_name(matrix, "csv")},
        )

    async def receipts_pdf(self, request: Request, clerk: ClerkSession) -> Response:
        from mailsvc.receipts.report import render_pdf

        matrix = await self.actions.matrix(request.path_params["id"])
        pdf = await asyncio.to_thread(render_pdf, matrix)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"content-disposition": _report_name(matrix, "pdf")},
        )

    async def evidence_pdf(self, request: Request, clerk: ClerkSession) -> Response:
        """The signed evidence pack (``mailsvc evidence export``), made afresh each time."""
        pack, number = await self.actions.evidence_pack(request.path_params["id"])
        return Response(
            pack,
            media_type="application/pdf",
            headers={
                "content-disposition": content_disposition(
                    f"pakiet-dowodowy-{number.replace('/', '-')}.pdf"
                )
            },
        )


def _report_name(matrix: ReceiptMatrix, ext: str) -> str:
    number = matrix.session_number.replace("/", "-")
    return content_disposition(f"potwierdzenia-{number}.{ext}")


def state_counts(matrix: ReceiptMatrix) -> dict[EventKind, int]:
    """How many councillor x distribution cells are in each state (states with none left out),
    in the order of ``STATE_ORDER``."""
    counts = summary(matrix.rows)
    return {k: counts[k] for k in STATE_ORDER if counts.get(k)}


def document_grid(matrix: ReceiptMatrix, language: str) -> dict[str, Any]:
    """Councillor x document: each document's state for a councillor is the furthest state of
    the distributions that carried it to them (a failure shows only if nothing got through)."""
    carried: dict[str, set[int]] = {}
    for dist in matrix.distributions:
        for sha in dist.documents:
            carried.setdefault(sha, set()).add(dist.id)
    columns = [d for d in matrix.documents if d.sha256 in carried]
    # Distributions without documents (cancellation, date change) still get a column.
    bare = [d for d in matrix.distributions if not d.documents]
    rows = []
    for row in matrix.rows:
        by_dist = {c.distribution_id: c.state.state for c in row.cells}
        cells = []
        for document in columns:
            states = [by_dist[i] for i in carried[document.sha256] if i in by_dist]
            state = max(states, key=lambda s: _RANK.get(s, 0)) if states else None
            cells.append(_cell(document.sha256, state, language))
        for dist in bare:
            cells.append(_cell(f"d{dist.id}", by_dist.get(dist.id), language))
        rows.append({"name": row.name, "address": row.address, "cells": cells})
    return {"documents": columns, "bare": bare, "rows": rows}


def _cell(key: str, state: EventKind | None, language: str) -> dict[str, str]:
    if state is None:
        return {"sha256": key, "state": "none", "label": "—"}
    return {"sha256": key, "state": state.value, "label": state_label(state, language)}
