"""Inputs that cannot be signed: each gets its stable error code and leaves no output file behind."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from helpers.signing_checks import make_encrypted_pdf, make_signer, open_profile, validate_pdf
from qsign.errors import QsignError
from signing.appearance import VisibleSignature, parse_rect
from signing.cades import sign_detached
from signing.pades import PadesOptions, sign_pdf

REAL_PDFS = Path(__file__).parent / "data" / "real"
XTU = REAL_PDFS / "xtu.pdf"
USER_PASSWORD = b"user-secret"
OWNER_PASSWORD = b"owner-secret"


@pytest.fixture()
def signer(softhsm_state):
    with open_profile(softhsm_state, "officer_ec") as key:
        yield make_signer(softhsm_state, key)


def _write_case(directory: Path, case: str) -> Path:
    """Create the bad input named ``case`` in ``directory`` and return its path."""
    original = XTU.read_bytes()
    path = directory / f"{case}.pdf"
    if case == "truncated":
        path.write_bytes(original[: len(original) // 2])
    elif case == "truncated_keeps_trailer":
        path.write_bytes(original[: len(original) // 3] + original[-3000:])
    elif case == "header_only":
        path.write_bytes(b"%PDF-1.7\n%%EOF\n")
    elif case == "not_pdf":
        path.write_text("纳税申报表\n这不是 PDF。\n", encoding="utf-8")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "directory":
        path.mkdir()
    elif case == "encrypted":
        make_encrypted_pdf(XTU, path, USER_PASSWORD, OWNER_PASSWORD)
    elif case != "missing":
        raise ValueError(case)
    return path


BAD_PDF_CASES = [
    ("truncated", "pdf_malformed"),
    ("truncated_keeps_trailer", "pdf_malformed"),
    ("header_only", "pdf_malformed"),
    ("not_pdf", "not_a_pdf"),
    ("empty", "input_empty"),
    ("directory", "input_not_file"),
    ("missing", "input_not_found"),
    ("encrypted", "pdf_encrypted"),
]


def _leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@pytest.mark.parametrize(("case", "code"), BAD_PDF_CASES, ids=[case for case, _ in BAD_PDF_CASES])
def test_bad_pdf_rejected_without_output(signer, tmp_path, case, code):
    source = _write_case(tmp_path, case)
    output_dir = tmp_path / "out"
    output_dir.mkdir()

    with pytest.raises(QsignError) as caught:
        sign_pdf(signer, source, output_dir / "signed.pdf")

    assert caught.value.code == code
    assert _leftovers(output_dir) == []
    assert str(source) in caught.value.message("zh_CN")


@pytest.mark.parametrize(("case", "code"), [("empty", "input_empty"), ("directory", "input_not_file"),
                                            ("missing", "input_not_found")])
def test_bad_cades_input_rejected_without_output(signer, tmp_path, case, code):
    source = _write_case(tmp_path, case)
    output_dir = tmp_path / "out"
    output_dir.mkdir()

    with pytest.raises(QsignError) as caught:
        sign_detached(signer, source, output_dir / "signed.p7s")

    assert caught.value.code == code
    assert _leftovers(output_dir) == []


def test_encrypted_pdf_wrong_password(signer, tmp_path):
    source = _write_case(tmp_path, "encrypted")
    output = tmp_path / "signed.pdf"

    with pytest.raises(QsignError) as caught:
        sign_pdf(signer, source, output, PadesOptions(pdf_password=b"wrong"))

    assert caught.value.code == "pdf_password_incorrect"
    assert not output.exists()


def test_encrypted_pdf_with_password_signs(signer, softhsm_state, tmp_path):
    source = _write_case(tmp_path, "encrypted")
    output = tmp_path / "signed.pdf"

    sign_pdf(signer, source, output, PadesOptions(pdf_password=USER_PASSWORD))

    (status,) = validate_pdf(output, softhsm_state, password=USER_PASSWORD)
    assert status.intact
    assert status.valid
    assert status.trusted


def test_existing_output_kept_on_failure(signer, tmp_path):
    source = _write_case(tmp_path, "truncated")
    output = tmp_path / "signed.pdf"
    output.write_bytes(b"earlier result")

    with pytest.raises(QsignError):
        sign_pdf(signer, source, output)

    assert output.read_bytes() == b"earlier result"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["signed.pdf", "truncated.pdf"]


@pytest.mark.parametrize(("output_name", "code"), [("missing-dir/signed.pdf", "output_invalid"),
                                                   (".", "output_invalid")])
def test_unusable_output_path(signer, tmp_path, output_name, code):
    with pytest.raises(QsignError) as caught:
        sign_pdf(signer, XTU, tmp_path / output_name)

    assert caught.value.code == code


def test_output_same_as_input_rejected(signer, tmp_path):
    source = tmp_path / "doc.pdf"
    source.write_bytes(XTU.read_bytes())

    with pytest.raises(QsignError) as caught:
        sign_pdf(signer, source, source)

    assert caught.value.code == "output_invalid"
    assert source.read_bytes() == XTU.read_bytes()


VISIBLE_CASES = [
    (VisibleSignature(page=2, rect=(10, 10, 100, 60)), "page_out_of_range"),
    (VisibleSignature(page=-2, rect=(10, 10, 100, 60)), "page_out_of_range"),
    (VisibleSignature(page=0, rect=(10, 10, 100, 60)), "page_out_of_range"),
    (VisibleSignature(page=1, rect=(100, 10, 50, 60)), "rect_invalid"),
    (VisibleSignature(page=1, rect=(100, 10, 300, 60)), "rect_outside_page"),
    (VisibleSignature(page=1, rect=(10, 10, 100, 60), seal_image=XTU), "seal_image_invalid"),
    (VisibleSignature(page=1, rect=(10, 10, 100, 60), font_path=Path("/nonexistent/font.ttf")), "font_not_found"),
    (VisibleSignature(page=1, rect=(10, 10, 100, 60),
                      font_path=Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf")),
     "font_unsupported"),
]


@pytest.mark.parametrize(("visible", "code"), VISIBLE_CASES, ids=[code for _, code in VISIBLE_CASES])
def test_bad_visible_signature_rejected(signer, tmp_path, visible, code):
    if visible.font_path.name == "DroidSansFallbackFull.ttf" and not visible.font_path.exists():
        pytest.skip("fonts-droid-fallback is not installed")
    output = tmp_path / "signed.pdf"

    with pytest.raises(QsignError) as caught:
        sign_pdf(signer, XTU, output, PadesOptions(visible=visible))

    assert caught.value.code == code
    assert not output.exists()


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "10,10,5,20", "-1,0,10,10", ""])
def test_parse_rect_rejects(text):
    with pytest.raises(QsignError) as caught:
        parse_rect(text)

    assert caught.value.code == "rect_invalid"


def test_parse_rect_accepts_points():
    assert parse_rect("10,20.5,110,120") == (10.0, 20.5, 110.0, 120.0)


def test_pin_not_logged(softhsm_state, tmp_path, caplog):
    pin = (softhsm_state / "secrets" / "officer.pin").read_text(encoding="utf-8").splitlines()[0]
    caplog.set_level(logging.DEBUG)

    with open_profile(softhsm_state, "officer_qualified") as key:
        signer = make_signer(softhsm_state, key)
        sign_pdf(signer, XTU, tmp_path / "signed.pdf")
        sign_detached(signer, XTU, tmp_path / "signed.p7s")
        with pytest.raises(QsignError) as caught:
            sign_pdf(signer, _write_case(tmp_path, "truncated"), tmp_path / "bad.pdf")

    assert caplog.records, "expected log lines from the signing run"
    assert pin not in caplog.text
    assert pin not in caught.value.message("zh_CN")
    assert pin not in caught.value.message("en")
    assert pin not in str(caught.value.to_dict("en"))
