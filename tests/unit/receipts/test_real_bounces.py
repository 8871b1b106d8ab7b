"""The report parser held against bounces that real MTAs sent, with their known answers.

The corpora come from public packages' source distributions, fetched at test time
(``corpora.py``). A sample is right when the parser finds exactly its failed and its delayed
addresses; a negative sample (known to name none) that yields any is a false positive. Each
source's figures are printed as a table (the README's "Real bounces" table is this output).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from mailsvc.receipts.parse import DeliveryReport, ReportRecipient, is_rejection, scan
from tests.unit.receipts.corpora import Corpus, Sample, bounced, comparable, flufl_bounce

GOAL = 0.98  # of the samples with a known answer, read right


@dataclass(frozen=True)
class Score:
    source: str
    samples: int  # with a known answer
    right: int
    wrong: tuple[str, ...]  # names of the samples read wrong (false positives included)
    negatives: int
    false_positives: int
    unanswered: int  # samples the source gives no answer for: not scored
    unanswered_read: int  # of those, how many the parser found failures in

    def row(self) -> str:
        return (
            f"| {self.source} | {self.samples} | {self.right} | "
            f"{len(self.wrong) - self.false_positives} | "
            f"{self.false_positives} of {self.negatives} | {self.right / self.samples:.1%} | "
            f"{self.unanswered} ({self.unanswered_read} read as bounces) |"
        )


HEADER = (
    "| source | samples with a known answer | right | wrong | false positives on negatives "
    "| right % | without an answer |\n|---|---|---|---|---|---|---|"
)


def failures(
    report: DeliveryReport, *, final: bool = False
) -> tuple[frozenset[str], frozenset[str]]:
    """(failed, delayed) addresses as the receipts would take them: a mail store's rejection
    MDN is a failure too (``sink``). ``final``: name each by its Final-Recipient."""

    def name(r: ReportRecipient) -> str:
        return comparable((final and r.final_recipient) or r.address)

    failed = {
        name(r)
        for r in report.recipients
        if r.action == "failed" or (report.kind == "mdn" and is_rejection(r))
    }
    delayed = {name(r) for r in report.recipients if r.action == "delayed"}
    return frozenset(failed), frozenset(delayed - failed)


def score(corpus: Corpus) -> Score:
    right = false_positives = unanswered_read = 0
    wrong: list[str] = []
    known = [s for s in corpus.samples if s.known]
    for sample in corpus.samples:
        found = failures(scan(sample.raw), final=corpus.names_final)
        if not sample.known:
            unanswered_read += bool(found[0] or found[1])
        elif found == (sample.failed, sample.delayed):
            right += 1
        else:
            wrong.append(f"{sample.name}: found {found}, known {sample.failed, sample.delayed}")
            false_positives += sample.negative
    return Score(
        source=corpus.source,
        samples=len(known),
        right=right,
        wrong=tuple(wrong),
        negatives=sum(s.negative for s in known),
        false_positives=false_positives,
        unanswered=len(corpus.samples) - len(known),
        unanswered_read=unanswered_read,
    )


SOURCES: dict[str, Callable[[], Corpus]] = {"flufl.bounce": flufl_bounce, "bounced": bounced}


@pytest.fixture(scope="module")
def scores() -> dict[str, Score]:
    return {name: score(load()) for name, load in SOURCES.items()}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_real_bounces_are_read_right(
    source: str, scores: dict[str, Score], capsys: pytest.CaptureFixture[str]
) -> None:
    result = scores[source]
    with capsys.disabled():
        print(f"\n{HEADER}\n{result.row()}")
        for line in result.wrong:
            print(f"  wrong: {line}")
    assert result.samples >= 20 and result.negatives >= 3
    assert result.false_positives == 0, result.wrong
    assert result.right >= GOAL * result.samples, result.wrong


def test_the_corpora_hold_what_the_figures_claim() -> None:
    flufl = flufl_bounce()
    by_name = {s.name: s for s in flufl.samples}
    # The table's rows add up per file: groupwise_02.txt is Exchange's, read by that detector.
    assert by_name["groupwise_02.txt"].failed == {"userx@example.com"}
    assert by_name["simple_03.txt"].delayed == {"userx@example.za"}
    assert by_name["dumbass_01.txt"].negative and not by_name["bounce_01.txt"].known
    assert len(flufl.samples) >= 110
    other = {s.name: s for s in bounced().samples}
    assert other["bounces/longer-status.eml"].failed == {"joem@example.com"}
    assert other["bounce_email/non_bounces/tt_1234210666.eml"].negative
    assert not other["bounce_email/bounces/tt_bounce_11.eml"].known


def test_the_scoring_counts_misses_and_false_positives() -> None:
    qmail = (
        b"From: MAILER-DAEMON@mx.example.pl\nSubject: failure notice\n\n"
        b"Hi. This is the qmail-send program at mx.example.pl.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
        b"<a@example.pl>:\nSorry, no mailbox here by that name. (#5.1.1)\n"
    )
    nothing = b"From: jan@example.pl\nSubject: x\n\nnothing here\n"
    samples = (
        Sample("right", qmail, failed=frozenset({"a@example.pl"})),
        Sample("delayed, not failed", qmail, delayed=frozenset({"a@example.pl"})),
        Sample("missed", nothing, failed=frozenset({"a@example.pl"})),
        Sample("negative", nothing),
        Sample("false positive", qmail),
        Sample("unanswered", qmail, known=False),
    )
    result = score(Corpus("test", samples))
    assert (result.samples, result.right, len(result.wrong)) == (5, 2, 3)
    assert (result.negatives, result.false_positives) == (2, 1)
    assert (result.unanswered, result.unanswered_read) == (1, 1)
