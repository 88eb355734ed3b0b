"""Settings read from the environment.

v3 introduced pinned notes with a per-user cap, and made the cap a required setting
without giving it a default: a release that forgets to set it is broken, and /health says so.
"""

import os


class SettingError(RuntimeError):
    pass


def max_pinned_notes() -> int:
    raw = os.environ.get("MAX_PINNED_NOTES")
    if raw is None:
        raise SettingError("setting MAX_PINNED_NOTES is not set (required since v3, e.g. 5)")
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"setting MAX_PINNED_NOTES must be a number, got {raw!r}") from None
    if value < 0:
        raise SettingError(f"setting MAX_PINNED_NOTES must not be negative, got {value}")
    return value
