"""Request parameters every router shares (console and API alike)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from subscriptions.models import MAX_ID

#: A record's id in a path: 1 up to the largest the key columns hold (anything else is a 4xx).
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
