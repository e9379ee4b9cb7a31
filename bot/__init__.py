"""phantomdesk's process host and Telegram transport (aiogram 3)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("phantomdesk")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
