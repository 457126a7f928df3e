"""Sealing documents in a worker process: prepare, sign the digests in a batch, write, publish, store.

One ``Sealer`` lives in each worker process and owns that process's only ``TokenKey``, so every
PKCS#11 call of the process comes from one thread. A chunk of documents goes through the steps
together. Each document's input is written to the document store and, in the same read, copied to
a partial file, which is prepared up to its byte-range digest. Then all digests are signed on the
token one after another, and each signature is embedded.

Files of one document, all in the output directory tree so that renames stay on one file system:

- ``<partial dir>/<id>.partial``: the copy being prepared and signed; removed when a resumed job
  finds it, because its signature never left this file.
- ``<partial dir>/<id>.signed``: the complete, fsynced signed document (renamed from ``.partial``).
- the output path: a hard link to ``.signed`` made with ``os.link``, which fails instead of replacing
  an existing file, so an output is published at most once and never overwrites anything.

``seal`` decides from those files where a document stands, so a resumed job never signs a document
whose signed copy was already made or published.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pyhanko.pdf_utils import misc
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument

from archive.store import DocumentStore, StoredFile
from hsm import testhooks
from hsm.cms import CmsTemplate
from hsm.errors import OutputForeign, OutputWriteFailed
from hsm.profiles import BulkProfile
from qsign.config import Config
from qsign.errors import QsignError
from signing.appearance import VisibleSignature, build_stamp_style
from signing.errors import PdfMalformed, PdfSigningNotAllowed, SigningFailed
from signing.files import check_input_file, check_pdf_header
# The field helpers of signing.pades are reused so that bulk seals name and place fields the same way.
from signing.pades import COPY_CHUNK_SIZE, _field_names, _field_spec, _open_writer, next_field_name
from signing.pkcs11_signer import TokenSigner, load_chain, select_digest, signature_mechanism, signature_size
from signing.result import signer_common_name
from token_drivers.errors import TokenError
from token_drivers.keys import TokenKey, open_key
from token_drivers.pin import read_pin

__all__ = ["ItemTask", "ItemOutcome", "Sealer", "partial_paths", "RECOVERABLE_TOKEN_CODES"]

_logger = logging.getLogger(__name__)

#: Token errors after which the session is opened again and the signature retried once.
RECOVERABLE_TOKEN_CODES = frozenset({"device_removed", "session_closed", "token_not_present",
                                     "user_not_logged_in", "pkcs11_error"})
_MALFORMED_ERRORS = (misc.PdfError, ValueError, KeyError, IndexError, TypeError, AttributeError)


@dataclass(frozen=True)
class ItemTask:
    """One document to seal: the job item key, the input file and the output path."""

    key: str
    source: str
    output: str
    partial_dir: str


@dataclass
class ItemOutcome:
    """What happened to one document; ``state`` is ``written`` or ``failed``."""

    key: str
    state: str
    input: StoredFile | None = None
    output: StoredFile | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: True when the output already existed from an earlier run of the job and was taken over.
    adopted: bool = False


def partial_paths(task: ItemTask) -> tuple[Path, Path]:
    """Return the ``.partial`` and ``.signed`` paths of a task (derived from its key only)."""
    name = hashlib.sha256(task.key.encode("utf-8")).hexdigest()[:40]
    directory = Path(task.partial_dir)
    return directory / f"{name}.partial", directory / f"{name}.signed"


@dataclass
class _Prepared:
    task: ItemTask
    handle: BinaryIO
    prepared_digest: PreparedByteRangeDigest
    #: The input in the document store, written while it was copied to the partial file.
    stored_input: StoredFile
    signed_attributes: bytes | None = None
    signature: bytes | None = None
    cms: bytes | None = None
    attempts: int = 0


class _CopyingReader:
    """A reader over the input that writes every block it returns to ``copy`` as well.

    The document store reads the input through it, so one read of the input both stores it and
    makes the partial file that is then signed.
    """

    def __init__(self, reader: BinaryIO, copy: BinaryIO) -> None:
        self.reader = reader
        self.copy = copy

    def read(self, size: int = -1) -> bytes:
        block = self.reader.read(size)
        if block:
            self.copy.write(block)
        return block


class _PrepareFailed(Exception):
    """A document failed after its input was stored; the failure record names that input."""

    def __init__(self, error: QsignError, stored_input: StoredFile) -> None:
        super().__init__(error.code)
        self.error = error
        self.stored_input = stored_input


@dataclass
class _Chunk:
    outcomes: list[ItemOutcome] = field(default_factory=list)
    #: (task, signed copy, stored input or None when the input must still be stored) to publish.
    to_publish: list[tuple[ItemTask, Path, StoredFile | None]] = field(default_factory=list)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _prefix_sha256(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    remaining = size
    with path.open("rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(COPY_CHUNK_SIZE, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _is_signed_copy(candidate: Path, source: Path) -> bool:
    """Return whether ``candidate`` starts with the bytes of ``source`` and appends an update to them.

    Sealing appends an incremental update, so a signed copy begins with the whole input.
    """
    input_size = source.stat().st_size
    if candidate.stat().st_size <= input_size:
        return False
    return _prefix_sha256(candidate, input_size) == _prefix_sha256(source, input_size)


class Sealer:
    """The token key, CMS template and document store of one worker process."""

    def __init__(self, config: Config, profile: BulkProfile, store: DocumentStore) -> None:
        self.config = config
        self.profile = profile
        self.store = store
        self.chain = load_chain(config)
        self.key: TokenKey | None = None
        #: The error of the last failed attempt to open the session again; ``None`` while a session is open.
        self.session_error: TokenError | None = None
        self._open_key()
        key = self.key
        assert key is not None

        # The key is only looked up first, so that a B-B worker without the check does not import
        # signing.levels and the TSA client it loads.
        if profile.level in ("B-B", "B-T") and "check_revocation" in config.section("signing"):
            from signing.levels import revocation_check_configured

            if revocation_check_configured(config):
                self._check_revocation(key)
        self.digest_algorithm = select_digest(key, profile.digest)
        self.signer = TokenSigner(key, chain=self.chain, digest_algorithm=self.digest_algorithm, pss=profile.pss)
        # B-T: the TSA is asked once here, so that the fixed signature space also has room for the token.
        self.timestamps = None
        if profile.level != "B-B":
            # Imported here: the TSA client loads aiohttp and the validation modules, which a B-B worker
            # does not need in memory.
            from hsm.timestamps import SignatureTimestamps

            self.timestamps = SignatureTimestamps.for_level(profile.level, config, self.digest_algorithm)
        # B-LT and B-LTA: validation data (and a document timestamp) appended after the B-T signature.
        self.long_term = None
        if profile.level in ("B-LT", "B-LTA"):
            from hsm.longterm import LongTermData

            self.long_term = LongTermData(profile.level, config, self.digest_algorithm)
        self.template = CmsTemplate(key.certificate, self.chain, self.digest_algorithm,
                                    signature_mechanism(key, self.digest_algorithm, profile.pss),
                                    signature_size(key),
                                    self.timestamps.max_token_size if self.timestamps else 0)
        self.bytes_reserved = self.template.bytes_reserved()
        self.signer_name = signer_common_name(key.certificate)
        self.visible: VisibleSignature | None = None
        self.stamp_style = None
        if profile.appearance is not None:
            appearance = profile.appearance
            extra = {"seal_image": appearance.seal_image} if appearance.seal_image else {}
            self.visible = VisibleSignature(page=appearance.page, rect=appearance.rect, **extra)
            self.stamp_style = build_stamp_style(self.visible)

    def _check_revocation(self, key: TokenKey) -> None:
        """Check the seal certificate's revocation status once for this worker (``[signing] check_revocation``).

        B-LT and B-LTA check it for every document anyway. Raises ``signer_revoked``,
        ``revocation_unavailable`` or ``signer_not_trusted``, which stops the worker before it signs.
        """
        from signing.levels import shared_fetcher
        from signing.ltv import async_check_signer_certificate, signing_validation_context

        context = signing_validation_context(self.config, shared_fetcher(self.config))
        asyncio.run(async_check_signer_certificate(key.certificate, context, signer_common_name(key.certificate),
                                                   self.profile.level))

    # Token session

    def _open_key(self) -> None:
        profile = self.profile
        pin = read_pin(profile.pin_file, pin_env=profile.pin_env or "QSIGN_PIN", interactive=False)
        self.key = open_key(profile.module, pin=pin, token_label=profile.token_label,
                            token_serial=profile.token_serial, key_label=profile.key_label, key_id=profile.key_id)

    def reopen_key(self) -> None:
        """Close the session and open the key again; raises ``TokenError`` when that fails."""
        if self.key is not None:
            self.key.close()
            self.key = None
        try:
            self._open_key()
        except TokenError as error:
            self.session_error = error
            raise
        self.session_error = None
        self.signer.key = self.key

    def close(self) -> None:
        if self.key is not None:
            self.key.close()
            self.key = None

    def _sign(self, attributes: bytes) -> bytes:
        if self.key is None:
            self.reopen_key()
        assert self.key is not None
        if testhooks.should_drop_session():
            # Test hook: close the PKCS#11 session under the key, as a lost session would leave it.
            with self.key.module.lock:
                self.key._session.close()  # noqa: SLF001 (test hook only)
        return self.key.sign(attributes, digest_algorithm=self.digest_algorithm, pss=self.profile.pss)

    # One chunk of documents

    def seal_chunk(self, tasks: list[ItemTask], emit: Callable[[ItemOutcome], None]) -> None:
        """Seal ``tasks`` and call ``emit`` once per document with its outcome."""
        chunk = _Chunk()
        prepared: list[_Prepared] = []
        for task in tasks:
            try:
                item = self._resume_or_prepare(task, chunk)
            except _PrepareFailed as failure:
                emit(self._failed(task, failure.error, failure.stored_input))
                continue
            except QsignError as error:
                emit(self._failed(task, error))
                continue
            except Exception as error:  # a pyHanko path that raises something unexpected
                _logger.exception("preparing %s failed", task.key)
                emit(self._failed(task, SigningFailed(path=task.source, reason=type(error).__name__)))
                continue
            if item is not None:
                prepared.append(item)
                testhooks.kill_point("prepared", "worker")

        self._sign_all(prepared, emit)
        self._build_cms(prepared, emit)

        renamed: list[_Prepared] = []
        for item in prepared:
            if item.cms is None:
                continue
            try:
                self._finish(item)
                renamed.append(item)
            except QsignError as error:
                emit(self._failed(item.task, error, item.stored_input))
        if renamed:
            _fsync_directory(Path(renamed[0].task.partial_dir))
        for item in renamed:
            chunk.to_publish.append((item.task, partial_paths(item.task)[1], item.stored_input))

        for task, signed_path, stored_input in chunk.to_publish:
            try:
                emit(self._publish(task, signed_path, stored_input))
            except OSError as error:
                _logger.warning("publishing %s failed: %s", task.key, error)
                emit(self._failed(task, OutputWriteFailed(path=task.output, reason=error.strerror or str(error),
                                                          ids={"item": task.key})))
        for outcome in chunk.outcomes:
            emit(outcome)

    def _failed(self, task: ItemTask, error: QsignError, stored_input: StoredFile | None = None) -> ItemOutcome:
        _logger.info("document %s failed: %s", task.key, error.code)
        partial, _signed = partial_paths(task)
        partial.unlink(missing_ok=True)
        return ItemOutcome(key=task.key, state="failed", input=stored_input, error_code=error.code,
                           error_message=error.message("en"))

    def _resume_or_prepare(self, task: ItemTask, chunk: _Chunk) -> _Prepared | None:
        """Take over what an earlier run left, or prepare the document; None when nothing is left to sign."""
        source, output = Path(task.source), Path(task.output)
        partial, signed = partial_paths(task)

        if output.exists():
            if not _is_signed_copy(output, source):
                raise OutputForeign(path=str(output), ids={"item": task.key})
            _logger.info("document %s: output published by an earlier run; taking it over", task.key)
            signed.unlink(missing_ok=True)
            chunk.outcomes.append(self._store(task, adopted=True))
            return None
        if signed.exists():
            if _is_signed_copy(signed, source):
                _logger.info("document %s: signed copy from an earlier run; publishing it", task.key)
                chunk.to_publish.append((task, signed, None))
                return None
            signed.unlink()
        # A partial file holds a signature that was never published, or none: start again.
        partial.unlink(missing_ok=True)
        return self._prepare(task, partial)

    def _prepare(self, task: ItemTask, partial: Path) -> _Prepared:
        source = Path(task.source)
        check_input_file(source)
        check_pdf_header(source)
        ids = {"path": task.source}

        descriptor = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        handle = os.fdopen(descriptor, "w+b")
        stored_input: StoredFile | None = None
        try:
            with source.open("rb") as reader:
                stored_input = self.store.write(_CopyingReader(reader, handle))
            handle.seek(0)

            writer = _open_writer(handle, source, None)
            try:
                field_name = self.profile.field_name or next_field_name(_field_names(writer))
                field_spec = _field_spec(writer, field_name, self.visible)
            except (KeyError, ValueError, TypeError) as error:
                raise PdfMalformed(path=task.source, reason=str(error) or type(error).__name__, ids=ids) from error

            metadata = PdfSignatureMetadata(field_name=field_name, md_algorithm=self.digest_algorithm,
                                            subfilter=SigSeedSubFilter.PADES, reason=self.profile.reason,
                                            location=self.profile.location)
            pdf_signer = PdfSigner(metadata, self.signer, stamp_style=self.stamp_style, new_field_spec=field_spec)
            try:
                session = pdf_signer.init_signing_session(writer)
            except SigningError as error:
                raise PdfSigningNotAllowed(path=task.source, reason=str(error), ids=ids) from error
            try:
                tbs_document = session.prepare_tbs_document(
                    validation_info=None, bytes_reserved=self.bytes_reserved,
                    appearance_text_params={"signer_cn": self.signer_name})
                prepared_digest, _output = tbs_document.digest_tbs_document(in_place=True,
                                                                            chunk_size=COPY_CHUNK_SIZE)
            except SigningError as error:
                raise SigningFailed(path=task.source, reason=str(error), ids=ids) from error
            except _MALFORMED_ERRORS as error:
                raise PdfMalformed(path=task.source, reason=str(error) or type(error).__name__, ids=ids) from error
        except BaseException as error:
            handle.close()
            partial.unlink(missing_ok=True)
            if stored_input is None or not isinstance(error, Exception):
                raise
            if not isinstance(error, QsignError):  # a pyHanko path that raises something unexpected
                _logger.exception("preparing %s failed", task.key)
                error = SigningFailed(path=task.source, reason=type(error).__name__, ids=ids)
            raise _PrepareFailed(error, stored_input) from error
        return _Prepared(task=task, handle=handle, prepared_digest=prepared_digest, stored_input=stored_input)

    def _sign_all(self, prepared: list[_Prepared], emit: Callable[[ItemOutcome], None]) -> None:
        """Sign the digests of the chunk one after another; reopen the session once per lost session."""
        for item in prepared:
            attributes = self.template.signed_attributes(item.prepared_digest.document_digest)
            testhooks.kill_point("before-sign", "worker")
            while True:
                item.attempts += 1
                try:
                    signature = self._sign(attributes)
                    break
                except TokenError as error:
                    if error.code not in RECOVERABLE_TOKEN_CODES or item.attempts > 1:
                        item.handle.close()
                        emit(self._failed(item.task, error, item.stored_input))
                        signature = None
                        break
                    _logger.warning("token session failed (%s) while signing %s; opening it again and retrying",
                                    error.code, item.task.key)
                    try:
                        self.reopen_key()
                    except TokenError as reopen_error:
                        _logger.warning("opening the token session again failed: %s", reopen_error.code)
                        self.key = None
            if signature is None:
                continue
            testhooks.kill_point("after-sign", "worker")
            item.signed_attributes, item.signature = attributes, signature

    def _build_cms(self, prepared: list[_Prepared], emit: Callable[[ItemOutcome], None]) -> None:
        """Build the CMS of each signed document, with its signature timestamp from level B-T on."""
        signed = [item for item in prepared if item.signature is not None]
        tokens: list[bytes | QsignError | None] = [None] * len(signed)
        if self.timestamps is not None and signed:
            tokens = list(self.timestamps.stamp([item.signature for item in signed]))
        for item, token in zip(signed, tokens):
            if isinstance(token, QsignError):
                item.handle.close()
                emit(self._failed(item.task, token, item.stored_input))
                continue
            item.cms = self.template.content_info(item.signed_attributes, item.signature, token)

    def _finish(self, item: _Prepared) -> None:
        partial, signed = partial_paths(item.task)
        try:
            PdfTBSDocument.finish_signing(item.handle, item.prepared_digest, item.cms, chunk_size=COPY_CHUNK_SIZE)
            item.handle.flush()
            os.fsync(item.handle.fileno())
        except _MALFORMED_ERRORS as error:
            raise SigningFailed(path=item.task.source, reason=str(error) or type(error).__name__,
                                ids={"path": item.task.source}) from error
        finally:
            item.handle.close()
        if self.long_term is not None:
            self.long_term.extend(partial, source=item.task.source, subject=self.signer_name)
        testhooks.kill_point("before-rename", "worker")
        os.replace(partial, signed)

    def _publish(self, task: ItemTask, signed: Path, stored_input: StoredFile | None) -> ItemOutcome:
        output = Path(task.output)
        testhooks.kill_point("before-publish", "worker")
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(signed, output)
        except FileExistsError:
            if not _is_signed_copy(output, Path(task.source)):
                return self._failed(task, OutputForeign(path=str(output), ids={"item": task.key}))
        _fsync_directory(output.parent)
        testhooks.kill_point("after-publish", "worker")
        signed.unlink(missing_ok=True)
        return self._store(task, adopted=False, stored_input=stored_input)

    def _store(self, task: ItemTask, adopted: bool, stored_input: StoredFile | None = None) -> ItemOutcome:
        """Store the published output (and the input, unless stored already) in the archive's document store."""
        if stored_input is None:
            stored_input = self.store.write(Path(task.source))
        stored_output = self.store.write(Path(task.output))
        testhooks.kill_point("after-store", "worker")
        return ItemOutcome(key=task.key, state="written", input=stored_input, output=stored_output, adopted=adopted)

