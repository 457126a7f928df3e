"""``init_state``: make a state dir with SoftHSM2 tokens, on-token keys, a test PKI and ``qsign.toml``.

The steps run in an order that lets a later run finish an interrupted one: SoftHSM2 config, module,
tokens, the keys on each token (their public halves exported to ``pki/``), the test PKI that
certomancer issues from ``pki/certomancer.yml`` (``softhsm_setup.pki``), the certificate objects on
the tokens, then the PIN files and ``qsign.toml``. Each step first looks for what it would make and
keeps what it finds, after checking that it fits:

- a missing token, key, certificate object, certificate file, PIN file or config key is made;
- an existing key with another type, size, ``CKA_ID`` or protection attributes raises
  ``KeyMismatch``. A certificate object that is not the certificate certomancer issues for its key
  raises ``CertificateMismatch``. A CA or TSA key missing after certificates were issued with it
  raises ``PkiIncomplete``. In these cases nothing is deleted or replaced, and the message says to
  remove the state dir and start again;
- a key that init generates anew gets a new certificate (new serial number and validity);
- a certificate file in ``pki/`` always mirrors the certificate object on the token, and is rewritten
  when it differs.

So a second run on a complete state dir writes none of these files and reports every item as
``exists``: certomancer issues the same certificates byte for byte from the same configuration and
keys. SoftHSM2 itself still rewrites each ``token.object`` at login (2.6.1 increments a counter in
its first 8 bytes), because init logs in to check the private keys.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
from cryptography import x509

from qsign.config import load_config
from softhsm_setup.errors import CertificateMismatch, SoftHsmModuleMissing
from softhsm_setup.files import Status, ensure_directory, write_file
from softhsm_setup.layout import StateLayout
from softhsm_setup.ltv_pki import DEFAULT_PKI_BASE_URL, PkiUrls
from softhsm_setup.policy_file import write_demo_policy
from softhsm_setup.pki import (
    PublicKey,
    TestPki,
    certificate_matches_key,
    certificate_pem,
    ensure_test_pki,
    write_public_key,
)
from softhsm_setup.report import CertificateResult, InitReport, KeyResult, TokenResult
from softhsm_setup.softhsm_config import write_softhsm_config
from softhsm_setup.specs import TEST_SO_PIN, TEST_USER_PIN, TOKENS, KeySpec, TokenSpec, keys_of
from softhsm_setup.state_config import write_state_config
from softhsm_setup.tokens import (
    check_private_key,
    find_certificate,
    find_private_key,
    find_token,
    generate_key_pair,
    init_token,
    read_public_key,
    store_certificate,
)
from token_drivers.errors import TokenNotPresent, pkcs11_errors
from token_drivers.module import SOFTHSM_MODULE_CANDIDATES, Pkcs11Module, find_installed_module, load_module

__all__ = ["init_state", "find_softhsm_module"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _TokenPins:
    user_pin: str
    so_pin: str


def find_softhsm_module() -> str:
    """Return the path of the installed ``libsofthsm2.so``; ``SoftHsmModuleMissing`` when none is."""
    path = find_installed_module(SOFTHSM_MODULE_CANDIDATES)
    if path is None:
        raise SoftHsmModuleMissing(candidates=", ".join(SOFTHSM_MODULE_CANDIDATES))
    return path


def _read_pin(path: Path, default: str) -> str:
    """Return the first line of a PIN file, or ``default`` when the file does not exist yet."""
    if not path.exists():
        return default
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].strip() if lines else default


def _token_pins(layout: StateLayout, token: TokenSpec) -> _TokenPins:
    return _TokenPins(user_pin=_read_pin(layout.state_dir / token.pin_file, TEST_USER_PIN),
                      so_pin=_read_pin(layout.state_dir / token.so_pin_file, TEST_SO_PIN))


def _token_serial(token: pkcs11.Token) -> str:
    return token.serial.decode("ascii", "replace").strip()


def _ensure_tokens(module: Pkcs11Module, layout: StateLayout,
                   pins: dict[str, _TokenPins]) -> list[TokenResult]:
    """Initialise each missing token, then return every token with its serial."""
    statuses: dict[str, Status] = {}
    for spec in TOKENS:
        with module.lock, pkcs11_errors(token=spec.label):
            existing = find_token(module, spec.label)
        if existing is None:
            init_token(layout, spec.label, pins[spec.label].user_pin, pins[spec.label].so_pin)
            statuses[spec.label] = Status.CREATED
        else:
            statuses[spec.label] = Status.EXISTS

    if Status.CREATED in statuses.values():
        # SoftHSM2 lists the tokens it found at C_Initialize only.
        with module.lock, pkcs11_errors():
            module.lib.reinitialize()

    results = []
    for spec in TOKENS:
        with module.lock, pkcs11_errors(token=spec.label):
            token = find_token(module, spec.label)
        if token is None:
            raise TokenNotPresent(token=spec.label, ids={"token": spec.label})
        results.append(TokenResult(label=spec.label, serial=_token_serial(token),
                                   pin_file=layout.state_dir / spec.pin_file,
                                   so_pin_file=layout.state_dir / spec.so_pin_file,
                                   uses_test_pins=pins[spec.label] == _TokenPins(TEST_USER_PIN, TEST_SO_PIN),
                                   status=statuses[spec.label]))
    return results


def _ensure_key(session: pkcs11.Session, layout: StateLayout, spec: KeySpec,
                written: list[Path]) -> tuple[KeyResult, PublicKey, bool]:
    """Generate the key of ``spec`` when missing and export its public half to ``pki/``.

    Returns the key's result, its public key, and whether ``pki/<label>.pub.pem`` changed (a new or
    different key, which needs a new certificate).
    """
    private_key = find_private_key(session, spec)
    if private_key is None:
        generate_key_pair(session, spec)
        key_status = Status.CREATED
    else:
        check_private_key(private_key, spec, layout)
        key_status = Status.EXISTS
    public_key = read_public_key(session, spec, layout)
    changed = write_public_key(layout, spec.label, public_key, written)
    result = KeyResult(token_label=spec.token_label, label=spec.label, key_type=spec.algorithm.value,
                       bits=spec.bits, curve=spec.curve, key_id=spec.key_id,
                       always_authenticate=spec.always_authenticate, status=key_status)
    return result, public_key, changed


def _ensure_certificate(session: pkcs11.Session, layout: StateLayout, spec: KeySpec, public_key: PublicKey,
                        pki: TestPki, written: list[Path]) -> CertificateResult:
    """Store the certificate that certomancer issued for ``spec`` on the token and mirror it in ``pki/``.

    An existing certificate object must be exactly that certificate, else ``CertificateMismatch``.
    """
    ids = {"token": spec.token_label, "key": spec.label}
    certificate = pki.certificate(spec.label)
    if not certificate_matches_key(certificate, public_key):
        raise CertificateMismatch(token=spec.token_label, key=spec.label, state_dir=layout.state_dir, ids=ids,
                                  detail=f"{layout.certomancer_config.name} certifies another public key")
    stored = find_certificate(session, spec, layout)
    if stored is None:
        store_certificate(session, spec, certificate)
        status = Status.CREATED
    elif stored != certificate:
        raise CertificateMismatch(token=spec.token_label, key=spec.label, state_dir=layout.state_dir, ids=ids,
                                  detail=f"it is not the certificate {layout.certomancer_config.name} issues")
    else:
        status = Status.EXISTS

    path = layout.end_entity_certificate(spec.label)
    _write_certificate_file(path, certificate, written)
    return CertificateResult(
        role=spec.role.value, token_label=spec.token_label, label=spec.label,
        subject=certificate.subject.rfc4514_string(), issuer=certificate.issuer.rfc4514_string(),
        serial_number=certificate.serial_number, not_after=certificate.not_valid_after_utc, path=path,
        status=status)


def _write_certificate_file(path: Path, certificate: x509.Certificate, written: list[Path]) -> None:
    """Write ``certificate`` to ``path`` unless the file already contains exactly this certificate."""
    data = certificate_pem(certificate)
    if path.exists() and path.read_bytes() == data:
        return
    write_file(path, data, 0o644)
    written.append(path)


@contextlib.contextmanager
def _token_session(module: Pkcs11Module, token_spec: TokenSpec, pins: _TokenPins) -> Iterator[pkcs11.Session]:
    """Hold the module lock and a read-write user session on ``token_spec``'s token."""
    with module.lock:
        with pkcs11_errors(token=token_spec.label):
            token = find_token(module, token_spec.label)
            if token is None:
                raise TokenNotPresent(token=token_spec.label, ids={"token": token_spec.label})
            session = token.open(rw=True, user_pin=pins.user_pin)
        try:
            yield session
        finally:
            with pkcs11_errors(token=token_spec.label):
                session.close()


def _ca_result(role: str, path: Path, certificate: x509.Certificate, status: Status) -> CertificateResult:
    return CertificateResult(role=role, token_label=None, label=path.stem, path=path, status=status,
                             subject=certificate.subject.rfc4514_string(),
                             issuer=certificate.issuer.rfc4514_string(),
                             serial_number=certificate.serial_number, not_after=certificate.not_valid_after_utc)


def _write_pin_files(layout: StateLayout, pins: dict[str, _TokenPins], written: list[Path]) -> None:
    """Write each missing PIN file (mode 0600) with the PIN the tokens were initialised or opened with.

    Runs after every token accepted its user PIN, so a file never contains a PIN that failed.
    """
    # NOTE: the SO PIN is never tried, because these tokens need it only for initialisation. An SO PIN
    # file written for a token that already existed contains the test SO PIN, unverified.
    ensure_directory(layout.secrets_dir, 0o700)
    for token in TOKENS:
        for relative, pin in ((token.pin_file, pins[token.label].user_pin),
                              (token.so_pin_file, pins[token.label].so_pin)):
            path = layout.state_dir / relative
            if not path.exists():
                write_file(path, f"{pin}\n".encode("utf-8"), 0o600)
                written.append(path)


def _pki_urls(layout: StateLayout, base_url: str | None) -> PkiUrls:
    """Return the service URLs from ``base_url``, else ``[pki] base_url`` of an existing qsign.toml, else
    the default. They apply to a new PKI only: an issued one keeps the URL prefix of its configuration."""
    if base_url is None and layout.config_path.exists():
        base_url = load_config(layout.state_dir).section("pki").get("base_url")
    return PkiUrls.parse(base_url or DEFAULT_PKI_BASE_URL)


def init_state(state_dir: Path, *, module_path: str | None = None,
               now: datetime.datetime | None = None, pki_base_url: str | None = None) -> InitReport:
    """Make (or complete) the state dir ``state_dir`` with SoftHSM2 tokens, keys, a test PKI and config.

    ``module_path`` defaults to the installed ``libsofthsm2.so``; ``now`` (timezone-aware) sets the
    start of certificate validity and defaults to the current time. ``pki_base_url`` is where
    ``qsign softhsm serve-pki`` will serve OCSP, CRLs and the TSA; it defaults to ``[pki] base_url``
    of an existing qsign.toml, else ``DEFAULT_PKI_BASE_URL``.

    Side effects the caller must know: sets ``os.environ["SOFTHSM2_CONF"]`` to the state dir's
    config, loads the module through ``token_drivers.module.load_module`` and reinitializes it, so
    every session and object handle this process held on that module becomes invalid.

    Raises ``SoftHsmSetupError`` subclasses, ``ConfigError`` and ``TokenError`` subclasses.
    """
    layout = StateLayout(state_dir.expanduser().resolve())
    now = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    written: list[Path] = []
    _logger.info("initialising state dir %s", layout.state_dir)

    ensure_directory(layout.state_dir, 0o700)
    ensure_directory(layout.pki_dir, 0o755)
    if write_softhsm_config(layout) is not Status.EXISTS:
        written.append(layout.softhsm_conf)

    module_path = module_path or find_softhsm_module()
    os.environ["SOFTHSM2_CONF"] = str(layout.softhsm_conf)
    module = load_module(module_path)
    # The module may have been loaded earlier in this process with another SOFTHSM2_CONF.
    with module.lock, pkcs11_errors():
        module.lib.reinitialize()

    pins = {token.label: _token_pins(layout, token) for token in TOKENS}
    token_results = _ensure_tokens(module, layout, pins)

    key_results: list[KeyResult] = []
    public_keys: dict[str, PublicKey] = {}
    changed_keys: set[str] = set()
    for token_spec in TOKENS:
        with _token_session(module, token_spec, pins[token_spec.label]) as session:
            for spec in keys_of(token_spec):
                with pkcs11_errors(token=spec.token_label, key=spec.label):
                    result, public_keys[spec.label], changed = _ensure_key(session, layout, spec, written)
                key_results.append(result)
                if changed:
                    changed_keys.add(spec.label)

    pki = ensure_test_pki(layout, now, _pki_urls(layout, pki_base_url), reissue=changed_keys)
    written.extend(pki.files_written)
    certificate_results = [
        _ca_result("root-ca", layout.root_certificate, pki.certificate("root-ca"), pki.statuses["root-ca"]),
        _ca_result("intermediate-ca", layout.intermediate_certificate, pki.certificate("intermediate-ca"),
                   pki.statuses["intermediate-ca"]),
        _ca_result("tsa", layout.tsa_certificate, pki.certificate("tsa"), pki.statuses["tsa"]),
    ]
    for token_spec in TOKENS:
        with _token_session(module, token_spec, pins[token_spec.label]) as session:
            for spec in keys_of(token_spec):
                with pkcs11_errors(token=spec.token_label, key=spec.label):
                    certificate_results.append(
                        _ensure_certificate(session, layout, spec, public_keys[spec.label], pki, written))

    _write_pin_files(layout, pins, written)

    config_status = write_state_config(layout, module_path, pki.urls)
    if config_status is not Status.EXISTS:
        written.append(layout.config_path)
    policy_path = write_demo_policy(layout.state_dir)
    if policy_path is not None:
        written.append(policy_path)

    report = InitReport(state_dir=layout.state_dir, module_path=module_path, softhsm_conf=layout.softhsm_conf,
                        config_path=layout.config_path, config_status=config_status, tokens=token_results,
                        keys=key_results, certificates=certificate_results, files_written=written)
    _logger.info("state dir %s ready (%s)", layout.state_dir, "changed" if report.changed else "unchanged")
    return report
