"""CAdES detached signatures (``.p7s``, DER) for any file.

The output is a CMS SignedData without the content, with the signed attributes content-type,
message-digest, signing-time and signing-certificate-v2 (CAdES-B-B). The input is hashed in chunks
from the file, so its size does not matter for memory. ``openssl cms -verify -binary -inform DER
-in FILE.p7s -content FILE`` checks the result.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path

from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import TimeStamper
from pyhanko_certvalidator import ValidationContext

from signing.errors import SigningFailed
from signing.files import atomic_output, check_input_file, check_output_path
from signing.ltv import async_check_signer_certificate
from signing.pkcs11_signer import TokenSigner
from signing.result import SignResult, signer_common_name

__all__ = ["sign_detached", "async_sign_detached", "HASH_CHUNK_SIZE"]

_logger = logging.getLogger(__name__)

#: Read size for hashing the input.
HASH_CHUNK_SIZE = 1024 * 1024


async def async_sign_detached(signer: TokenSigner, input_path: Path, output_path: Path, *,
                              timestamper: TimeStamper | None = None,
                              validation_context: ValidationContext | None = None) -> SignResult:
    """Write a detached CAdES signature of the file at ``input_path`` to ``output_path`` (DER).

    ``timestamper`` adds a signature timestamp (CAdES-B-T). With ``validation_context`` the signer's
    certificate path and revocation status are checked first (``signer_revoked``,
    ``revocation_unavailable``, ``signer_not_trusted``). Raises ``input_not_found``,
    ``input_not_file``, ``input_empty``, ``output_invalid``, token errors, and ``SigningFailed``.
    On any error no output file exists afterwards (an existing file is left as it was).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_input_file(input_path)
    check_output_path(output_path, input_path)
    if validation_context is not None:
        await async_check_signer_certificate(signer.signing_cert, validation_context,
                                             signer_common_name(signer.signing_cert),
                                             "B-T" if timestamper is not None else "B-B")

    signing_time = datetime.now(timezone.utc).replace(microsecond=0)
    attributes = PdfCMSSignedAttributes(signing_time=signing_time)
    try:
        with input_path.open("rb") as content:
            signed_data = await signer.async_sign_general_data(
                content,
                signer.digest_algorithm,
                detached=True,
                use_cades=True,
                timestamper=timestamper,
                chunk_size=HASH_CHUNK_SIZE,
                signed_attr_settings=attributes,
            )
    except SigningError as error:
        raise SigningFailed(path=str(input_path), reason=str(error), ids={"path": str(input_path)}) from error

    with atomic_output(output_path) as handle:
        handle.write(signed_data.dump())

    size = output_path.stat().st_size
    _logger.info("signed %s -> %s (detached CAdES, key %s, %s)", input_path, output_path,
                 signer.key.key_label, signer.mechanism_name)
    return SignResult(output=output_path, format="cades", field_name=None, signing_time=signing_time,
                      digest_algorithm=signer.digest_algorithm, mechanism=signer.mechanism_name,
                      signer=signer_common_name(signer.signing_cert), size=size)


def sign_detached(signer: TokenSigner, input_path: Path, output_path: Path, *,
                  timestamper: TimeStamper | None = None,
                  validation_context: ValidationContext | None = None) -> SignResult:
    """Run ``async_sign_detached`` in a new event loop; not callable from inside a running loop."""
    return asyncio.run(async_sign_detached(signer, input_path, output_path, timestamper=timestamper,
                                           validation_context=validation_context))
