"""Which form fields show something different than in a signed revision: value or appearance.

pyHanko's difference analysis lists a form field as changed whenever an object near it was written
again, e.g. the page whose ``/Annots`` contains its widget when a later signature fills another field.
To tell a real change from such a rewrite, this module compares what each field shows (``/V``,
``/AS`` and the appearance streams of the field and its widgets) in the signed revision and now.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader

__all__ = ["fields_changed_since"]

_logger = logging.getLogger(__name__)

#: Entries whose values decide what a field shows; /P and /Parent point back up and are skipped.
_SHOWN_ENTRIES = ("/V", "/AS", "/AP", "/MK", "/DA", "/Opt")
#: Nesting limit of fields and of the objects compared, against reference loops in hostile files.
_MAX_DEPTH = 12
_STREAM_FORMAT_KEYS = {"/Length", "/Filter", "/DecodeParms"}


def _fingerprint(value: object, depth: int = 0) -> object:
    """Return a comparable form of a PDF object, with references resolved and streams decoded."""
    if depth > _MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, generic.IndirectObject):
        return _fingerprint(value.get_object(), depth + 1)
    if isinstance(value, generic.StreamObject):
        entries = tuple(sorted((key, _fingerprint(item, depth + 1)) for key, item in value.items()
                               if key not in _STREAM_FORMAT_KEYS))
        return "stream", entries, value.data
    if isinstance(value, generic.DictionaryObject):
        return tuple(sorted((key, _fingerprint(value.raw_get(key), depth + 1)) for key in value
                            if key not in ("/P", "/Parent", "/Kids")))
    if isinstance(value, generic.ArrayObject):
        return tuple(_fingerprint(item, depth + 1) for item in value)
    return repr(value)


def _fields(root: generic.DictionaryObject) -> Iterator[tuple[str, generic.DictionaryObject]]:
    """Yield (fully qualified name, field dictionary) of every field in the ``/AcroForm`` tree."""
    form = root.get("/AcroForm")
    if form is None:
        return
    pending = [(None, reference, 0) for reference in form.get_object().get("/Fields", ())]
    while pending:
        parent_name, reference, depth = pending.pop()
        node = reference.get_object() if isinstance(reference, generic.IndirectObject) else reference
        if not isinstance(node, generic.DictionaryObject) or depth > _MAX_DEPTH:
            continue
        partial = node.get("/T")
        name = parent_name if partial is None else (f"{parent_name}.{partial}" if parent_name else str(partial))
        if name is not None:
            yield name, node
        pending.extend((name, kid, depth + 1) for kid in node.get("/Kids", ()))


def _shown(node: generic.DictionaryObject) -> object:
    """Fingerprint what one field shows: its own entries and those of its widget kids (no /T)."""
    own = tuple((key, _fingerprint(node.raw_get(key))) for key in _SHOWN_ENTRIES if key in node)
    widgets = tuple(_fingerprint(kid) for kid in node.get("/Kids", ())
                    if isinstance(kid.get_object(), generic.DictionaryObject) and "/T" not in kid.get_object())
    return own, widgets


def fields_changed_since(reader: PdfFileReader, revision: int, names: Iterable[str]) -> list[str]:
    """Return the names among ``names`` whose value or appearance differs from the signed ``revision``.

    A field missing from the signed revision counts as changed. When the form cannot be read, every
    name counts as changed, so that a damaged form never hides a change.
    """
    wanted = set(names)
    if not wanted:
        return []
    try:
        before = {name: _shown(node) for name, node in _fields(reader.get_historical_root(revision))
                  if name in wanted}
        after = {name: _shown(node) for name, node in _fields(reader.root) if name in wanted}
    except (PdfError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        _logger.info("cannot compare the form fields of revision %d with the last one: %s", revision, exc)
        return sorted(wanted)
    return sorted(name for name in wanted if name not in before or before[name] != after.get(name))
