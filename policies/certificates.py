"""Certificate policy: key usage, validity at signing time, path to a trust anchor, policy OIDs.

The caller passes parsed certificates (``cryptography.x509``); this module reads no files.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from qsign.i18n import N_
from policies.model import CertificatePolicy, Decision

__all__ = ["check_certificate"]

#: Longest path from the signer's certificate to an anchor that is searched.
MAX_PATH_LENGTH = 6


def _deny(rule: str, reason: str, **params: object) -> Decision:
    return Decision(False, rule, reason, params)


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, Exception):  # InvalidSignature and unsupported algorithms alike
        return False
    return True


def _chains_to_anchor(certificate: x509.Certificate, anchors: Sequence[x509.Certificate],
                      intermediates: Sequence[x509.Certificate], now: datetime) -> bool:
    current = certificate
    for _ in range(MAX_PATH_LENGTH):
        if any(_issued_by(current, anchor) for anchor in anchors):
            return True
        issuers = [c for c in intermediates if c != current and _issued_by(current, c)
                   and c.not_valid_before_utc <= now < c.not_valid_after_utc]
        if not issuers:
            return False
        current = issuers[0]
    return False


def check_certificate(policy: CertificatePolicy, certificate: x509.Certificate, anchors: Sequence[x509.Certificate],
                      intermediates: Sequence[x509.Certificate], now: datetime) -> Decision:
    """Decide whether the signer's certificate may sign at ``now`` (timezone-aware).

    Revocation is not checked here: NOTE: the agent signs PAdES B-B without revocation data, and the
    verification service checks revocation when the signature is validated.
    """
    subject = certificate.subject.rfc4514_string()
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        return _deny("certificate.validity", N_("the certificate {subject} is not valid at signing time "
                                                "(valid until {until})"),
                     subject=subject, until=certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"))

    try:
        usage = certificate.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        usage = None
    for name in policy.key_usage:
        if usage is None or not getattr(usage, name):
            shown = "nonRepudiation" if name == "content_commitment" else name
            return _deny("certificate.key_usage", N_("the certificate {subject} lacks the key usage {usage}"),
                         subject=subject, usage=shown)

    if policy.require_chain and not _chains_to_anchor(certificate, anchors, intermediates, now):
        return _deny("certificate.chain", N_("the certificate {subject} does not chain to a configured trust anchor"),
                     subject=subject)

    if policy.required_policy_oids:
        try:
            policies = certificate.extensions.get_extension_for_oid(ExtensionOID.CERTIFICATE_POLICIES).value
            present = {information.policy_identifier.dotted_string for information in policies}
        except x509.ExtensionNotFound:
            present = set()
        missing = [oid for oid in policy.required_policy_oids if oid not in present]
        if missing:
            return _deny("certificate.policy_oids", N_("the certificate {subject} lacks the policy OID {oid}"),
                         subject=subject, oid=missing[0])
    return Decision(True, "certificate", N_("allowed"))
