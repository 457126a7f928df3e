"""Errors of the signing package, each with a stable ``code`` that clients and tests match on.

Input errors (``InvalidInput`` subclasses) mean the document or an option cannot be used; nothing was
signed and no output file was written. Token errors come from ``token_drivers.errors`` unchanged.
"""

from __future__ import annotations

from qsign.errors import ConfigError, InvalidInput, QsignError
from qsign.i18n import N_

__all__ = [
    "SigningFailed",
    "InputNotFound",
    "InputNotFile",
    "InputEmpty",
    "NotAPdf",
    "PdfMalformed",
    "PdfEncrypted",
    "PdfPasswordIncorrect",
    "PdfSigningNotAllowed",
    "OutputInvalid",
    "PageOutOfRange",
    "RectInvalid",
    "RectOutsidePage",
    "SealImageInvalid",
    "FontNotFound",
    "FontUnsupported",
    "DigestNotAllowed",
    "KeyTypeUnsupported",
    "ChainNotFound",
    "PinFileUnreadable",
    "OptionNotApplicable",
]


class SigningFailed(QsignError):
    code = "signing_failed"
    message_template = N_("Signing {path} failed: {reason}")


class InputNotFound(InvalidInput):
    code = "input_not_found"
    message_template = N_("The input file {path} does not exist.")
    http_status = 404


class InputNotFile(InvalidInput):
    code = "input_not_file"
    message_template = N_("The input {path} is not a regular file. Give the path of a document.")


class InputEmpty(InvalidInput):
    code = "input_empty"
    message_template = N_("The input file {path} is empty. There is nothing to sign.")


class NotAPdf(InvalidInput):
    code = "not_a_pdf"
    message_template = N_("The file {path} is not a PDF (no %PDF- header). "
                          "Sign it with --format cades to get a detached .p7s signature.")


class PdfMalformed(InvalidInput):
    code = "pdf_malformed"
    message_template = N_("The PDF {path} is damaged or truncated and cannot be signed: {reason}")


class PdfEncrypted(InvalidInput):
    code = "pdf_encrypted"
    message_template = N_("The PDF {path} is encrypted. Signing it needs the document's password.")


class PdfPasswordIncorrect(InvalidInput):
    code = "pdf_password_incorrect"
    message_template = N_("The password for the encrypted PDF {path} is incorrect.")


class PdfSigningNotAllowed(InvalidInput):
    code = "pdf_signing_not_allowed"
    message_template = N_("The PDF {path} does not allow another signature: {reason}")
    http_status = 409


class OutputInvalid(InvalidInput):
    code = "output_invalid"
    message_template = N_("The output path {path} cannot be used: {reason}")


class PageOutOfRange(InvalidInput):
    code = "page_out_of_range"
    message_template = N_("Page {page} does not exist; the document has {count} pages. "
                          "Pages count from 1, negative numbers count from the last page.")


class RectInvalid(InvalidInput):
    code = "rect_invalid"
    message_template = N_("The rectangle {rect} is invalid. Give x1,y1,x2,y2 in PDF points "
                          "with 0 <= x1 < x2 and 0 <= y1 < y2.")


class RectOutsidePage(InvalidInput):
    code = "rect_outside_page"
    message_template = N_("The rectangle {rect} does not fit on page {page}, whose media box is {box} "
                          "(PDF points, x1,y1,x2,y2).")


class SealImageInvalid(InvalidInput):
    code = "seal_image_invalid"
    message_template = N_("The seal image {path} cannot be used: {reason}")


class FontNotFound(ConfigError):
    code = "font_not_found"
    message_template = N_("The CJK font {path} for the visible signature was not found. "
                          "Install the Debian package fonts-noto-cjk or give another OpenType font.")


class FontUnsupported(ConfigError):
    code = "font_unsupported"
    message_template = N_("The font {path} cannot be used for the visible signature: {reason}")


class DigestNotAllowed(InvalidInput):
    code = "digest_not_allowed"
    message_template = N_("The digest algorithm {digest} is not allowed. Use sha256, sha384 or sha512.")


class KeyTypeUnsupported(InvalidInput):
    code = "key_type_unsupported"
    message_template = N_("Key {key} has type {key_type}, which qsign cannot sign with "
                          "(supported: RSA, and EC for ECDSA). RSA-PSS needs an RSA key.")


class ChainNotFound(ConfigError):
    code = "chain_not_found"
    message_template = N_("The CA certificate file {path} named in the [trust] section cannot be read: {reason}")


class PinFileUnreadable(InvalidInput):
    code = "pin_file_unreadable"
    message_template = N_("The PIN file {path} cannot be read: {reason}")


class OptionNotApplicable(InvalidInput):
    code = "option_not_applicable"
    message_template = N_("The option {option} applies to PDF signatures only, not to {format}.")
