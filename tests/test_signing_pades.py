"""PAdES signatures with the SoftHSM2 keys of the test session, checked by pyHanko's validator."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from helpers.signing_checks import make_signer, open_profile, signature_field_names, validate_pdf
from signing.appearance import VisibleSignature
from signing.pades import PadesOptions, next_field_name, sign_pdf

REAL_PDFS = Path(__file__).parent / "data" / "real"
XTU = REAL_PDFS / "xtu.pdf"
XIAOSHAN = REAL_PDFS / "xiaoshan-sample.pdf"
MULTI_PAGE = REAL_PDFS / "fduthesis-en.pdf"


def assert_all_valid(path: Path, state_dir: Path, count: int) -> list:
    statuses = validate_pdf(path, state_dir)
    assert len(statuses) == count
    for status in statuses:
        assert status.intact, status.pretty_print_details()
        assert status.valid, status.pretty_print_details()
        assert status.trusted, status.pretty_print_details()
    return statuses


# profile, PSS, expected CMS signature algorithm, expected digest
KEY_CASES = [
    ("officer", False, "sha256_rsa", "sha256"),
    ("officer", True, "rsassa_pss", "sha256"),
    ("officer_ec", False, "sha256_ecdsa", "sha256"),
    ("seal", False, "sha256_rsa", "sha256"),
    ("seal", True, "rsassa_pss", "sha256"),
    ("seal_ec", False, "sha384_ecdsa", "sha384"),
]


@pytest.mark.parametrize(("profile", "pss", "mechanism", "digest"), KEY_CASES,
                         ids=[f"{case[0]}-{case[2]}" for case in KEY_CASES])
def test_pades_signature_validates(softhsm_state, tmp_path, profile, pss, mechanism, digest):
    output = tmp_path / "signed.pdf"
    with open_profile(softhsm_state, profile) as key:
        result = sign_pdf(make_signer(softhsm_state, key, pss=pss), XTU, output,
                          PadesOptions(reason="审批通过", location="示例市"))

    assert result.mechanism == mechanism
    assert result.digest_algorithm == digest
    assert result.field_name == "Signature1"
    assert result.size == output.stat().st_size

    (status,) = assert_all_valid(output, softhsm_state, 1)
    assert status.md_algorithm == digest
    assert status.pkcs7_signature_mechanism == mechanism
    with output.open("rb") as handle:
        signature = PdfFileReader(handle).embedded_signatures[0]
        assert signature.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
        assert signature.sig_object["/Reason"] == "审批通过"
        assert signature.sig_object["/Location"] == "示例市"


@pytest.mark.parametrize("digest", ["sha384", "sha512"])
def test_pades_digest_option(softhsm_state, tmp_path, digest):
    output = tmp_path / "signed.pdf"
    with open_profile(softhsm_state, "officer") as key:
        sign_pdf(make_signer(softhsm_state, key, digest_algorithm=digest), XTU, output)

    (status,) = assert_all_valid(output, softhsm_state, 1)
    assert status.md_algorithm == digest
    assert status.pkcs7_signature_mechanism == f"{digest}_rsa"


@pytest.mark.parametrize("pdf", sorted(REAL_PDFS.glob("*.pdf")), ids=lambda path: path.name)
def test_pades_every_real_pdf(softhsm_state, tmp_path, pdf):
    output = tmp_path / "signed.pdf"
    with open_profile(softhsm_state, "seal") as key:
        sign_pdf(make_signer(softhsm_state, key), pdf, output)

    assert_all_valid(output, softhsm_state, 1)
    # An incremental update keeps the original bytes as the prefix of the signed file.
    original = pdf.read_bytes()
    assert output.read_bytes()[:len(original)] == original


def test_pades_always_authenticate_two_documents(softhsm_state, tmp_path):
    with open_profile(softhsm_state, "officer_qualified") as key:
        assert key.always_authenticate
        signer = make_signer(softhsm_state, key)
        sign_pdf(signer, XTU, tmp_path / "first.pdf")
        sign_pdf(signer, MULTI_PAGE, tmp_path / "second.pdf")

    assert_all_valid(tmp_path / "first.pdf", softhsm_state, 1)
    assert_all_valid(tmp_path / "second.pdf", softhsm_state, 1)


def test_pades_second_signature_keeps_first(softhsm_state, tmp_path):
    once = tmp_path / "once.pdf"
    twice = tmp_path / "twice.pdf"
    with open_profile(softhsm_state, "officer") as key:
        sign_pdf(make_signer(softhsm_state, key), XIAOSHAN, once)
    with open_profile(softhsm_state, "seal_ec") as key:
        result = sign_pdf(make_signer(softhsm_state, key), once, twice)

    assert result.field_name == "Signature2"
    assert signature_field_names(twice) == ["Signature1", "Signature2"]
    first, second = assert_all_valid(twice, softhsm_state, 2)
    assert first.signing_cert.subject.native["common_name"] == "张伟"
    assert second.signing_cert.subject.native["common_name"] == "示例市税务局电子印章"
    # The first signature covers the first revision only; the second covers the whole file.
    assert first.coverage.name == "ENTIRE_REVISION"
    assert second.coverage.name == "ENTIRE_FILE"


def test_pades_named_field(softhsm_state, tmp_path):
    output = tmp_path / "signed.pdf"
    with open_profile(softhsm_state, "officer_ec") as key:
        result = sign_pdf(make_signer(softhsm_state, key), XTU, output, PadesOptions(field_name="审批人签名"))

    assert result.field_name == "审批人签名"
    assert signature_field_names(output) == ["审批人签名"]


def test_next_field_name_skips_taken():
    assert next_field_name(set()) == "Signature1"
    assert next_field_name({"Signature1", "Signature3"}) == "Signature2"
    assert next_field_name({"Signature1", "Signature2"}) == "Signature3"


def _page_refs(reader: PdfFileReader) -> list:
    refs = []

    def walk(reference):
        node = reference.get_object()
        if node.get("/Type") == "/Pages":
            for kid in node["/Kids"]:
                walk(kid)
        else:
            refs.append(reference)

    walk(reader.root.raw_get("/Pages"))
    return refs


def _signature_widget_ref(reader: PdfFileReader, field_name: str):
    fields = reader.root["/AcroForm"]["/Fields"]
    for index in range(len(fields)):
        reference = fields.raw_get(index)
        if reference.get_object().get("/T") == field_name:
            return reference
    raise AssertionError(f"no field {field_name}")


def _signature_widget(reader: PdfFileReader, field_name: str):
    return _signature_widget_ref(reader, field_name).get_object()


@pytest.mark.parametrize(("page", "page_index"), [(2, 1), (-1, 13), (14, 13)])
def test_visible_seal_page_and_rect(softhsm_state, tmp_path, page, page_index):
    output = tmp_path / "visible.pdf"
    rect = (380.0, 60.0, 540.0, 220.0)
    with open_profile(softhsm_state, "officer") as key:
        sign_pdf(make_signer(softhsm_state, key), MULTI_PAGE, output,
                 PadesOptions(visible=VisibleSignature(page=page, rect=rect)))

    assert_all_valid(output, softhsm_state, 1)
    with output.open("rb") as handle:
        reader = PdfFileReader(handle)
        widget_ref = _signature_widget_ref(reader, "Signature1")
        widget = widget_ref.get_object()
        page_ref = _page_refs(reader)[page_index]
        assert [float(value) for value in widget["/Rect"]] == list(rect)
        assert widget.raw_get("/P").idnum == page_ref.idnum
        annotations = page_ref.get_object()["/Annots"]
        assert widget_ref.idnum in [annotations.raw_get(index).idnum for index in range(len(annotations))]


def _font_file_sizes(pdf: Path) -> list[int]:
    """Return the stored sizes of the font programs used by the signature widget's appearance."""
    sizes = []
    with pdf.open("rb") as handle:
        reader = PdfFileReader(handle)
        widget = _signature_widget(reader, "Signature1")
        pending = [widget["/AP"]["/N"]]
        while pending:
            stream = pending.pop()
            resources = stream.get("/Resources", {})
            for font in resources.get("/Font", {}).values():
                for descendant in font.get_object().get("/DescendantFonts", []):
                    descriptor = descendant.get_object()["/FontDescriptor"]
                    for key in ("/FontFile2", "/FontFile3"):
                        if key in descriptor:
                            sizes.append(len(descriptor[key].encoded_data))
            for xobject in resources.get("/XObject", {}).values():
                xobject = xobject.get_object()
                if xobject.get("/Subtype") == "/Form":
                    pending.append(xobject)
    return sizes


def test_visible_seal_embeds_font_subset(softhsm_state, tmp_path):
    visible = tmp_path / "visible.pdf"
    invisible = tmp_path / "invisible.pdf"
    with open_profile(softhsm_state, "officer") as key:
        signer = make_signer(softhsm_state, key)
        sign_pdf(signer, XIAOSHAN, visible, PadesOptions(visible=VisibleSignature(page=1, rect=(200, 20, 340, 160))))
        sign_pdf(signer, XIAOSHAN, invisible)

    assert_all_valid(visible, softhsm_state, 1)
    font_sizes = _font_file_sizes(visible)
    assert len(font_sizes) == 1
    # Noto Sans CJK SC is 16 MB as one face; a subset of about 20 glyphs is a few kilobytes.
    assert font_sizes[0] < 64 * 1024
    growth = visible.stat().st_size - invisible.stat().st_size
    assert growth < 128 * 1024, f"visible seal added {growth} bytes"


def test_visible_seal_without_image(softhsm_state, tmp_path):
    output = tmp_path / "text-only.pdf"
    with open_profile(softhsm_state, "officer_ec") as key:
        sign_pdf(make_signer(softhsm_state, key), XTU, output,
                 PadesOptions(visible=VisibleSignature(page=1, rect=(10, 10, 200, 60), seal_image=None)))

    assert_all_valid(output, softhsm_state, 1)
    assert len(_font_file_sizes(output)) == 1


def test_pades_output_replaces_existing_file(softhsm_state, tmp_path):
    output = tmp_path / "signed.pdf"
    shutil.copyfile(XTU, output)
    with open_profile(softhsm_state, "officer_ec") as key:
        sign_pdf(make_signer(softhsm_state, key), MULTI_PAGE, output)

    assert_all_valid(output, softhsm_state, 1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["signed.pdf"]


@pytest.mark.parametrize(("extra_lines", "text_lines"), [((), 2), (("示例市税务局 审核专用",), 3),
                                                         (("税务局", "100% 审核"), 4)])
def test_visible_seal_template_lines(softhsm_state, tmp_path, extra_lines, text_lines):
    output = tmp_path / "lines.pdf"
    visible = VisibleSignature(page=1, rect=(10, 10, 220, 80), seal_image=None, extra_lines=extra_lines)
    with open_profile(softhsm_state, "officer") as key:
        sign_pdf(make_signer(softhsm_state, key), XTU, output, PadesOptions(visible=visible))

    assert_all_valid(output, softhsm_state, 1)
    with output.open("rb") as handle:
        appearance = _signature_widget(PdfFileReader(handle), "Signature1")["/AP"]["/N"]
        # pyHanko's text box shows each line with one TJ operator.
        assert appearance.data.count(b"TJ") == text_lines
