"""Test material for the verification tests: a software PKI and PDFs signed with pyHanko's SimpleSigner.

The PKI is root CA → intermediate CA → signer, made with pyca/cryptography; the signer certificate has
keyUsage digitalSignature + nonRepudiation and a Chinese subject. A second, unrelated root signs nothing
and serves as the wrong trust anchor. Signing uses pyHanko's own signer on purpose: these tests check the
validator, independently of qsign's signing code.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore

REPOSITORY = Path(__file__).resolve().parent.parent
#: Real PDFs: the copy under tests/data/real when present, else the shared corpus they come from.
REAL_PDF_DIRS = (REPOSITORY / "tests" / "data" / "real", Path("/work/shared/corpus/real"))

SIGNER_COMMON_NAME = "张三"
SIGNER_ORGANIZATION = "国家税务总局测试局"


def real_pdf(name: str) -> Path:
    for directory in REAL_PDF_DIRS:
        if (directory / name).is_file():
            return directory / name
    pytest.skip(f"real PDF {name} not found in {', '.join(map(str, REAL_PDF_DIRS))}")


def _name(common_name: str, organization: str = SIGNER_ORGANIZATION) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _certificate(subject: x509.Name, public_key, issuer: x509.Name, issuer_key, *, ca: bool,
                 key_usage: x509.KeyUsage, extended_key_usage=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                       critical=False)
    )
    if extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended_key_usage), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


_CA_USAGE = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)
_SIGNER_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False)


@dataclass
class TestPki:
    """Certificates as PEM files in ``directory``, and a pyHanko signer for the end-entity key."""

    directory: Path
    root_pem: Path
    intermediate_pem: Path
    signer_pem: Path
    other_root_pem: Path
    signer: signers.SimpleSigner
    #: An RFC 3161 TSA in memory, with a certificate from the intermediate CA.
    timestamper: DummyTimeStamper
    #: A TSA whose certificate comes from the unrelated root.
    untrusted_timestamper: DummyTimeStamper

    __test__ = False  # not a test class, despite the name


def _to_asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def _write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def make_pki(directory: Path) -> TestPki:
    """Make the test PKI under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name("qsign 测试根 CA")
    root = _certificate(root_name, root_key.public_key(), root_name, root_key, ca=True, key_usage=_CA_USAGE)

    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate_name = _name("qsign 测试中级 CA")
    intermediate = _certificate(intermediate_name, intermediate_key.public_key(), root_name, root_key, ca=True,
                                key_usage=_CA_USAGE)

    signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer_certificate = _certificate(_name(SIGNER_COMMON_NAME), signer_key.public_key(), intermediate_name,
                                      intermediate_key, ca=False, key_usage=_SIGNER_USAGE)

    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # DummyTimeStamper is RSA-only
    tsa_certificate = _certificate(_name("qsign 测试时间戳服务"), tsa_key.public_key(), intermediate_name,
                                   intermediate_key, ca=False, key_usage=_SIGNER_USAGE,
                                   extended_key_usage=[ExtendedKeyUsageOID.TIME_STAMPING])

    other_key = ec.generate_private_key(ec.SECP256R1())
    other_name = _name("Unrelated Root CA", "Elsewhere Ltd")
    other_root = _certificate(other_name, other_key.public_key(), other_name, other_key, ca=True,
                              key_usage=_CA_USAGE)

    signer_key_der = signer_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
    registry = SimpleCertificateStore.from_certs([_to_asn1(intermediate), _to_asn1(root)])
    signer = signers.SimpleSigner(
        signing_cert=_to_asn1(signer_certificate),
        signing_key=asn1_keys.PrivateKeyInfo.load(signer_key_der),
        cert_registry=registry,
    )
    other_tsa_certificate = _certificate(_name("Unrelated TSA", "Elsewhere Ltd"), tsa_key.public_key(), other_name,
                                         other_key, ca=False, key_usage=_SIGNER_USAGE,
                                         extended_key_usage=[ExtendedKeyUsageOID.TIME_STAMPING])
    tsa_key_der = tsa_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    timestamper = DummyTimeStamper(tsa_cert=_to_asn1(tsa_certificate),
                                   tsa_key=asn1_keys.PrivateKeyInfo.load(tsa_key_der),
                                   certs_to_embed=registry)
    untrusted_timestamper = DummyTimeStamper(
        tsa_cert=_to_asn1(other_tsa_certificate), tsa_key=asn1_keys.PrivateKeyInfo.load(tsa_key_der),
        certs_to_embed=SimpleCertificateStore.from_certs([_to_asn1(other_root)]))
    return TestPki(
        directory=directory,
        root_pem=_write_pem(directory / "root-ca.pem", root),
        intermediate_pem=_write_pem(directory / "intermediate-ca.pem", intermediate),
        signer_pem=_write_pem(directory / "signer.pem", signer_certificate),
        other_root_pem=_write_pem(directory / "other-root-ca.pem", other_root),
        signer=signer,
        timestamper=timestamper,
        untrusted_timestamper=untrusted_timestamper,
    )


def sign_pdf_bytes(data: bytes, signer: signers.SimpleSigner, field_name: str = "Signature1",
                   timestamper: DummyTimeStamper | None = None) -> bytes:
    """Sign a PDF in an incremental update with an invisible signature field; return the new file.

    With ``timestamper``, the signature gets an RFC 3161 signature timestamp.
    """
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    metadata = signers.PdfSignatureMetadata(field_name=field_name)
    output = signers.sign_pdf(writer, metadata, signer=signer, timestamper=timestamper)
    return output.getvalue()


def add_document_timestamp(data: bytes, timestamper: DummyTimeStamper, field_name: str = "Timestamp1") -> bytes:
    """Append a document timestamp (/DocTimeStamp) in an incremental update."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    output = signers.PdfTimeStamper(timestamper, field_name=field_name).timestamp_pdf(writer, "sha256")
    return output.getvalue()


def append_page_content(data: bytes, text: bytes = b"0 0 1 rg 10 10 200 200 re f") -> bytes:
    """Append an incremental update that draws over page 1 (a change a signature does not allow)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    stream = generic.StreamObject(stream_data=text)
    writer.add_stream_to_page(0, writer.add_object(stream))
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def sign_cms(data: bytes, signer: signers.SimpleSigner, detached: bool = True) -> bytes:
    """Return a DER CMS SignedData over ``data``, detached or with the content inside."""
    content_info = asyncio.run(signer.async_sign_general_data(data, "sha256", detached=detached))
    return content_info.dump()


def write_state_dir(directory: Path, pki: TestPki, extra_toml: str = "") -> Path:
    """Write a state dir whose qsign.toml trusts the test root, with the intermediate as a chain cert."""
    pki_dir = directory / "pki"
    pki_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(pki.root_pem, pki_dir / "root-ca.pem")
    shutil.copy(pki.intermediate_pem, pki_dir / "intermediate-ca.pem")
    (directory / "qsign.toml").write_text(
        '[general]\nlanguage = "zh_CN"\n\n'
        '[trust]\nanchors = ["pki/root-ca.pem"]\nintermediates = ["pki/intermediate-ca.pem"]\n'
        + extra_toml,
        encoding="utf-8",
    )
    return directory


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("verify-pki"))


@pytest.fixture(scope="session")
def signed_pdf(test_pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Chinese one-page PDF with one signature by the test signer."""
    path = tmp_path_factory.mktemp("verify-signed") / "xiaoshan-signed.pdf"
    path.write_bytes(sign_pdf_bytes(real_pdf("xiaoshan-sample.pdf").read_bytes(), test_pki.signer))
    return path


@pytest.fixture(scope="session")
def verify_state(test_pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir whose qsign.toml trusts the test PKI."""
    return write_state_dir(tmp_path_factory.mktemp("verify-state"), test_pki)
