"""Suppression operations: suppress an address on an editor's word, and take an entry off."""

from __future__ import annotations

from subscriptions import suppressions
from subscriptions.operations import UnitOfWork
from subscriptions.suppressions import SuppressionInfo


def add(uow: UnitOfWork, *, email: str, reason: str, by: str) -> tuple[SuppressionInfo, bool]:
    """Suppress an address at once, on every topic; the entry and whether it is new (an address
    already suppressed keeps its first reason). `by` says who asked, e.g. an editor's address."""
    return suppressions.add_suppression(
        session=uow.session, email=email, detail=reason, added_by=by
    )


def remove(uow: UnitOfWork, suppression_id: int) -> SuppressionInfo:
    """Take an entry off the list; this sends nothing and resumes nothing (the reader, if any,
    stays unsubscribed until they sign up again)."""
    return suppressions.remove_suppression(session=uow.session, suppression_id=suppression_id)
