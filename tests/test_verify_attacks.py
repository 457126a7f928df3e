"""Known PDF signature attacks never end TOTAL_PASSED: each case asserts the exact verdict and sub-indication.

Every attacked file starts as a real PDF from the corpus, signed with pyHanko over the test PKI.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import verify_attacks as attacks
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from verify_pki import TestPki, add_document_timestamp, real_pdf, sign_pdf_bytes, test_pki  # noqa: F401  (fixtures)

from verify_service.report import Report
from verify_service.trust import trust_from_files
from verify_service.validate import verify_file

SOURCE = "xiaoshan-sample.pdf"


def _verify(data: bytes, pki: TestPki, directory: Path, name: str = "attacked.pdf") -> Report:
    path = directory / name
    path.write_bytes(data)
    return verify_file(path, trust=trust_from_files([pki.root_pem], [pki.intermediate_pem]))


def _certify(data: bytes, pki: TestPki, permission: fields.MDPPerm) -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    metadata = signers.PdfSignatureMetadata(field_name="Certification", certify=True,
                                            docmdp_permissions=permission)
    return signers.sign_pdf(writer, metadata, signer=pki.signer).getvalue()


@pytest.fixture(scope="module")
def signed(test_pki: TestPki) -> bytes:
    return sign_pdf_bytes(real_pdf(SOURCE).read_bytes(), test_pki.signer)


@pytest.fixture(scope="module")
def signed_with_overlay(test_pki: TestPki) -> bytes:
    """Signed after a white overlay was added to page 1: the material of the shadow attacks."""
    return sign_pdf_bytes(attacks.with_overlay(real_pdf(SOURCE).read_bytes()), test_pki.signer)


# (name, builder over the signed file, expected indication, sub-indication, error code of the signature)
SINGLE_SIGNATURE_ATTACKS: list[tuple[str, Callable[[bytes], bytes], str, str, str]] = [
    ("usf_contents_zeroed", attacks.usf_contents_zeroed, "TOTAL_FAILED", "FORMAT_FAILURE", "signature_malformed"),
    ("usf_contents_removed", attacks.usf_contents_removed, "TOTAL_FAILED", "FORMAT_FAILURE",
     "signature_malformed"),
    ("usf_byte_range_removed", attacks.usf_byte_range_removed, "TOTAL_FAILED", "FORMAT_FAILURE",
     "signature_malformed"),
    ("usf_byte_range_zero", attacks.usf_byte_range_broken, "TOTAL_FAILED", "HASH_FAILURE", "digest_mismatch"),
    ("byte_range_overlapping", attacks.byte_range_overlapping, "TOTAL_FAILED", "HASH_FAILURE",
     "coverage_incomplete"),
    ("signature_wrapping", attacks.signature_wrapping, "TOTAL_FAILED", "FORMAT_FAILURE", "signature_malformed"),
    ("isa_page_content", attacks.isa_page_content, "TOTAL_FAILED", "FORMAT_FAILURE", "modified_after_signing"),
    ("isa_replaced_signature_dictionary", attacks.isa_replaced_signature_dictionary, "TOTAL_FAILED",
     "FORMAT_FAILURE", "coverage_incomplete"),
    ("annotation_after_approval", attacks.add_annotation, "TOTAL_FAILED", "FORMAT_FAILURE",
     "modified_after_signing"),
]


@pytest.mark.parametrize(("name", "build", "indication", "sub_indication", "code"), SINGLE_SIGNATURE_ATTACKS,
                         ids=[case[0] for case in SINGLE_SIGNATURE_ATTACKS])
def test_attack_detected(name: str, build: Callable[[bytes], bytes], indication: str, sub_indication: str,
                         code: str, signed: bytes, test_pki: TestPki, tmp_path: Path) -> None:
    report = _verify(build(signed), test_pki, tmp_path)

    assert report.verdict == indication
    assert report.sub_indication == sub_indication
    signature = report.signatures[0]
    assert (signature.indication, signature.sub_indication) == (indication, sub_indication)
    assert code in signature.errors


SHADOW_ATTACKS = [
    ("hide", attacks.shadow_hide),
    ("replace_referenced_object", attacks.shadow_replace_referenced),
    ("hide_and_replace_page", attacks.shadow_hide_and_replace),
]


@pytest.mark.parametrize(("name", "build"), SHADOW_ATTACKS, ids=[case[0] for case in SHADOW_ATTACKS])
def test_shadow_attack_detected(name: str, build: Callable[[bytes], bytes], signed_with_overlay: bytes,
                                test_pki: TestPki, tmp_path: Path) -> None:
    untouched = _verify(signed_with_overlay, test_pki, tmp_path, "prepared.pdf")
    report = _verify(build(signed_with_overlay), test_pki, tmp_path)

    assert untouched.verdict == "TOTAL_PASSED"
    assert (report.verdict, report.sub_indication) == ("TOTAL_FAILED", "FORMAT_FAILURE")
    signature = report.signatures[0]
    assert signature.intact is True and signature.valid is True
    assert signature.modifications == "other"
    assert signature.changed_objects, "the report names what changed"
    assert "modified_after_signing" in signature.errors


def test_certification_no_changes_then_signature(test_pki: TestPki, tmp_path: Path) -> None:
    """A certification signature with DocMDP level 1 (no changes), then an approval signature."""
    certified = _certify(real_pdf(SOURCE).read_bytes(), test_pki, fields.MDPPerm.NO_CHANGES)
    report = _verify(attacks.sign_despite_certification(certified, test_pki.signer), test_pki, tmp_path)

    certification, approval = report.signatures
    assert (report.verdict, report.sub_indication) == ("TOTAL_FAILED", "FORMAT_FAILURE")
    assert (certification.indication, certification.sub_indication) == ("TOTAL_FAILED", "FORMAT_FAILURE")
    assert certification.modifications == "form_filling"
    assert certification.modifications_allowed is False
    assert approval.indication == "TOTAL_PASSED"


def test_certification_fill_forms_then_annotation(test_pki: TestPki, tmp_path: Path) -> None:
    certified = _certify(real_pdf(SOURCE).read_bytes(), test_pki, fields.MDPPerm.FILL_FORMS)
    report = _verify(attacks.add_annotation(certified), test_pki, tmp_path)

    assert (report.verdict, report.sub_indication) == ("TOTAL_FAILED", "FORMAT_FAILURE")
    assert report.signatures[0].modifications_allowed is False


def test_second_valid_first_broken_by_update(signed: bytes, test_pki: TestPki, tmp_path: Path) -> None:
    """An update changes page content, then a second signer signs: the second passes, the first fails."""
    updated = attacks.isa_page_content(signed)
    report = _verify(sign_pdf_bytes(updated, test_pki.signer, "Signature2"), test_pki, tmp_path)

    first, second = report.signatures
    assert (first.indication, first.sub_indication) == ("TOTAL_FAILED", "FORMAT_FAILURE")
    assert (second.indication, second.sub_indication) == ("TOTAL_PASSED", None)
    assert (report.verdict, report.sub_indication) == ("TOTAL_FAILED", "FORMAT_FAILURE")


def test_bytes_appended_after_signed_range(signed: bytes, test_pki: TestPki, tmp_path: Path) -> None:
    """Bytes after %%EOF that no xref section explains are outside the signature."""
    report = _verify(signed + b"\n1 0 obj (appended) endobj\n", test_pki, tmp_path)

    assert (report.verdict, report.sub_indication) == ("INDETERMINATE", "SIG_CONSTRAINTS_FAILURE")
    signature = report.signatures[0]
    assert (signature.intact, signature.valid, signature.coverage) == (True, True, "entire_revision")
    assert "unexplained_bytes_after_signature" in signature.errors


@pytest.fixture(scope="module")
def signed_form(test_pki: TestPki) -> bytes:
    """A real PDF with a visible text field Amount = 100.00 and an empty signature field, then signed."""
    with_field = attacks.with_text_field(real_pdf(SOURCE).read_bytes())
    writer = IncrementalPdfFileWriter(io.BytesIO(with_field), strict=False)
    fields.append_signature_field(writer, fields.SigFieldSpec("Signature2"))
    output = io.BytesIO()
    writer.write(output)
    return sign_pdf_bytes(output.getvalue(), test_pki.signer)


@pytest.mark.parametrize("appearance", [True, False], ids=["value_and_appearance", "value_only"])
def test_form_field_changed_after_approval(signed_form: bytes, test_pki: TestPki, tmp_path: Path,
                                           appearance: bool) -> None:
    """pyHanko allows form filling after an approval signature; a changed text field still changes what
    the document shows, so the signature is INDETERMINATE and the report names the field."""
    untouched = _verify(signed_form, test_pki, tmp_path, "form.pdf")
    report = _verify(attacks.fill_text_field(signed_form, "900.00", appearance=appearance), test_pki, tmp_path)

    assert untouched.verdict == "TOTAL_PASSED"
    assert (report.verdict, report.sub_indication) == ("INDETERMINATE", "SIG_CONSTRAINTS_FAILURE")
    signature = report.signatures[0]
    assert (signature.intact, signature.valid, signature.trusted) == (True, True, True)
    assert signature.modifications == "form_filling"
    assert "form field Amount" in signature.changed_objects
    assert "form_field_changed_after_signing" in signature.errors


def test_later_signature_and_timestamp_still_pass(signed_form: bytes, test_pki: TestPki, tmp_path: Path) -> None:
    """Signing the empty signature field and adding a document timestamp change no visible content."""
    countersigned = sign_pdf_bytes(signed_form, test_pki.signer, "Signature2")
    report = _verify(add_document_timestamp(countersigned, test_pki.timestamper), test_pki, tmp_path)

    assert (report.verdict, report.sub_indication) == ("TOTAL_PASSED", None)
    first, second, timestamp = report.signatures
    assert first.modifications == "form_filling"
    assert first.changed_objects == ["form field Signature2"]
    assert second.modifications == "lta_updates"
    assert "form_field_changed_after_signing" not in first.errors + second.errors + timestamp.errors
