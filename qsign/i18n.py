"""Translations for everything a user reads, from the gettext catalogs in ``qsign/locale``.

The catalogs are the ``.po`` files themselves: they are compiled in memory when first used, so a
source checkout needs no build step and each message has one source of truth. Each package keeps its
messages in its own file, ``qsign/locale/<language>/LC_MESSAGES/<package>.po``; all files of a
language are merged into one catalog. Message ids are the English texts, so ``en`` needs no entries.
"""

from __future__ import annotations

import functools
import gettext
import io
import os
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

__all__ = [
    "DEFAULT_LANGUAGE",
    "SUPPORTED_LANGUAGES",
    "gettext_for",
    "negotiate_language",
    "normalize_language",
    "N_",
    "translate",
]

SUPPORTED_LANGUAGES = ("zh_CN", "en")
DEFAULT_LANGUAGE = "zh_CN"
DOMAIN = "qsign"
LOCALE_DIR = Path(__file__).parent / "locale"


def N_(message: str) -> str:
    """Mark a message for extraction without translating it now."""
    return message


def normalize_language(tag: str | None) -> str | None:
    """Map a language tag (``zh-CN``, ``zh_CN.UTF-8``, ``en-US``, ``zh``) to a supported language."""
    if not tag:
        return None

    tag = tag.split(".")[0].split("@")[0].replace("-", "_").strip().lower()
    if tag.startswith("zh"):
        return "zh_CN"
    if tag.startswith("en") or tag in ("c", "posix"):
        return "en"
    return None


def negotiate_language(accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """Pick the supported language an HTTP ``Accept-Language`` header prefers most."""
    if not accept_language:
        return default

    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        fields = part.strip().split(";")
        quality = 1.0
        for parameter in fields[1:]:
            name, _, value = parameter.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = normalize_language(fields[0])
        if language is not None and quality > 0:
            weighted.append((-quality, position, language))

    if not weighted:
        return default
    return min(weighted)[2]


def language_from_environment(explicit: str | None = None, configured: str | None = None) -> str:
    """Return the CLI language: ``explicit`` (``--lang``), ``QSIGN_LANG``, the config, then ``LC_ALL``/``LANG``."""
    for candidate in (explicit, os.environ.get("QSIGN_LANG"), configured,
                      os.environ.get("LC_ALL"), os.environ.get("LANG")):
        language = normalize_language(candidate)
        if language is not None:
            return language
    return DEFAULT_LANGUAGE


@functools.cache
def _translations(language: str) -> gettext.NullTranslations:
    po_paths = sorted((LOCALE_DIR / language / "LC_MESSAGES").glob("*.po"))
    if not po_paths:
        return gettext.NullTranslations()

    merged = Catalog(locale=language, domain=DOMAIN)
    for po_path in po_paths:
        with po_path.open("rb") as po_file:
            for message in read_po(po_file, locale=language):
                if message.id and message.string and not message.fuzzy:
                    merged[message.id] = message
    compiled = io.BytesIO()
    write_mo(compiled, merged)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def gettext_for(language: str):
    """Return the ``gettext`` function of a supported language."""
    return _translations(normalize_language(language) or DEFAULT_LANGUAGE).gettext


def translate(message: str, language: str, **params: object) -> str:
    """Translate ``message`` into ``language`` and fill its ``{name}`` placeholders."""
    text = gettext_for(language)(message)
    return text.format(**params) if params else text
