"""Revocation data for validation: what a file embeds, and the per-certificate record of the check.

Validation never assumes that a certificate is not revoked. Each certificate of the signer's path that
names a CRL distribution point or an OCSP responder must have revocation data that pyhanko-certvalidator
accepts (``hard-fail`` mode), taken from the file itself or, with online validation, fetched. A
certificate that names neither has no revocation service to ask, and the report marks it
``not_applicable``. This module gathers the embedded data and explains the outcome per certificate.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms, crl, ocsp, x509
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESIndeterminate, AdESSubIndic
from pyhanko.sign.validation.dss import DocumentSecurityStore, NoDSSFoundError
from pyhanko.sign.validation.status import RevocationDetails
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import InsufficientRevinfoError, PathValidationError, ValidationError
from pyhanko_certvalidator.path import ValidationPath

from verify_service.certificates import readable_name
from verify_service.report import CertificateRevocation, RevocationInfo, RevocationSource, RevocationStatus

__all__ = ["EmbeddedRevocationData", "REVOCATION_DATA_MISSING", "assess_revocation", "dss_revocation_data",
           "has_revocation_endpoint", "signed_data_revocation_data"]

_logger = logging.getLogger(__name__)

#: Reason codes of ``CertificateRevocation.reason`` that mean "revocation data was needed but not usable".
REVOCATION_DATA_MISSING = frozenset({"no_revocation_data_offline", "revocation_fetch_failed",
                                     "revocation_data_not_accepted"})

#: Trust sub-indications after which pyhanko-certvalidator may have stopped for lack of revocation data.
#: pyHanko 0.38 maps a stale response to TRY_LATER and missing data to CERTIFICATE_CHAIN_GENERAL_FAILURE.
_MAYBE_REVINFO_PROBLEM = {AdESIndeterminate.TRY_LATER, AdESIndeterminate.CERTIFICATE_CHAIN_GENERAL_FAILURE}


@dataclass(frozen=True)
class EmbeddedRevocationData:
    """OCSP responses, CRLs and certificates that a signed file carries."""

    ocsps: tuple[ocsp.OCSPResponse, ...] = ()
    crls: tuple[crl.CertificateList, ...] = ()
    certificates: tuple[x509.Certificate, ...] = ()

    def merged(self, other: EmbeddedRevocationData) -> EmbeddedRevocationData:
        return EmbeddedRevocationData(ocsps=self.ocsps + other.ocsps, crls=self.crls + other.crls,
                                      certificates=self.certificates + other.certificates)

    def __bool__(self) -> bool:
        return bool(self.ocsps or self.crls)


def dss_revocation_data(reader: PdfFileReader) -> EmbeddedRevocationData:
    """Read every OCSP response, CRL and certificate of the document security store (``/DSS``).

    Returns empty data when the file has no ``/DSS`` or when it cannot be parsed, because a damaged
    ``/DSS`` only means less evidence: certificates that need revocation data then end INDETERMINATE.
    """
    try:
        dss = DocumentSecurityStore.read_dss(reader)
        ocsps = tuple(ocsp.OCSPResponse.load(reference.get_object().data) for reference in dss.ocsps)
        crls = tuple(crl.CertificateList.load(reference.get_object().data) for reference in dss.crls)
        certificates = tuple(dss.load_certs())
        for response in ocsps:
            _ = response["response_status"].native
        for revocation_list in crls:
            _ = revocation_list["tbs_cert_list"]["issuer"]
    except NoDSSFoundError:
        return EmbeddedRevocationData()
    except (PdfError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        _logger.info("cannot read the document security store: %s", exc)
        return EmbeddedRevocationData()
    return EmbeddedRevocationData(ocsps=ocsps, crls=crls, certificates=certificates)


def signed_data_revocation_data(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> EmbeddedRevocationData:
    """Read the revocation data of one signature: adbe-revocationInfoArchival and the SignedData ``crls``.

    The adbe-revocationInfoArchival signed attribute (OID 1.2.840.113583.1.1.8) is where Adobe and
    pyHanko put OCSP responses and CRLs when they embed revocation data inside the signature itself.
    """
    ocsps: list[ocsp.OCSPResponse] = []
    crls: list[crl.CertificateList] = []
    try:
        for attribute in signer_info["signed_attrs"]:
            if attribute["type"].native != "adobe_revocation_info_archival":
                continue
            for archival in attribute["values"]:
                crls.extend(archival["crl"] or ())
                ocsps.extend(archival["ocsp"] or ())
        for choice in signed_data["crls"] or ():
            if choice.name == "crl":
                crls.append(choice.chosen)
            elif choice.name == "other" and choice.chosen["other_rev_info_format"].native == "ocsp_response":
                ocsps.append(choice.chosen["other_rev_info"])
    except (ValueError, TypeError, KeyError) as exc:
        _logger.info("cannot read the revocation data inside a signature: %s", exc)
    return EmbeddedRevocationData(ocsps=tuple(ocsps), crls=tuple(crls))


def has_revocation_endpoint(certificate: x509.Certificate) -> bool:
    """Return whether the certificate names a CRL distribution point or an OCSP responder (AIA)."""
    return bool(certificate.crl_distribution_points) or bool(certificate.ocsp_urls)


@dataclass(frozen=True)
class _Evidence:
    """The status that one OCSP response or CRL gives a certificate, not checked for signature or freshness."""

    revoked: bool
    revocation_time: datetime | None
    source: RevocationSource


def _ocsp_evidence(certificate: x509.Certificate, response: ocsp.OCSPResponse) -> tuple[bool, datetime | None] | None:
    if response["response_status"].native != "successful":
        return None
    basic = response["response_bytes"]["response"].parsed
    for single in basic["tbs_response_data"]["responses"]:
        cert_id = single["cert_id"]
        if cert_id["serial_number"].native != certificate.serial_number:
            continue
        name_hash = hashlib.new(cert_id["hash_algorithm"]["algorithm"].native, certificate.issuer.dump()).digest()
        if cert_id["issuer_name_hash"].native != name_hash:
            continue
        status = single["cert_status"]
        if status.name == "revoked":
            return True, status.chosen["revocation_time"].native
        if status.name == "good":
            return False, None
    return None


def _crl_evidence(certificate: x509.Certificate, revocation_list: crl.CertificateList) -> tuple[bool, datetime | None] | None:
    if revocation_list.issuer != certificate.issuer:
        return None
    for entry in revocation_list["tbs_cert_list"]["revoked_certificates"] or ():
        if entry["user_certificate"].native == certificate.serial_number:
            return True, entry["revocation_date"].native
    return False, None


def _evidence(certificate: x509.Certificate, context: ValidationContext,
              embedded: EmbeddedRevocationData) -> list[_Evidence]:
    """List the statuses that the embedded and fetched OCSP responses and CRLs give ``certificate``."""
    embedded_dumps = {item.dump() for item in embedded.ocsps + embedded.crls}
    found = []
    items: list[tuple[object, tuple[bool, datetime | None] | None]] = []
    try:
        items += [(response, _ocsp_evidence(certificate, response)) for response in context.ocsps]
        items += [(revocation_list, _crl_evidence(certificate, revocation_list)) for revocation_list in context.crls]
    except (ValueError, TypeError, KeyError) as exc:
        _logger.info("cannot read revocation data for %s: %s", readable_name(certificate.subject), exc)
    for item, result in items:
        if result is None:
            continue
        source = RevocationSource.EMBEDDED if item.dump() in embedded_dumps else RevocationSource.ONLINE
        found.append(_Evidence(revoked=result[0], revocation_time=result[1], source=source))
    return found


async def _insufficient_revinfo_path(signer: x509.Certificate, other_certificates: Sequence[x509.Certificate],
                                     context: ValidationContext) -> ValidationPath | None:
    """Validate the signer's path again and return it when the validator stops for lack of revocation data.

    pyHanko reports missing revocation data with the same sub-indication as other path failures, so
    this repeats the path validation (cheap: the context caches paths and revocation data) to tell.
    """
    validator = CertificateValidator(signer, intermediate_certs=list(other_certificates), validation_context=context)
    try:
        await validator.async_validate_path()
    except InsufficientRevinfoError as exc:
        return exc.original_path
    except (PathValidationError, ValidationError, ValueError) as exc:
        _logger.debug("path of %s fails for another reason than revocation data: %s",
                      readable_name(signer.subject), exc)
    return None


def _summary_status(entries: Iterable[CertificateRevocation]) -> RevocationStatus:
    statuses = {entry.status for entry in entries}
    for status in (RevocationStatus.REVOKED, RevocationStatus.UNKNOWN, RevocationStatus.GOOD):
        if status in statuses:
            return status
    return RevocationStatus.NOT_APPLICABLE


def _summary_source(entries: Iterable[CertificateRevocation]) -> RevocationSource | None:
    sources = {entry.source for entry in entries}
    for source in (RevocationSource.ONLINE, RevocationSource.EMBEDDED):
        if source in sources:
            return source
    return None


def _entry(certificate: x509.Certificate, status: RevocationStatus, reason: str,
           source: RevocationSource | None = None, revocation_time: datetime | None = None) -> CertificateRevocation:
    return CertificateRevocation(subject=readable_name(certificate.subject), sha256=certificate.sha256.hex(),
                                 status=status, source=source, reason=reason,
                                 revocation_time=revocation_time.isoformat() if revocation_time else None)


async def assess_revocation(signer: x509.Certificate, other_certificates: Sequence[x509.Certificate],
                            path: ValidationPath | None, trust_problem: AdESSubIndic | None,
                            revocation_details: RevocationDetails | None, context: ValidationContext,
                            embedded: EmbeddedRevocationData, online: bool) -> RevocationInfo:
    """Explain, per certificate of the signer's path, what the revocation check found.

    ``path``, ``trust_problem`` and ``revocation_details`` come from pyHanko's status of the signature
    validated with ``context``. The statuses follow pyHanko's decision: ``good`` only when the path
    validated, ``revoked`` only when pyHanko found a revocation. The OCSP responses and CRLs that
    ``context`` holds only name the source and, for a path that failed, which certificates lack data.
    """
    insufficient = False
    if trust_problem in _MAYBE_REVINFO_PROBLEM:
        failed_path = await _insufficient_revinfo_path(signer, other_certificates, context)
        if failed_path is not None:
            insufficient = True
            path = path or failed_path
        elif trust_problem is AdESIndeterminate.TRY_LATER:
            insufficient = True

    # Root side first, as pyhanko-certvalidator checks them: above a revoked certificate all passed.
    certificates = list(path.iter_certs(include_root=False)) if path is not None else [signer]
    default_source = RevocationSource.ONLINE if online else RevocationSource.EMBEDDED
    revoked_seen = False
    entries = []
    for certificate in certificates:
        if not has_revocation_endpoint(certificate):
            entries.append(_entry(certificate, RevocationStatus.NOT_APPLICABLE, "no_revocation_endpoint"))
            continue

        evidence = _evidence(certificate, context, embedded)
        revoked = next((item for item in evidence if item.revoked), None)
        is_signer = certificate.sha256 == signer.sha256
        source = evidence[0].source if evidence else None
        is_revoked = not revoked_seen and (
            (trust_problem is AdESIndeterminate.REVOKED_NO_POE and is_signer)
            or (trust_problem is AdESIndeterminate.REVOKED_CA_NO_POE and not is_signer and revoked is not None))
        above_revoked = trust_problem in (AdESIndeterminate.REVOKED_NO_POE, AdESIndeterminate.REVOKED_CA_NO_POE) \
            and not revoked_seen

        if trust_problem is None:
            entries.append(_entry(certificate, RevocationStatus.GOOD, "checked", source or default_source))
        elif is_revoked:
            revoked_seen = True
            moment = revocation_details.revocation_date if revocation_details is not None else None
            entries.append(_entry(certificate, RevocationStatus.REVOKED, "revoked",
                                  revoked.source if revoked else source,
                                  moment or (revoked.revocation_time if revoked else None)))
        elif above_revoked:
            entries.append(_entry(certificate, RevocationStatus.GOOD, "checked", source or default_source))
        elif insufficient and not evidence:
            reason = "revocation_fetch_failed" if online else "no_revocation_data_offline"
            entries.append(_entry(certificate, RevocationStatus.UNKNOWN, reason))
        elif insufficient:
            entries.append(_entry(certificate, RevocationStatus.UNKNOWN, "revocation_data_not_accepted", source))
        else:
            entries.append(_entry(certificate, RevocationStatus.UNKNOWN, "not_checked"))
    entries.reverse()

    return RevocationInfo(status=_summary_status(entries), source=_summary_source(entries),
                          checked_at=context.moment.isoformat(), certificates=entries)
