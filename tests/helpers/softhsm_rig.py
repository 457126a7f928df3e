"""SoftHSM2 token directories made for one test, and Python snippets run against them in a subprocess.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, in ``C_Initialize``, and a PKCS#11 module is initialised once
per process. A test that needs tokens of its own (duplicate labels, a Chinese label, keys without
``CKA_ID``, a token deleted mid-use) therefore makes a ``SoftHsmDir`` in ``tmp_path`` and runs its
PKCS#11 calls with ``SoftHsmDir.run_python`` in a fresh interpreter. The functions below marked
"child side" run inside that interpreter.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509 as crypto_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from token_drivers.errors import TokenError
from token_drivers.keys import TokenKey, find_token
from token_drivers.module import SOFTHSM_MODULE_CANDIDATES, find_installed_module, load_module

__all__ = [
    "SOFTHSM_MODULE",
    "KeyRequest",
    "SoftHsmDir",
    "cryptography_public_key",
    "error_code",
    "provision_token",
    "run_python",
    "subprocess_env",
    "token_public_key",
    "verify_signature",
]

SOFTHSM_MODULE = find_installed_module(SOFTHSM_MODULE_CANDIDATES)
TESTS_DIR = Path(__file__).resolve().parents[1]

#: Seconds a snippet or a ``softhsm2-util`` call may run before the test fails.
SUBPROCESS_TIMEOUT = 120

_CURVE_OIDS = {"secp256r1": "1.2.840.10045.3.1.7", "secp384r1": "1.3.132.0.34"}


@dataclass(frozen=True)
class KeyRequest:
    """A key pair to generate on a test token, and the certificate to store next to it.

    ``key_id`` and ``certificate_id`` are hex; an empty string stores no ``CKA_ID``. Without
    ``certificate_cn`` no certificate is stored.
    """

    label: str
    key_id: str
    algorithm: str = "rsa"
    bits: int = 2048
    curve: str = "secp256r1"
    always_authenticate: bool = False
    certificate_cn: str | None = None
    certificate_id: str = ""


@dataclass
class SoftHsmDir:
    """A SoftHSM2 configuration and token directory of one test."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "softhsm2.conf"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @classmethod
    def create(cls, root: Path) -> SoftHsmDir:
        """Write ``softhsm2.conf`` and an empty token directory under ``root``."""
        rig = cls(root)
        rig.tokens.mkdir(parents=True, exist_ok=True)
        rig.conf.write_text(f"directories.tokendir = {rig.tokens}\n"
                            "objectstore.backend = file\n"
                            "log.level = ERROR\n", encoding="utf-8")
        return rig

    def env(self) -> dict[str, str]:
        """Return the environment for a subprocess that uses these tokens."""
        return subprocess_env(SOFTHSM2_CONF=str(self.conf))

    def softhsm2_util(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``softhsm2-util ARGS`` with this configuration; fail the test if it fails."""
        completed = subprocess.run(["softhsm2-util", *args], env=self.env(), capture_output=True,
                                   text=True, timeout=SUBPROCESS_TIMEOUT, check=False)
        assert completed.returncode == 0, f"softhsm2-util {args[0]} failed:\n{completed.stdout}{completed.stderr}"
        return completed

    def init_token(self, label: str, pin: str = "123456", so_pin: str = "12345678") -> None:
        """Initialise a new token in the free slot."""
        self.softhsm2_util("--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin)

    def run_python(self, code: str, **params: Any) -> Any:
        """Run ``code`` with these tokens through ``run_python``."""
        return run_python(code, self.env(), **params)

    def provision(self, token_label: str, keys: list[KeyRequest], pin: str = "123456") -> None:
        """Generate ``keys`` and their certificates on the token, in a subprocess."""
        self.run_python(
            "from helpers.softhsm_rig import KeyRequest, provision_token\n"
            "provision_token(params['token'], params['pin'], [KeyRequest(**k) for k in params['keys']])\n"
            "result = True\n",
            token=token_label, pin=pin, keys=[asdict(key) for key in keys])


def subprocess_env(**variables: str) -> dict[str, str]:
    """Return this process's environment plus ``variables``, with the tests directory on ``PYTHONPATH``."""
    environment = dict(os.environ, **variables)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR)] + [path for path in environment.get("PYTHONPATH", "").split(os.pathsep) if path])
    return environment


def run_python(code: str, env: dict[str, str], **params: Any) -> Any:
    """Run ``code`` in a fresh interpreter with ``env`` and return its ``result`` variable.

    ``code`` can read ``params`` (the keyword arguments, passed as JSON) and must assign a
    JSON-serialisable ``result``. A non-zero exit fails the test with the child's stderr. Make
    ``env`` with ``subprocess_env`` so that ``code`` can import ``helpers``.
    """
    script = ("import json, sys\n"
              "params = json.loads(sys.argv[1])\n"
              + textwrap.dedent(code)
              + "\nprint('RESULT ' + json.dumps(result, ensure_ascii=False))\n")
    completed = subprocess.run([sys.executable, "-c", script, json.dumps(params)], env=env,
                               capture_output=True, text=True, encoding="utf-8",
                               timeout=SUBPROCESS_TIMEOUT, check=False)
    assert completed.returncode == 0, (
        f"snippet exited with {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"snippet printed no result:\n{completed.stdout}\n{completed.stderr}"
    return json.loads(lines[-1][len("RESULT "):])


def error_code(function: Any, *args: Any, **kwargs: Any) -> str:
    """Call ``function`` and return the ``code`` of the ``TokenError`` it raises, or ``"ok"``."""
    try:
        function(*args, **kwargs)
    except TokenError as error:
        return error.code
    return "ok"


def cryptography_public_key(public_key: Any) -> Any:
    """Return the ``cryptography`` public key of a python-pkcs11 public key object."""
    if public_key.key_type == KeyType.RSA:
        numbers = rsa.RSAPublicNumbers(int.from_bytes(public_key[Attribute.PUBLIC_EXPONENT], "big"),
                                       int.from_bytes(public_key[Attribute.MODULUS], "big"))
        return numbers.public_key()
    return load_der_public_key(encode_ec_public_key(public_key))


def verify_signature(public_key: Any, signature: bytes, data: bytes, digest_algorithm: str,
                     pss: bool = False) -> None:
    """Verify a signature as ``TokenKey.sign`` returns it; raises ``InvalidSignature``."""
    hash_algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[digest_algorithm]
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    elif pss:
        public_key.verify(signature, data, padding.PSS(padding.MGF1(hash_algorithm), hash_algorithm.digest_size),
                          hash_algorithm)
    else:
        public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)


def token_public_key(key: TokenKey) -> Any:
    """Return the ``cryptography`` public key of the public-key object with ``key``'s ``CKA_ID``.

    Reads it in a second session without a login, so ``key``'s own session is left alone.
    """
    with key.module.lock:
        token = find_token(key.module, token_label=key.token_label)
        with token.open() as session:
            return cryptography_public_key(session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=key.key_id))


# Child side: these run in the subprocess, with SOFTHSM2_CONF pointing at the test's tokens.

def provision_token(token_label: str, pin: str, keys: list[KeyRequest]) -> None:
    """Generate ``keys`` on the token, with a certificate for each that has ``certificate_cn``.

    The certificates are issued by a throwaway EC CA key; only their subjects and public keys
    matter to the tests.
    """
    assert SOFTHSM_MODULE is not None, "SoftHSM2 is not installed"
    module = load_module(SOFTHSM_MODULE)
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    with module.lock:
        token = module.lib.get_token(token_label=token_label)
        with token.open(rw=True, user_pin=pin) as session:
            for request in keys:
                public_key = _generate_key_pair(session, request)
                if request.certificate_cn is not None:
                    _store_certificate(session, request, cryptography_public_key(public_key), issuer_key)


def _generate_key_pair(session: Any, request: KeyRequest) -> Any:
    key_id = bytes.fromhex(request.key_id)
    common: dict[Attribute, Any] = {Attribute.LABEL: request.label, Attribute.TOKEN: True}
    if key_id:
        common[Attribute.ID] = key_id
    private_template = {**common, Attribute.ALWAYS_AUTHENTICATE: request.always_authenticate}

    if request.algorithm == "rsa":
        public_key, _ = session.generate_keypair(KeyType.RSA, request.bits, store=True,
                                                 public_template=common, private_template=private_template)
        return public_key

    parameters = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVE_OIDS[request.curve])}, local=True)
    public_key, _ = parameters.generate_keypair(store=True, public_template=common,
                                                private_template=private_template)
    return public_key


def _store_certificate(session: Any, request: KeyRequest, subject_public_key: Any, issuer_key: Any) -> None:
    subject = crypto_x509.Name([crypto_x509.NameAttribute(NameOID.COMMON_NAME, request.certificate_cn)])
    issuer = crypto_x509.Name([crypto_x509.NameAttribute(NameOID.COMMON_NAME, "qsign token_drivers test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (crypto_x509.CertificateBuilder()
                   .subject_name(subject).issuer_name(issuer)
                   .public_key(subject_public_key)
                   .serial_number(crypto_x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .sign(issuer_key, hashes.SHA256()))

    template: dict[Attribute, Any] = {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.LABEL: request.label,
        Attribute.SUBJECT: subject.public_bytes(),
        Attribute.VALUE: certificate.public_bytes(Encoding.DER),
    }
    if request.certificate_id:
        template[Attribute.ID] = bytes.fromhex(request.certificate_id)
    session.create_object(template)

