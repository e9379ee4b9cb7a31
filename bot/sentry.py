"""Sentry set-up: every event and breadcrumb leaves through the redaction layer."""

from __future__ import annotations

import os
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.asyncio import AsyncioIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

from bot.redaction import SECRET_KEYS, Redactor, redactor
from bot.settings import Settings


def _before_send(redact: Redactor):
    def hook(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        return redact.scrub(event)
    return hook


def _before_breadcrumb(redact: Redactor):
    def hook(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        return redact.scrub(crumb)
    return hook


def setup_sentry(settings: Settings, version: str, redact: Redactor = redactor, **options: Any) -> bool:
    """Initialise Sentry when SENTRY_DSN is set (call inside the running loop: asyncio integration)."""
    if settings.sentry_dsn is None:
        return False
    environment = settings.sentry_environment or os.environ.get("RAILWAY_ENVIRONMENT_NAME") or (
        "embedded" if settings.embedded else "production")
    release = os.environ.get("RAILWAY_GIT_COMMIT_SHA") or f"phantomdesk@{version}"
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=environment,
        release=release,
        integrations=[AsyncioIntegration()],
        event_scrubber=EventScrubber(denylist=sorted({*DEFAULT_DENYLIST, *SECRET_KEYS}), recursive=True),
        before_send=_before_send(redact),
        before_breadcrumb=_before_breadcrumb(redact),
        **options,
    )
    return True
