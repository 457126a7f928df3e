"""Hand-built malformed PDFs for the verification tests: reference loops, cycles and broken xrefs.

``build_pdf`` writes the objects given as text with a correct cross-reference table (or stream), so that
each file is malformed only in the way its builder intends.
"""

from __future__ import annotations

import struct
import zlib


def build_pdf(objects: dict[int, bytes], root: int = 1, *, xref_stream: dict[int, tuple[int, int]] | None = None
              ) -> bytes:
    """Return a PDF with ``objects`` (number → body without ``obj``/``endobj``).

    With ``xref_stream`` (object number → (object stream number, index)), those objects are listed as
    compressed in a cross-reference stream instead of a table; their bodies must then be inside the
    object streams given in ``objects``.
    """
    output = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for number, body in sorted(objects.items()):
        offsets[number] = len(output)
        output += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    size = max([*objects, *(xref_stream or {})]) + 2

    if xref_stream is None:
        xref_offset = len(output)
        output += f"xref\n0 {size - 1}\n0000000000 65535 f \n".encode()
        for number in range(1, size - 1):
            output += (f"{offsets[number]:010d} 00000 n \n" if number in offsets else "0000000000 65535 f \n").encode()
        output += f"trailer\n<< /Size {size - 1} /Root {root} 0 R >>\nstartxref\n{xref_offset}\n%%EOF\n".encode()
        return bytes(output)

    xref_number = size - 1
    rows = bytearray(struct.pack(">BIH", 0, 0, 65535))
    for number in range(1, size):
        if number in offsets:
            rows += struct.pack(">BIH", 1, offsets[number], 0)
        elif number in xref_stream:
            stream_number, index = xref_stream[number]
            rows += struct.pack(">BIH", 2, stream_number, index)
        elif number == xref_number:
            rows += struct.pack(">BIH", 1, len(output), 0)
        else:
            rows += struct.pack(">BIH", 0, 0, 65535)
    data = zlib.compress(bytes(rows))
    xref_offset = len(output)
    output += (f"{xref_number} 0 obj\n<< /Type /XRef /Size {size} /W [1 4 2] /Root {root} 0 R "
               f"/Filter /FlateDecode /Length {len(data)} >>\nstream\n").encode() + data + b"\nendstream\nendobj\n"
    output += f"startxref\n{xref_offset}\n%%EOF\n".encode()
    return bytes(output)


_PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"


def circular_page_tree() -> bytes:
    """The page tree's /Kids contains the page tree node itself, and a child node points back to it."""
    return build_pdf({1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [4 0 R] >> >>",
                      2: b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
                      3: b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
                      4: b"<< /FT /Sig /T (Signature1) /P 3 0 R >>"})


def circular_field_tree() -> bytes:
    """The AcroForm field tree is a cycle: two fields are each other's kid."""
    return build_pdf({1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [4 0 R] >> >>",
                      2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                      3: _PAGE,
                      4: b"<< /T (a) /Kids [5 0 R] >>",
                      5: b"<< /T (b) /Parent 4 0 R /Kids [4 0 R] >>"})


def object_stream_loop() -> bytes:
    """An object stream whose /Length is an object stored inside that same object stream."""
    inner = b"6 0 << /FT /Sig /T (Signature1) >>"
    header_length = inner.index(b"<<")
    return build_pdf({1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [6 0 R] >> >>",
                      2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                      3: _PAGE,
                      5: f"<< /Type /ObjStm /N 1 /First {header_length} /Length 6 0 R >>\nstream\n".encode()
                      + inner + b"\nendstream"},
                     xref_stream={6: (5, 0)})


def reference_loop() -> bytes:
    """The catalog's /AcroForm is a reference to a reference to itself."""
    return build_pdf({1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm 4 0 R >>",
                      2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                      3: _PAGE,
                      4: b"5 0 R",
                      5: b"4 0 R"})


def broken_xref(data: bytes) -> bytes:
    """Point ``startxref`` into the middle of the file, where no cross-reference section starts."""
    position = data.rindex(b"startxref")
    return data[:position] + b"startxref\n" + str(len(data) // 3).encode() + b"\n%%EOF\n"
