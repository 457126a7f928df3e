"""The test PKI, issued by certomancer from ``softhsm_setup/certomancer.yml``.

``ensure_test_pki`` renders the template into ``pki/certomancer.yml`` of the state dir, with the
service URL prefix, validity dates and serial numbers filled in. certomancer then issues from it the
root CA, the intermediate CA, the TSA certificate and one certificate per token key or virtual card
key. The CA and TSA keys are software keys in ``pki/*.key.pem`` (mode 0600, unencrypted) because these
are test CAs. The end-entity keys stay on the tokens (or in the virtual cards' NSS databases):
``qsign softhsm init`` and ``qsign softhsm card up`` export their public halves to
``pki/<label>.pub.pem``, which the configuration names as public-only keys.

certomancer issues deterministically: the same rendered configuration and keys give the same
certificates byte for byte, so a second ``init`` finds every file as it was. A later rendering
keeps the dates, serial numbers and revocations of the previous one. Only a certificate whose key
changed gets a new serial number and validity.

Subjects are Chinese; certomancer encodes them as UTF8String (``C`` as PrintableString, which X.520
requires), so every consumer of the certificates meets non-ASCII names from the start.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from softhsm_setup.errors import PkiIncomplete
from softhsm_setup.files import Status, write_file
from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import ARCHITECTURE, PkiUrls

__all__ = [
    "TEMPLATE_PATH",
    "TestPki",
    "ensure_test_pki",
    "load_rendered_config",
    "write_rendered_config",
    "write_public_key",
    "certificate_matches_key",
    "is_directly_issued_by",
    "certificate_pem",
]

_logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).with_name("certomancer.yml")

#: Software keys: label in the configuration -> RSA modulus length.
_SOFTWARE_KEYS = {"root-ca": 3072, "intermediate-ca": 3072, "tsa": 2048}
#: Certificates written to ``pki/<label>.pem`` besides the end-entity ones.
_AUTHORITY_CERTIFICATES = ("root-ca", "intermediate-ca", "tsa")
#: Certificates start a little in the past, so a verifier whose clock runs behind accepts them.
_BACKDATE = datetime.timedelta(minutes=5)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S+0000"
_RELATIVE_TIME = re.compile(r"^@now(?:\+(\d+)d)?$")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass
class TestPki:
    """The certomancer architecture of a state dir and what ensuring it did."""

    layout: StateLayout
    architecture: Any
    urls: PkiUrls
    statuses: dict[str, Status] = field(default_factory=dict)
    files_written: list[Path] = field(default_factory=list)

    def certificate(self, label: str) -> x509.Certificate:
        """Return the certificate ``label`` of the configuration (``root-ca``, ``officer-rsa`` …)."""
        return x509.load_der_x509_certificate(self.architecture.get_cert(label).dump())


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _public_key_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_matches_key(certificate: x509.Certificate, public_key: PublicKey) -> bool:
    """Return whether ``certificate`` certifies ``public_key`` (same SubjectPublicKeyInfo)."""
    return _public_key_der(certificate.public_key()) == _public_key_der(public_key)


def is_directly_issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Return whether ``issuer`` signed ``certificate`` and its subject is the certificate's issuer."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def write_public_key(layout: StateLayout, label: str, public_key: PublicKey, written: list[Path]) -> bool:
    """Write the public half of key ``label`` (token or virtual card) to ``pki/<label>.pub.pem``; return whether it changed."""
    path = layout.public_key(label)
    data = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if path.exists() and path.read_bytes() == data:
        return False
    write_file(path, data, 0o644)
    written.append(path)
    return True


def _ensure_software_keys(layout: StateLayout, rendered_exists: bool, written: list[Path]) -> None:
    """Generate each missing CA or TSA key; refuse when certificates were already issued with it."""
    for label, bits in _SOFTWARE_KEYS.items():
        path = layout.pki_dir / f"{label}.key.pem"
        if path.exists():
            continue
        if rendered_exists:
            raise PkiIncomplete(pki_dir=layout.pki_dir,
                                detail=f"{path.name} is missing but {layout.certomancer_config.name} "
                                       f"issued certificates with it",
                                ids={"file": str(path)})
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        write_file(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
        written.append(path)
        _logger.info("generated the test key %s", path)


def load_rendered_config(layout: StateLayout) -> dict[str, Any] | None:
    """Return the state dir's ``pki/certomancer.yml`` as a dict, or ``None`` when there is none."""
    if not layout.certomancer_config.exists():
        return None
    return yaml.safe_load(layout.certomancer_config.read_text(encoding="utf-8"))


def _dump(config: dict[str, Any]) -> bytes:
    header = ("# Rendered by qsign softhsm init from softhsm_setup/certomancer.yml; certomancer issues the\n"
              "# test PKI from it. Serve it with: qsign softhsm serve-pki\n")
    return (header + yaml.safe_dump(config, allow_unicode=True, sort_keys=False)).encode("utf-8")


def write_rendered_config(layout: StateLayout, config: dict[str, Any], written: list[Path] | None = None) -> bool:
    """Write ``config`` to ``pki/certomancer.yml`` unless the file contains exactly that; return whether it wrote."""
    data = _dump(config)
    path = layout.certomancer_config
    if path.exists() and path.read_bytes() == data:
        return False
    write_file(path, data, 0o644)
    if written is not None:
        written.append(path)
    return True


def _resolve_time(value: str, now: datetime.datetime) -> datetime.datetime:
    match = _RELATIVE_TIME.match(value)
    if match is None:
        raise ValueError(f"{TEMPLATE_PATH.name}: validity {value!r} is not @now or @now+NNNd")
    return now - _BACKDATE + datetime.timedelta(days=int(match.group(1) or 0))


def _parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)


def _render(layout: StateLayout, previous: dict[str, Any] | None, now: datetime.datetime, urls: PkiUrls,
            reissue: set[str]) -> dict[str, Any]:
    """Return the configuration for the keys present now, keeping what ``previous`` fixed."""
    # A JSON round trip gives every certificate its own dicts: the template shares them through YAML aliases.
    config = json.loads(json.dumps(yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))))
    config["external-url-prefix"] = previous["external-url-prefix"] if previous else urls.base_url

    keys = config["keysets"][ARCHITECTURE]["keys"]
    for label in [label for label, spec in keys.items() if not (layout.pki_dir / spec["path"]).exists()]:
        del keys[label]

    architecture = config["pki-architectures"][ARCHITECTURE]
    earlier = previous["pki-architectures"][ARCHITECTURE]["certs"] if previous else {}
    ends: dict[str, datetime.datetime] = {}
    certificates: dict[str, Any] = {}
    for label, spec in architecture["certs"].items():
        if spec.get("subject-key", spec["subject"]) not in keys:
            continue
        issued = earlier.get(label)
        if issued is not None and label not in reissue:
            for name in ("validity", "serial", "revocation"):
                if name in issued:
                    spec[name] = issued[name]
        else:
            start = _resolve_time(spec["validity"]["valid-from"], now)
            end = _resolve_time(spec["validity"]["valid-to"], now)
            if spec["issuer"] in ends:
                end = min(end, ends[spec["issuer"]])
            spec["validity"] = {"valid-from": start.strftime(_TIME_FORMAT), "valid-to": end.strftime(_TIME_FORMAT)}
            spec["serial"] = secrets.randbits(63) | 1 << 62
        ends[label] = _parse_time(spec["validity"]["valid-to"])
        certificates[label] = spec
    architecture["certs"] = certificates
    return config


def _architecture(layout: StateLayout, config: dict[str, Any]) -> Any:
    from certomancer.registry import ArchLabel, CertomancerConfig

    return CertomancerConfig(config, key_search_dir=str(layout.pki_dir)).get_pki_arch(ArchLabel(ARCHITECTURE))


def _write_certificate(path: Path, certificate: x509.Certificate, written: list[Path]) -> Status:
    data = certificate_pem(certificate)
    if path.exists() and path.read_bytes() == data:
        return Status.EXISTS
    status = Status.UPDATED if path.exists() else Status.CREATED
    write_file(path, data, 0o644)
    written.append(path)
    return status


def ensure_test_pki(layout: StateLayout, now: datetime.datetime, urls: PkiUrls,
                    reissue: set[str] | frozenset[str] = frozenset()) -> TestPki:
    """Make or complete the test PKI of ``layout`` and write its CA and TSA certificate files.

    Every key whose public key file exists gets a certificate in the configuration. Those in
    ``reissue`` (keys that changed) get a new serial number and validity. ``urls`` applies to a
    first rendering only, because certificates already issued keep the URLs they name.
    """
    written: list[Path] = []
    previous = load_rendered_config(layout)
    _ensure_software_keys(layout, previous is not None, written)
    config = _render(layout, previous, now, urls, set(reissue))
    write_rendered_config(layout, config, written)

    pki = TestPki(layout=layout, architecture=_architecture(layout, config),
                  urls=PkiUrls.parse(config["external-url-prefix"]), files_written=written)
    for label in _AUTHORITY_CERTIFICATES:
        pki.statuses[label] = _write_certificate(layout.pki_dir / f"{label}.pem", pki.certificate(label), written)
    return pki
