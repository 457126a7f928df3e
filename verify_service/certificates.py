"""Certificate fields as the report shows them: readable names, fingerprints and validity dates."""

from __future__ import annotations

from asn1crypto import x509

from verify_service.report import CertificateInfo

__all__ = ["certificate_info", "readable_name"]

#: RFC 4514 short names of the attribute types that certificates here use; others print as dotted OIDs.
_SHORT_NAMES = {
    "common_name": "CN",
    "country_name": "C",
    "organization_name": "O",
    "organizational_unit_name": "OU",
    "locality_name": "L",
    "state_or_province_name": "ST",
    "street_address": "STREET",
    "domain_component": "DC",
    "user_id": "UID",
    "serial_number": "serialNumber",
    "email_address": "emailAddress",
    "organization_identifier": "organizationIdentifier",
    "given_name": "GN",
    "surname": "SN",
    "title": "title",
}


def _escape(value: str) -> str:
    escaped = "".join("\\" + char if char in ',+"\\<>;=' else char for char in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and len(escaped) > 1:
        escaped = escaped[:-1] + "\\ "
    return escaped


def readable_name(name: x509.Name) -> str:
    """Return a distinguished name as an RFC 4514 string, e.g. ``CN=张三,O=国家税务总局,C=CN``.

    Non-ASCII text stays as it is (RFC 4514 allows UTF-8), and the most specific RDN comes first.
    """
    rdns = []
    for rdn in reversed(list(name.chosen)):
        parts = []
        for attribute in rdn:
            type_name = attribute["type"].native
            short = _SHORT_NAMES.get(type_name, attribute["type"].dotted)
            value = attribute["value"].native
            parts.append(f"{short}={_escape(value if isinstance(value, str) else str(value))}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def certificate_info(certificate: x509.Certificate) -> CertificateInfo:
    """Return the report fields of a certificate."""
    validity = certificate["tbs_certificate"]["validity"]
    return CertificateInfo(
        subject=readable_name(certificate.subject),
        issuer=readable_name(certificate.issuer),
        serial=format(certificate.serial_number, "x"),
        sha256=certificate.sha256.hex(),
        not_before=validity["not_before"].native.isoformat(),
        not_after=validity["not_after"].native.isoformat(),
        key_algorithm=certificate.public_key.algorithm,
        key_bits=certificate.public_key.bit_size,
    )
