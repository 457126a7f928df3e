"""The PAdES baseline level each PDF signature reaches (ETSI EN 319 142-1): B-B, B-T, B-LT or B-LTA.

The level is a structural statement: which evidence exists next to the signature and validates.

- B-B: the signature itself is intact and its value verifies.
- B-T: also a trusted time: a signature timestamp, or a document timestamp in a later revision, that is
  intact and valid.
- B-LT: also revocation data for the signer's certificate in the document security store (``/DSS``):
  an OCSP response for its serial number and issuer, or a CRL of its issuer.
- B-LTA: also a document timestamp that covers the ``/DSS``: one in the revision where the ``/DSS``
  first appeared or later. pyHanko writes the ``/DSS`` and the document timestamp of a B-LTA signature
  in one incremental update, and a timestamp's byte range covers its whole revision.
"""

from __future__ import annotations

from asn1crypto import crl, ocsp, x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.dss import DocumentSecurityStore

from verify_service.report import PadesLevel, SignatureKind, SignatureReport

__all__ = ["assign_pades_levels"]

_DSS_ENTRIES = ("/Certs", "/OCSPs", "/CRLs")


def _first_dss_revision(reader: PdfFileReader) -> int | None:
    """Return the first revision whose catalog has a ``/DSS`` with validation data, or ``None``."""
    for revision in range(reader.xrefs.total_revisions):
        try:
            dss = reader.get_historical_root(revision).get("/DSS")
        except KeyError:
            # The first section of a linearized file has a trailer without /Root.
            continue
        if dss is not None and any(entry in dss.get_object() for entry in _DSS_ENTRIES):
            return revision
    return None


class _RevocationData:
    """The OCSP responses and CRLs of a document security store, decoded once per file."""

    def __init__(self, dss: DocumentSecurityStore) -> None:
        self.cert_ids = []
        for reference in dss.ocsps:
            response = ocsp.OCSPResponse.load(reference.get_object().data)
            if response["response_status"].native != "successful":
                continue
            basic = response["response_bytes"]["response"].parsed
            self.cert_ids.extend(single["cert_id"] for single in basic["tbs_response_data"]["responses"])
        self.crl_issuers = [crl.CertificateList.load(reference.get_object().data).issuer
                            for reference in dss.crls]

    def covers(self, certificate: x509.Certificate) -> bool:
        """Return whether there is an OCSP response for ``certificate`` or a CRL of its issuer."""
        for cert_id in self.cert_ids:
            issuer_hash = getattr(certificate.issuer, cert_id["hash_algorithm"]["algorithm"].native)
            if (cert_id["serial_number"].native == certificate.serial_number
                    and cert_id["issuer_name_hash"].native == issuer_hash):
                return True
        return certificate.issuer in self.crl_issuers


def assign_pades_levels(reader: PdfFileReader, signatures: list[SignatureReport]) -> None:
    """Set ``level`` on every PDF signature record that is intact and valid; leave others ``None``."""
    if not signatures:
        return
    timestamps = [record for record in signatures if record.kind is SignatureKind.DOCUMENT_TIMESTAMP
                  and record.intact and record.valid and record.revision is not None]
    dss_revision = _first_dss_revision(reader)
    revocation_data = _RevocationData(DocumentSecurityStore.read_dss(reader)) if dss_revision is not None else None
    signer_certificates = {embedded.field_name: embedded.signer_cert for embedded in reader.embedded_regular_signatures}

    for record in signatures:
        if record.kind is not SignatureKind.PDF_SIGNATURE or not (record.intact and record.valid):
            continue
        revision = record.revision if record.revision is not None else 0
        later_timestamps = [stamp.revision for stamp in timestamps if stamp.revision > revision]
        has_time = (record.timestamp is not None and record.timestamp.intact and record.timestamp.valid) \
            or bool(later_timestamps)

        level = PadesLevel.B_B
        if has_time:
            level = PadesLevel.B_T
            certificate = signer_certificates.get(record.field)
            if revocation_data is not None and certificate is not None and revocation_data.covers(certificate):
                level = PadesLevel.B_LT
                if any(stamp >= dss_revision for stamp in later_timestamps):
                    level = PadesLevel.B_LTA
        record.level = level
