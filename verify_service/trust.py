"""Trust anchors and intermediate certificates for validation, from files or from ``qsign.toml``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asn1crypto import pem, x509

from qsign.config import Config
from verify_service.certificates import readable_name
from verify_service.errors import TrustAnchorInvalid

__all__ = ["TrustSettings", "describe_certificate", "load_certificates", "trust_from_config", "trust_from_files"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustSettings:
    """Trust configuration of a validation: anchors, other certificates for path building, network use."""

    anchors: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    #: ``arguments``, ``config`` or ``none``.
    source: str = "none"
    #: Allow fetching certificates and revocation data (CRL, OCSP) over the network.
    online: bool = False
    #: pyhanko-certvalidator revocation mode. ``hard-fail``: every certificate of the path that names a
    #: CRL distribution point or an OCSP responder needs usable revocation data (embedded, or fetched
    #: when ``online``), else the signature is INDETERMINATE; a certificate that names neither is
    #: accepted and reported as ``not_applicable``. ``require`` also demands data for the latter.
    revocation_mode: str = "hard-fail"
    files: tuple[Path, ...] = field(default=(), compare=False)


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Read every certificate in a PEM file (one or more blocks) or a DER file.

    Raises ``TrustAnchorInvalid`` when the file is missing or contains no certificate.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustAnchorInvalid(ids={"path": path}, path=str(path), detail=exc.strerror or str(exc)) from exc

    try:
        if pem.detect(data):
            certificates = [x509.Certificate.load(der) for kind, _, der in pem.unarmor(data, multiple=True)
                            if kind == "CERTIFICATE"]
        else:
            certificates = [x509.Certificate.load(data)]
        for certificate in certificates:
            # asn1crypto parses lazily; touching the fields makes a damaged certificate fail here.
            _ = certificate.subject, certificate.public_key, certificate.sha256
    except (ValueError, TypeError) as exc:
        raise TrustAnchorInvalid(ids={"path": path}, path=str(path), detail=str(exc)) from exc

    if not certificates:
        raise TrustAnchorInvalid(ids={"path": path}, path=str(path), detail="no CERTIFICATE block")
    return certificates


def trust_from_files(anchor_paths: Sequence[Path], intermediate_paths: Sequence[Path] = (), *,
                     source: str = "arguments", online: bool = False) -> TrustSettings:
    """Load trust anchors and intermediates from certificate files."""
    anchors = [certificate for path in anchor_paths for certificate in load_certificates(Path(path))]
    intermediates = [certificate for path in intermediate_paths
                     for certificate in load_certificates(Path(path))]
    _logger.debug("loaded %d trust anchors and %d intermediates from %s", len(anchors), len(intermediates),
                  source)
    return TrustSettings(anchors=tuple(anchors), intermediates=tuple(intermediates),
                         source=source if anchors else "none", online=online,
                         files=tuple(Path(path) for path in anchor_paths))


def trust_from_config(config: Config, *, online: bool = False) -> TrustSettings:
    """Load the ``[trust]`` anchors and intermediates of a state dir's ``qsign.toml``."""
    return trust_from_files(config.trust_anchors, config.intermediates, source="config", online=online)


def describe_certificate(certificate: x509.Certificate) -> dict[str, str]:
    """Return the subject and SHA-256 fingerprint that a report lists for a trust certificate."""
    return {"subject": readable_name(certificate.subject),
            "sha256": certificate.sha256.hex()}
