"""Revocation, expiry and time: a certomancer PKI with CRL and OCSP served on 127.0.0.1.

certomancer makes the certificates, CRLs and OCSP responses from keys that this module generates;
its aiohttp animator app runs on 127.0.0.1 for the duration of the module. Validation fetches revocation
data only with ``online`` trust settings, as ``qsign verify --online`` does.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from certomancer.integrations.aiohttp_animator import build_animator_app
from certomancer.registry import ArchLabel, CertLabel, CertomancerConfig
from cryptography.hazmat.primitives import serialization
from conftest import run_qsign
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko_certvalidator.registry import SimpleCertificateStore
from verify_pki import real_pdf

from verify_service.sandbox import Limits, verify_isolated
from verify_service.trust import trust_from_files

ARCH = "qsign-revocation"
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat()


def _key_usage(*usages: str) -> dict:
    return {"id": "key_usage", "critical": True, "smart-value": {"schema": "key-usage", "params": list(usages)}}


def _signer_spec(*, revoked: bool = False, expired: bool = False, crl: bool = True, ocsp: bool = True) -> dict:
    valid_from, valid_to = NOW - datetime.timedelta(days=30), NOW + datetime.timedelta(days=300)
    if expired:
        valid_to = NOW - datetime.timedelta(days=1)
    extensions = [_key_usage("digital_signature", "non_repudiation")]
    if crl:
        extensions.append({"id": "crl_distribution_points",
                           "smart-value": {"schema": "crl-dist-url", "params": {"crl-repo-names": ["root"]}}})
    if ocsp:
        extensions.append({"id": "authority_information_access",
                           "smart-value": {"schema": "aia-urls", "params": {"ocsp-responder-names": ["root"]}}})
    spec = {"subject": "signer", "subject-key": "signer", "issuer": "root", "authority-key": "root",
            "validity": {"valid-from": _iso(valid_from), "valid-to": _iso(valid_to)}, "extensions": extensions}
    if revoked:
        spec["revocation"] = {"revoked-since": _iso(NOW - datetime.timedelta(days=2)), "reason": "key_compromise"}
    return spec


def _config(url: str) -> dict:
    return {
        "external-url-prefix": url,
        "keysets": {ARCH: {"path-prefix": ".", "keys": {"root": {"path": "root.key.pem"},
                                                          "signer": {"path": "signer.key.pem"}}}},
        "pki-architectures": {ARCH: {
            "keyset": ARCH,
            "entity-defaults": {"country-name": "CN", "organization-name": "国家税务总局测试局"},
            "entities": {"root": {"common-name": "qsign 吊销测试根 CA"}, "signer": {"common-name": "李四"}},
            "certs": {
                "root": {"subject": "root", "subject-key": "root", "issuer": "root", "authority-key": "root",
                         "validity": {"valid-from": _iso(NOW - datetime.timedelta(days=60)),
                                      "valid-to": _iso(NOW + datetime.timedelta(days=3650))},
                         "extensions": [{"id": "basic_constraints", "critical": True, "value": {"ca": True}},
                                        _key_usage("digital_signature", "key_cert_sign", "crl_sign")]},
                "signer-good": _signer_spec(),
                "signer-revoked-crl": _signer_spec(revoked=True, ocsp=False),
                "signer-revoked-ocsp": _signer_spec(revoked=True, crl=False),
                "signer-expired": _signer_spec(expired=True),
                "signer-expired-no-endpoints": _signer_spec(expired=True, crl=False, ocsp=False),
                "signer-no-endpoints": _signer_spec(crl=False, ocsp=False),
            },
            "services": {
                "ocsp": {"root": {"for-issuer": "root", "responder-cert": "root", "signing-key": "root"}},
                "crl-repo": {"root": {"for-issuer": "root", "signing-key": "root",
                                      "simulated-update-schedule": "P30D"}},
            },
        }},
    }


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


@dataclass
class RevocationPki:
    url: str
    root_pem: Path
    signed: dict[str, Path]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sign(arch, label: str, signer_key_der: bytes, target: Path) -> Path:
    signer = signers.SimpleSigner(
        signing_cert=arch.get_cert(CertLabel(label)),
        signing_key=asn1_keys.PrivateKeyInfo.load(signer_key_der),
        cert_registry=SimpleCertificateStore.from_certs([arch.get_cert(CertLabel("root"))]),
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(real_pdf("xtu.pdf").read_bytes()), strict=False)
    output = signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name="Signature1"), signer=signer)
    target.write_bytes(output.getvalue())
    return target


class _AnimatorThread:
    """certomancer's aiohttp animator app on 127.0.0.1:port, in its own event loop thread."""

    def __init__(self, arch, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = build_animator_app({ArchLabel(ARCH): arch}, with_web_ui=False)
        self.port = port
        self.thread = threading.Thread(target=self.loop.run_forever, name="certomancer", daemon=True)

    def __enter__(self) -> _AnimatorThread:
        from aiohttp import web

        self.thread.start()
        self.runner = web.AppRunner(self.app)

        async def start() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def revocation_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RevocationPki]:
    directory = tmp_path_factory.mktemp("certomancer")
    _write_key(directory / "root.key.pem", ec.generate_private_key(ec.SECP256R1()))
    signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(directory / "signer.key.pem", signer_key)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    (directory / "certomancer.yml").write_text(json.dumps(_config(url)), encoding="utf-8")
    config = CertomancerConfig.from_file(str(directory / "certomancer.yml"), key_search_dir=str(directory))
    arch = config.get_pki_arch(ArchLabel(ARCH))

    root_pem = directory / "root.cer"  # DER
    root_pem.write_bytes(arch.get_cert(CertLabel("root")).dump())
    key_der = signer_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    signed = {label: _sign(arch, label, key_der, directory / f"{label}.pdf")
              for label in ("signer-good", "signer-revoked-crl", "signer-revoked-ocsp", "signer-expired",
                            "signer-expired-no-endpoints", "signer-no-endpoints")}

    with _AnimatorThread(arch, port):
        yield RevocationPki(url=url, root_pem=root_pem, signed=signed)


def _verify(pki: RevocationPki, label: str, *, online: bool = True, at: datetime.datetime | None = None):
    trust = trust_from_files([pki.root_pem], online=online)
    return verify_isolated(pki.signed[label], trust=trust, at=at, limits=Limits(timeout_seconds=60, memory_mb=1024))


@pytest.mark.parametrize(("label", "indication", "sub_indication", "trusted"), [
    ("signer-good", "TOTAL_PASSED", None, True),
    ("signer-revoked-crl", "INDETERMINATE", "REVOKED_NO_POE", False),
    ("signer-revoked-ocsp", "INDETERMINATE", "REVOKED_NO_POE", False),
    ("signer-expired", "INDETERMINATE", "OUT_OF_BOUNDS_NO_POE", False),
])
def test_revocation_online(revocation_pki: RevocationPki, label: str, indication: str,
                                 sub_indication: str | None, trusted: bool) -> None:
    report = _verify(revocation_pki, label)

    signature = report.signatures[0]
    assert (report.verdict, report.sub_indication) == (indication, sub_indication)
    assert (signature.indication, signature.sub_indication) == (indication, sub_indication)
    assert signature.intact is True and signature.valid is True
    assert signature.trusted is trusted
    assert report.trust.online is True


@pytest.mark.parametrize("label", ["signer-good", "signer-revoked-ocsp"])
def test_revocation_online_names_source(revocation_pki: RevocationPki, label: str) -> None:
    report = _verify(revocation_pki, label)

    revocation = report.signatures[0].revocation
    expected = "good" if label == "signer-good" else "revoked"
    assert (revocation.status, revocation.source) == (expected, "online")
    assert [entry.status for entry in revocation.certificates] == [expected]
    assert revocation.certificates[0].subject.startswith("CN=李四")
    if expected == "revoked":
        assert revocation.certificates[0].revocation_time == (NOW - datetime.timedelta(days=2)).isoformat()


@pytest.mark.parametrize("label", ["signer-good", "signer-revoked-crl", "signer-revoked-ocsp"])
def test_offline_without_revocation_data_indeterminate(revocation_pki: RevocationPki, label: str) -> None:
    """Offline and with no revocation data in the file, a signer whose certificate names a CRL or an
    OCSP responder cannot be checked: never TOTAL_PASSED, whether or not it is in fact revoked."""
    report = _verify(revocation_pki, label, online=False)

    signature = report.signatures[0]
    assert (report.verdict, report.sub_indication) == ("INDETERMINATE", "TRY_LATER")
    assert (signature.indication, signature.sub_indication) == ("INDETERMINATE", "TRY_LATER")
    assert signature.intact is True
    assert signature.valid is True
    assert signature.trusted is None
    assert report.trust.revocation_mode == "hard-fail"
    assert report.trust.online is False
    assert signature.revocation.status == "unknown"
    assert signature.revocation.source is None
    [entry] = signature.revocation.certificates
    assert (entry.status, entry.reason) == ("unknown", "no_revocation_data_offline")
    assert entry.subject.startswith("CN=李四")
    assert any("李四" in detail and "no_revocation_data_offline" in detail for detail in signature.details)


def test_no_revocation_endpoint_is_not_applicable(revocation_pki: RevocationPki) -> None:
    """A certificate that names no CRL and no OCSP responder has nothing to check, so it passes offline
    and the report marks revocation not_applicable."""
    report = _verify(revocation_pki, "signer-no-endpoints", online=False)

    signature = report.signatures[0]
    assert (report.verdict, report.sub_indication) == ("TOTAL_PASSED", None)
    assert signature.trusted is True
    assert (signature.revocation.status, signature.revocation.source) == ("not_applicable", None)
    assert [entry.reason for entry in signature.revocation.certificates] == ["no_revocation_endpoint"]


def test_expired_signer_valid_at_earlier_time(revocation_pki: RevocationPki) -> None:
    """Validated at a moment inside the certificate's validity (``qsign verify --at``), the expired
    signer's signature passes; the report records that validation time. The certificate names no
    revocation service, because offline a certificate that names one cannot pass."""
    moment = NOW - datetime.timedelta(days=5)
    report = _verify(revocation_pki, "signer-expired-no-endpoints", online=False, at=moment)

    assert (report.verdict, report.sub_indication) == ("TOTAL_PASSED", None)
    assert report.validation_time == moment.isoformat()


def test_expired_signer_with_endpoints_at_earlier_time(revocation_pki: RevocationPki) -> None:
    """The same check for a certificate with a CRL and an OCSP responder: within its validity but with
    no revocation data for that moment, the signature is INDETERMINATE and not OUT_OF_BOUNDS_NO_POE."""
    moment = NOW - datetime.timedelta(days=5)
    report = _verify(revocation_pki, "signer-expired", online=False, at=moment)

    assert (report.verdict, report.sub_indication) == ("INDETERMINATE", "TRY_LATER")
    assert report.signatures[0].revocation.status == "unknown"


@pytest.mark.parametrize(("online_key", "source"), [("true", "online"), ("false", None)])
def test_config_online_key(revocation_pki: RevocationPki, tmp_path: Path, online_key: str,
                           source: str | None) -> None:
    """``[verify_service] online = true`` fetches as ``--online`` does; ``false`` stays offline."""
    (tmp_path / "root.cer").write_bytes(revocation_pki.root_pem.read_bytes())
    (tmp_path / "qsign.toml").write_text(f'[trust]\nanchors = ["root.cer"]\n\n[verify_service]\nonline = {online_key}\n',
                                         encoding="utf-8")

    completed = run_qsign("verify", str(revocation_pki.signed["signer-good"]), "--json", state_dir=tmp_path)

    report = json.loads(completed.stdout)
    assert report["trust"]["online"] is (online_key == "true")
    assert report["signatures"][0]["revocation"]["source"] == source
    assert completed.returncode == (0 if online_key == "true" else 1), completed.stderr


def test_revocation_info_archival_offline(revocation_pki: RevocationPki, tmp_path: Path) -> None:
    """A signature with the adbe.pkcs7.detached sub-filter carries its OCSP response and CRL in the
    adbe-revocationInfoArchival signed attribute, not in a /DSS: offline validation uses them."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import SigSeedSubFilter
    from pyhanko_certvalidator import ValidationContext

    from verify_service.revocation import dss_revocation_data

    directory = revocation_pki.root_pem.parent
    arch = CertomancerConfig.from_file(str(directory / "certomancer.yml"),
                                       key_search_dir=str(directory)).get_pki_arch(ArchLabel(ARCH))
    key = serialization.load_pem_private_key((directory / "signer.key.pem").read_bytes(), password=None)
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    signer = signers.SimpleSigner(
        signing_cert=arch.get_cert(CertLabel("signer-good")),
        signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
        cert_registry=SimpleCertificateStore.from_certs([arch.get_cert(CertLabel("root"))]),
    )
    metadata = signers.PdfSignatureMetadata(
        field_name="Signature1", subfilter=SigSeedSubFilter.ADOBE_PKCS7_DETACHED, embed_validation_info=True,
        validation_context=ValidationContext(trust_roots=[arch.get_cert(CertLabel("root"))], allow_fetching=True))
    writer = IncrementalPdfFileWriter(io.BytesIO(real_pdf("xtu.pdf").read_bytes()), strict=False)
    path = tmp_path / "archival.pdf"
    path.write_bytes(signers.sign_pdf(writer, metadata, signer=signer).getvalue())
    with path.open("rb") as handle:
        assert not dss_revocation_data(PdfFileReader(handle))

    trust = trust_from_files([revocation_pki.root_pem], online=False)
    report = verify_isolated(path, trust=trust, limits=Limits(timeout_seconds=60, memory_mb=1024))

    signature = report.signatures[0]
    assert (report.verdict, report.sub_indication) == ("TOTAL_PASSED", None)
    assert (signature.revocation.status, signature.revocation.source) == ("good", "embedded")
