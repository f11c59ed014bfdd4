"""Operations on readers that editors run: import from CSV, export as CSV, erase, change a
reader's language. The console, the API and the CLI call these (see `subscriptions.operations`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from subscriptions import imports, privacy
from subscriptions import readers as store
from subscriptions.errors import InvalidInput
from subscriptions.imports import ImportReport
from subscriptions.models import SubscriberStatus
from subscriptions.operations import UnitOfWork

#: The reader statuses an export (or a search) may filter on.
STATUSES = tuple(s.value for s in SubscriberStatus)


def import_csv(
    uow: UnitOfWork,
    data: bytes,
    *,
    consent: bool,
    by: str,
    strict: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Check every row of CSV file `data` (at most `imports.MAX_BYTES`), then write the valid rows
    together: active readers with `consent`, pending otherwise. `strict`: nothing is written when
    any row is bad; `dry_run`: nothing is written. `by` says who imported (kept with the consent
    records). InvalidInput when the file cannot be read at all."""
    if len(data) > imports.MAX_BYTES:
        raise InvalidInput(
            f"the file is larger than {imports.MAX_BYTES // 1024 // 1024} MB", field="file"
        )
    return imports.import_readers(
        session=uow.session,
        text=imports.decode_csv(data),
        consent=consent,
        editor=by,
        strict=strict,
        dry_run=dry_run,
    )


def export_csv(
    uow: UnitOfWork, *, query: str = "", status: str | None = None, topic: str | None = None
) -> Iterator[str]:
    """The matching readers as CSV text, in chunks (the import's columns plus `status`); consume
    it inside the unit of work. InvalidInput for an unknown status."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status: one of {', '.join(STATUSES)}", field="status")
    return imports.export_csv(
        session=uow.session,
        query=query,
        status=SubscriberStatus(status) if status else None,
        topic=topic or None,
    )


def erase(uow: UnitOfWork, reader_id: int) -> None:
    """Erase a reader and everything tied to them; only a hash of the address stays, on the
    suppression list (NotFound for an unknown reader)."""
    privacy.erase_reader(session=uow.session, subscriber_id=reader_id)


def set_language(uow: UnitOfWork, reader_id: int, *, language: str, offered: Sequence[str]) -> str:
    """Set the language of a reader's emails and pages to one of `offered`
    (NEWSLETTER_LANGUAGES); InvalidInput otherwise, NotFound for an unknown reader."""
    return store.set_language(
        session=uow.session, subscriber_id=reader_id, language=language, offered=offered
    )
