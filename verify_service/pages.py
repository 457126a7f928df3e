"""HTML pages of the verification service (jinja2): upload form, login form and the filed report.

Pages exist in zh-CN and English and load one local stylesheet; they contain no script, so the
Content-Security-Policy forbids every script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from qsign import __version__
from qsign.i18n import gettext_for
from verify_service.summary import (
    COVERAGE_LABELS,
    KIND_LABELS,
    MODIFICATION_LABELS,
    PROBLEM_MESSAGES,
    REVOCATION_REASON_LABELS,
    VERDICT_LABELS,
    revocation_text,
)

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_DIR", "render"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: No script at all, styles and images only from the service, forms only to the service.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                           "frame-ancestors 'none'; base-uri 'none'")

_LANGUAGES = (("zh_CN", "中文"), ("en", "English"))
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def render(template: str, language: str, **context: Any) -> str:
    """Render a page in ``language`` (``zh_CN`` or ``en``)."""
    _ = gettext_for(language)

    def yes_no(value: bool | None) -> str:
        if value is None:
            return _("unknown")
        return _("yes") if value else _("no")

    def problem(code: str) -> str:
        return _(PROBLEM_MESSAGES[code]) if code in PROBLEM_MESSAGES else code

    def revocation(status: str, source: str | None) -> str:
        return revocation_text(status, source, _)

    def revocation_reason(code: str) -> str:
        return _(REVOCATION_REASON_LABELS[code]) if code in REVOCATION_REASON_LABELS else code

    context.setdefault("user", None)
    context.setdefault("csrf", "")
    context.setdefault("error", None)
    return _ENVIRONMENT.get_template(template).render(
        _=_, language=language, html_lang="zh-CN" if language == "zh_CN" else "en", languages=_LANGUAGES,
        version=__version__, yes_no=yes_no, problem=problem, revocation=revocation,
        revocation_reason=revocation_reason, verdict_labels=VERDICT_LABELS, kinds=KIND_LABELS,
        coverage=COVERAGE_LABELS, modifications=MODIFICATION_LABELS, **context)
