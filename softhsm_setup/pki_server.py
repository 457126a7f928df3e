"""The test PKI's services over HTTP on 127.0.0.1: OCSP responders, CRLs, CA certificates and a TSA.

The responses are built by certomancer's service classes (``certomancer.services``: the OCSP
responder, the CRL builder and the RFC 3161 time stamper) from the CA and TSA keys in ``pki/``.
certomancer's own animator is not used, because it serves only a PKI that certomancer issued from
its own configuration, and the end-entity certificates here come from keys on the SoftHSM2 tokens.

Routes (``PkiUrls`` builds the same URLs for the certificates):

- ``POST /ocsp/root`` and ``/ocsp/intermediate``: OCSP, signed by that CA's own key;
- ``GET /crl/root.crl`` and ``/crl/intermediate.crl``: a CRL valid for one day from now;
- ``GET /certs/root-ca.cer`` and ``/certs/intermediate-ca.cer``: the CA certificate (DER);
- ``POST /tsa``: RFC 3161 time-stamp responses signed by ``pki/tsa.key.pem``;
- ``GET /healthz``.

The revocation list ``pki/revoked.json`` is read on every OCSP and CRL request, so a certificate
revoked with ``softhsm_setup.ltv_pki.revoke_certificate`` shows as revoked at once.
"""

from __future__ import annotations

import datetime
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import crl as asn1_crl
from asn1crypto import keys as asn1_keys
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import pem as asn1_pem
from asn1crypto import tsp as asn1_tsp
from asn1crypto import x509 as asn1_x509
from cryptography.x509 import load_der_x509_certificate

from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import PkiUrls, read_revocations, tsa_certificate_path, tsa_key_path

__all__ = ["PkiServices", "PkiServer", "ServicesUnavailable", "build_app"]

_logger = logging.getLogger(__name__)

#: How long a CRL and an OCSP response stay current.
CRL_VALIDITY = datetime.timedelta(days=1)
OCSP_VALIDITY = datetime.timedelta(hours=1)
#: Upper bound for a request body (OCSP and time-stamp requests are a few hundred bytes).
MAX_REQUEST_BYTES = 64 * 1024


class ServicesUnavailable(RuntimeError):
    """certomancer or werkzeug is not installed (``pip install 'qsign[pki]'``)."""


def _load_certificate(path: Path) -> asn1_x509.Certificate:
    data = path.read_bytes()
    if asn1_pem.detect(data):
        data = asn1_pem.unarmor(data)[2]
    return asn1_x509.Certificate.load(data)


def _load_private_key(path: Path) -> asn1_keys.PrivateKeyInfo:
    return asn1_keys.PrivateKeyInfo.load(asn1_pem.unarmor(path.read_bytes())[2])


@dataclass(frozen=True)
class _Authority:
    name: str
    certificate: asn1_x509.Certificate
    private_key: asn1_keys.PrivateKeyInfo


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


class _RevocationInfo:
    """certomancer's revocation lookup interface for one CA, over the certificates in ``pki/``."""

    def __init__(self, services: PkiServices, authority: _Authority) -> None:
        self.services = services
        self.authority = authority

    def get_issuer_cert(self) -> asn1_x509.Certificate:
        return self.authority.certificate

    def check_revocation_status(self, cid: asn1_ocsp.CertId, at_time: datetime.datetime):
        serial = cid["serial_number"].native
        revoked = self.services.revoked(self.authority).get(serial)
        if revoked is not None and revoked[0] <= at_time:
            revoked_at, reason = revoked
            status = asn1_ocsp.CertStatus(name="revoked", value=asn1_ocsp.RevokedInfo(
                {"revocation_time": revoked_at, "revocation_reason": reason}))
            return status, []
        if serial not in self.services.issued_serials(self.authority):
            return asn1_ocsp.CertStatus(name="unknown", value=None), []
        return asn1_ocsp.CertStatus(name="good", value=None), []


class PkiServices:
    """The responses of the test PKI of one state dir, built per request by certomancer's classes."""

    def __init__(self, state_dir: Path) -> None:
        try:
            from certomancer.services import choose_signed_digest
        except ImportError as error:
            raise ServicesUnavailable(str(error)) from error

        self.layout = StateLayout(Path(state_dir))
        self._choose_signed_digest = choose_signed_digest
        self.authorities = {
            "root": _Authority("root", _load_certificate(self.layout.root_certificate),
                               _load_private_key(self.layout.root_key)),
            "intermediate": _Authority("intermediate", _load_certificate(self.layout.intermediate_certificate),
                                       _load_private_key(self.layout.intermediate_key)),
        }
        self.tsa_certificate = _load_certificate(tsa_certificate_path(self.layout))
        self.tsa_key = _load_private_key(tsa_key_path(self.layout))

    def issued_serials(self, authority: _Authority) -> set[int]:
        """Return the serial numbers of the certificates in ``pki/`` that ``authority`` issued."""
        serials = set()
        for path in self.layout.pki_dir.glob("*.pem"):
            if path.name.endswith(".key.pem"):
                continue
            certificate = _load_certificate(path)
            if certificate.issuer == authority.certificate.subject:
                serials.add(certificate.serial_number)
        return serials

    def revoked(self, authority: _Authority) -> dict[int, tuple[datetime.datetime, str]]:
        """Return ``{serial: (revocation time, reason)}`` of ``pki/revoked.json`` for ``authority``."""
        issuer = load_der_x509_certificate(authority.certificate.dump()).subject.rfc4514_string()
        return {entry.serial_number: (entry.revoked_at, entry.reason)
                for entry in read_revocations(self.layout) if entry.issuer == issuer}

    def _signature_algorithm(self, certificate: asn1_x509.Certificate) -> Any:
        return self._choose_signed_digest("sha256", certificate.public_key)

    def ocsp_response(self, ca_name: str, body: bytes) -> bytes:
        """Return the DER OCSP response to the DER request ``body`` for certificates of CA ``ca_name``."""
        from certomancer.services import SimpleOCSPResponder

        authority = self.authorities[ca_name]
        try:
            request = asn1_ocsp.OCSPRequest.load(body)
            request.native  # parse everything now, so a malformed request is rejected here
        except ValueError:
            return asn1_ocsp.OCSPResponse({"response_status": "malformed_request"}).dump()

        responder = SimpleOCSPResponder(
            responder_cert=authority.certificate, responder_key=authority.private_key,
            signature_algo=self._signature_algorithm(authority.certificate),
            at_time=_now(), revinfo_interface=_RevocationInfo(self, authority), validity=OCSP_VALIDITY)
        return responder.build_ocsp_response(request).dump()

    def crl(self, ca_name: str) -> bytes:
        """Return a DER CRL of CA ``ca_name`` listing its revoked certificates, valid for ``CRL_VALIDITY``."""
        from certomancer.services import CRLBuilder

        authority = self.authorities[ca_name]
        builder = CRLBuilder(
            issuer_name=authority.certificate.subject, issuer_key=authority.private_key,
            signature_algo=self._signature_algorithm(authority.certificate),
            authority_key_identifier=authority.certificate.key_identifier_value)
        revoked = [
            CRLBuilder.format_revoked_cert(serial, asn1_crl.CRLReason(reason), revoked_at)
            for serial, (revoked_at, reason) in sorted(self.revoked(authority).items())
        ]
        now = _now()
        return builder.build_crl(crl_number=int(now.timestamp()), this_update=now, next_update=now + CRL_VALIDITY,
                                 revoked_certs=revoked).dump()

    def ca_certificate(self, ca_name: str) -> bytes:
        return self.authorities[ca_name].certificate.dump()

    def time_stamp_response(self, body: bytes) -> bytes:
        """Return the DER RFC 3161 response to the DER time-stamp request ``body``."""
        from certomancer.services import TimeStamper

        try:
            request = asn1_tsp.TimeStampReq.load(body)
            request.native
        except ValueError:
            status = asn1_tsp.PKIStatusInfo({"status": "rejection", "fail_info": {"bad_data_format"}})
            return asn1_tsp.TimeStampResp({"status": status}).dump()
        stamper = TimeStamper(tsa_cert=self.tsa_certificate, tsa_key=self.tsa_key,
                              certs_to_embed=[self.authorities["intermediate"].certificate],
                              md_algorithm=request["message_imprint"]["hash_algorithm"]["algorithm"].native)
        return stamper.request_tsa_response(request).dump()


def build_app(services: PkiServices) -> Any:
    """Return the WSGI application (werkzeug) that serves ``services``."""
    try:
        from werkzeug.exceptions import HTTPException
        from werkzeug.routing import Map, Rule
        from werkzeug.wrappers import Request, Response
    except ImportError as error:
        raise ServicesUnavailable(str(error)) from error

    routes = Map([
        Rule("/ocsp/<any(root, intermediate):ca_name>", endpoint="ocsp", methods=["POST"]),
        Rule("/crl/<any(root, intermediate):ca_name>.crl", endpoint="crl", methods=["GET"]),
        Rule("/certs/<any(root, intermediate):ca_name>-ca.cer", endpoint="certificate", methods=["GET"]),
        Rule("/tsa", endpoint="tsa", methods=["POST"]),
        Rule("/healthz", endpoint="healthz", methods=["GET"]),
    ])

    def respond(request: Request, endpoint: str, values: dict[str, str]) -> Response:
        if endpoint == "healthz":
            return Response("ok\n", mimetype="text/plain")
        if endpoint == "crl":
            return Response(services.crl(values["ca_name"]), mimetype="application/pkix-crl")
        if endpoint == "certificate":
            return Response(services.ca_certificate(values["ca_name"]), mimetype="application/pkix-cert")

        if request.content_length is None or request.content_length > MAX_REQUEST_BYTES:
            return Response("request body missing or too large\n", status=413, mimetype="text/plain")
        body = request.get_data()
        if endpoint == "ocsp":
            return Response(services.ocsp_response(values["ca_name"], body), mimetype="application/ocsp-response")
        return Response(services.time_stamp_response(body), mimetype="application/timestamp-reply")

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        adapter = routes.bind_to_environ(environ)
        try:
            endpoint, values = adapter.match()
            response = respond(request, endpoint, values)
        except HTTPException as error:
            response = error
        _logger.info("%s %s -> %s", request.method, request.path, response.status_code)
        return response(environ, start_response)

    return application


class PkiServer:
    """``build_app`` served by werkzeug on ``host``:``port`` in a background thread (``start``/``stop``)."""

    def __init__(self, state_dir: Path, host: str = "127.0.0.1", port: int = 0, app: Any = None) -> None:
        try:
            from werkzeug.serving import make_server
        except ImportError as error:
            raise ServicesUnavailable(str(error)) from error

        self.services = PkiServices(state_dir)
        self._server = make_server(host, port, app or build_app(self.services), threaded=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def urls(self) -> PkiUrls:
        return PkiUrls(f"http://{self._server.server_address[0]}:{self.port}")

    def serve_forever(self) -> None:
        _logger.info("serving the test PKI of %s on %s", self.services.layout.state_dir, self.urls.base_url)
        self._server.serve_forever()

    def start(self) -> PkiServer:
        self._thread = threading.Thread(target=self.serve_forever, name="qsign-pki-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Close the listening socket of a server that ``serve_forever`` ran in this thread."""
        self._server.server_close()

    def stop(self) -> None:
        """Stop serving and close the listening socket; requests after this fail to connect."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        _logger.info("stopped the test PKI server on %s", self.urls.base_url)
