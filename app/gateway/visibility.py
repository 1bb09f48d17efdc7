"""Who may read what: a read made for a channel of some visibility sees only memories at most as
visible as that channel. A public channel never sees internal or private memories."""

from __future__ import annotations

from app.models import Visibility

_ALLOWED: dict[str, frozenset[str]] = {
    "public": frozenset({"public"}),
    "internal": frozenset({"public", "internal"}),
    "private": frozenset({"public", "internal", "private"}),
}


def allowed(channel_visibility: Visibility | None) -> frozenset[str]:
    """Visibilities a read may return. No channel given means a private (trusted, tenant) read."""
    return _ALLOWED[channel_visibility or "private"]


def visible(memory_visibility: str, channel_visibility: Visibility | None) -> bool:
    return memory_visibility in allowed(channel_visibility)
