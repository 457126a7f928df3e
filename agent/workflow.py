"""The request workflow: create, review, cancel, sign, download, with every step decided by the policy.

States stored on the request: ``waiting_for_review`` → ``approved`` → ``signing`` → ``signed``, or
``failed`` (retry allowed), ``rejected``, ``cancelled``, ``expired``. Every change and every denial is
written to the archive's audit log in the transaction that makes the change.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from archive.api import Archive, AuditOutcome, DocumentKind
from archive.errors import RecordNotFound
from archive.records import DeviceRecord, RequestRecord
from policies import (Decision, Policy, PolicyDenied, Role, Template, User, check_document, find_template,
                      find_user, may_cancel, may_create, may_review, may_sign, may_view, require)
from qsign.config import Config
from qsign.errors import QsignError
from qsign.i18n import N_
from token_drivers.errors import TokenError

from agent.documents import inspect_document
from agent.errors import (BadRequestBody, DigestMismatch, RateLimited, RequestNotFound, RequestStateConflict,
                          SignedDocumentMissing)
from agent.events import EventBus, EventState
from agent.settings import AgentSettings
from agent.signer import SignInputs, check_key_policy, sign_document
from agent.token_source import TokenSource

__all__ = ["Caller", "Workflow", "RequestState", "LIST_VIEWS"]

_logger = logging.getLogger(__name__)

LIST_VIEWS = ("mine", "to_sign", "to_review", "all")


class RequestState:
    WAITING_FOR_REVIEW = "waiting_for_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    SIGNING = "signing"
    SIGNED = "signed"
    FAILED = "failed"
    EXPIRED = "expired"


_SIGNABLE = {RequestState.APPROVED, RequestState.FAILED}
_OPEN = {RequestState.WAITING_FOR_REVIEW, RequestState.APPROVED, RequestState.FAILED}


@dataclass(frozen=True)
class Caller:
    """The paired device making an API call and the policy user it belongs to."""

    device_id: str
    user: User

    @property
    def actor(self) -> str:
        return f"user:{self.user.id}"


class SlidingWindowLimiter:
    """At most ``limit`` events per key in any ``window`` seconds."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def hit(self, key: str) -> float | None:
        """Record one event for ``key``; return seconds to wait when over the limit (nothing is recorded then)."""
        now = time.monotonic()
        events = self._events[key]
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return events[0] + self.window - now
        events.append(now)
        return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Workflow:
    def __init__(self, archive: Archive, policy: Policy, config: Config, settings: AgentSettings,
                 events: EventBus, token_source: TokenSource) -> None:
        self.archive = archive
        self.policy = policy
        self.config = config
        self.settings = settings
        self.events = events
        self.token_source = token_source
        self.limiter = SlidingWindowLimiter(settings.sign_attempts_per_minute)
        self._work_dir = settings.agent_dir / "work"
        self._work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        #: Signatures in progress, so that shutdown can wait for them.
        self.signing_tasks: set[asyncio.Task[Any]] = set()

    # Callers and denials

    def caller(self, device: DeviceRecord) -> Caller:
        user = find_user(self.policy, device.owner)
        if isinstance(user, Decision):
            self._deny_and_audit(f"user:{device.owner}", device.id, user, "api.access")
        return Caller(device.id, user)

    def _deny_and_audit(self, actor: str, device: str | None, decision: Decision, action: str,
                        request_id: str | None = None) -> None:
        """Audit a denial and raise ``policy_denied``."""
        object_ids = {"rule": decision.rule, **({"request_id": request_id} if request_id else {})}
        self.archive.audit(actor, action, AuditOutcome.DENIED, device=device, object_ids=object_ids,
                           reason=decision.rule)
        _logger.info("policy denied %s for %s: rule %s", action, actor, decision.rule)
        require(decision, request=request_id) if request_id else require(decision)

    def _check(self, caller: Caller, decision: Decision, action: str, request_id: str | None = None) -> None:
        if not decision.allowed:
            self._deny_and_audit(caller.actor, caller.device_id, decision, action, request_id)

    def _template(self, caller: Caller, template_id: str | None, action: str,
                  request_id: str | None = None) -> Template:
        template = find_template(self.policy, template_id)
        if isinstance(template, Decision):
            self._deny_and_audit(caller.actor, caller.device_id, template, action, request_id)
        return template

    # Reading

    def _get(self, request_id: str) -> RequestRecord:
        try:
            with self.archive.reading() as snapshot:
                return snapshot.get_request(request_id)
        except RecordNotFound:
            raise RequestNotFound(request=request_id, ids={"request": request_id}) from None

    def get(self, caller: Caller, request_id: str) -> RequestRecord:
        record = self._get(request_id)
        template = self._template(caller, record.template_id, "request.view", request_id)
        self._check(caller, may_view(caller.user, record.requester or "", record.attributes.get("signer", ""),
                                     template), "request.view", request_id)
        return record

    def list(self, caller: Caller, view: str) -> list[RequestRecord]:
        if view not in LIST_VIEWS:
            raise BadRequestBody(detail=f"view must be one of {', '.join(LIST_VIEWS)}, not {view!r}")
        with self.archive.reading() as snapshot:
            records = snapshot.list_requests(requester=caller.user.id if view == "mine" else None)
        user = caller.user
        selected = []
        for record in records:
            template = self.policy.templates.get(record.template_id or "")
            signer = record.attributes.get("signer")
            if view == "mine":
                keep = record.requester == user.id
            elif view == "to_sign":
                keep = signer == user.id and record.state in _SIGNABLE
            elif view == "to_review":
                keep = (template is not None and record.state == RequestState.WAITING_FOR_REVIEW
                        and may_review(user, template, record.requester or "", signer or "",
                                       self._approvers(record), _now()).allowed)
            else:
                keep = template is not None and may_view(user, record.requester or "", signer or "",
                                                          template).allowed
            if keep:
                selected.append(record)
        return selected

    def read_original(self, caller: Caller, request_id: str) -> tuple[RequestRecord, bytes]:
        record = self.get(caller, request_id)
        return record, self.archive.read_document(record.original_sha256 or "")

    def read_signed(self, caller: Caller, request_id: str) -> tuple[RequestRecord, bytes]:
        record = self.get(caller, request_id)
        if record.state != RequestState.SIGNED or not record.signed_sha256:
            raise SignedDocumentMissing(request=request_id, ids={"request": request_id})
        return record, self.archive.read_document(record.signed_sha256)

    @staticmethod
    def _approvers(record: RequestRecord) -> list[str]:
        return [approval["reviewer"] for approval in record.attributes.get("approvals", [])]

    # Changes

    async def create(self, caller: Caller, data: bytes, file_name: str, declared_type: str | None,
                     template_id: str, signer_id: str) -> RequestRecord:
        """Check and store an upload and create its request; the template decides whether review is needed."""
        template = self._template(caller, template_id, "request.create")
        self._check(caller, may_create(self.policy, caller.user, template, signer_id, _now()), "request.create")
        info = await inspect_document(data, file_name, declared_type)
        self._check(caller, check_document(template, info.media_type, info.size, info.pages), "request.create")

        request_id = "req-" + secrets.token_hex(8)
        state = RequestState.WAITING_FOR_REVIEW if template.required_approvals else RequestState.APPROVED
        # The store's fsync and the database commit block; a worker thread keeps the event loop serving.
        record = await asyncio.to_thread(self._store_new_request, caller, request_id, state, data, file_name,
                                         template, signer_id, info)
        self.events.publish(request_id, EventState(state))
        _logger.info("request %s created by %s for signer %s (template %s)", request_id, caller.user.id,
                     signer_id, template.id)
        return record

    def _store_new_request(self, caller: Caller, request_id: str, state: str, data: bytes, file_name: str,
                           template: Template, signer_id: str, info: Any) -> RequestRecord:
        stored = self.archive.store_document(data, DocumentKind.ORIGINAL, media_type=info.media_type,
                                             template_id=template.id)
        with self.archive.transaction() as tx:
            record = tx.create_request(request_id, state=state, template_id=template.id, requester=caller.user.id,
                                       device_id=caller.device_id, file_name=file_name,
                                       original_sha256=stored.sha256,
                                       attributes={"signer": signer_id, "media_type": info.media_type,
                                                   "size": info.size, "pages": info.pages, "approvals": []})
            tx.audit(caller.actor, "request.created", device=caller.device_id,
                     object_ids={"request_id": request_id, "template": template.id, "signer": signer_id},
                     document_hashes=[stored.sha256])
        return record

    def _expire_if_due(self, caller: Caller, record: RequestRecord, template: Template) -> None:
        if template.valid_until is None or _now() < template.valid_until or record.state not in _OPEN:
            return
        with self.archive.transaction() as tx:
            tx.update_request(record.id, state=RequestState.EXPIRED)
            tx.audit(caller.actor, "request.expired", device=caller.device_id,
                     object_ids={"request_id": record.id, "template": template.id})
        self.events.publish(record.id, EventState.EXPIRED)
        _logger.info("request %s expired with its template %s", record.id, template.id)

    def review(self, caller: Caller, request_id: str, approve: bool, comment: str | None) -> RequestRecord:
        action = "request.approve" if approve else "request.reject"
        record = self._get(request_id)
        template = self._template(caller, record.template_id, action, request_id)
        self._expire_if_due(caller, record, template)
        decision = may_review(caller.user, template, record.requester or "", record.attributes.get("signer", ""),
                              self._approvers(record), _now())
        self._check(caller, decision, action, request_id)

        with self.archive.transaction() as tx:
            current = tx.get_request(request_id)
            if current.state != RequestState.WAITING_FOR_REVIEW:
                raise RequestStateConflict(request=request_id, state=current.state,
                                           action="approved" if approve else "rejected", ids={"request": request_id})
            entry = {"reviewer": caller.user.id, "at": _now().isoformat(), "comment": comment}
            if approve:
                approvals = [*current.attributes.get("approvals", []), entry]
                state = RequestState.APPROVED if len(approvals) >= template.required_approvals else current.state
                record = tx.update_request(request_id, state=state, attributes={"approvals": approvals})
            else:
                record = tx.update_request(request_id, state=RequestState.REJECTED, attributes={"rejection": entry})
            tx.audit(caller.actor, action, device=caller.device_id, object_ids={"request_id": request_id})
        if record.state != RequestState.WAITING_FOR_REVIEW:
            self.events.publish(request_id, EventState(record.state), reviewer=caller.user.id)
        return record

    def cancel(self, caller: Caller, request_id: str) -> RequestRecord:
        record = self._get(request_id)
        self._check(caller, may_cancel(caller.user, record.requester or ""), "request.cancel", request_id)
        with self.archive.transaction() as tx:
            current = tx.get_request(request_id)
            if current.state not in _OPEN:
                raise RequestStateConflict(request=request_id, state=current.state, action="cancelled",
                                           ids={"request": request_id})
            record = tx.update_request(request_id, state=RequestState.CANCELLED)
            tx.audit(caller.actor, "request.cancelled", device=caller.device_id, object_ids={"request_id": request_id})
        self.events.publish(request_id, EventState.CANCELLED)
        return record

    def _rate_limit(self, caller: Caller, request_id: str) -> None:
        for subject in (f"device:{caller.device_id}", caller.actor):
            wait = self.limiter.hit(subject)
            if wait is not None:
                self.archive.audit(caller.actor, "request.sign_rate_limited", AuditOutcome.DENIED,
                                   device=caller.device_id, object_ids={"request_id": request_id})
                raise RateLimited(subject=subject, seconds=int(wait) + 1, ids={"request": request_id})

    def _claim(self, caller: Caller, request_id: str) -> RequestRecord:
        """Move the request to ``signing``; only one caller can win this, because the transaction is exclusive."""
        with self.archive.transaction() as tx:
            current = tx.get_request(request_id)
            if current.state not in _SIGNABLE:
                raise RequestStateConflict(request=request_id, state=current.state, action="signed",
                                           ids={"request": request_id})
            record = tx.update_request(request_id, state=RequestState.SIGNING, attributes={"error_code": None})
            tx.audit(caller.actor, "request.signing", device=caller.device_id, object_ids={"request_id": request_id})
        return record

    def _fail(self, caller: Caller, request_id: str, error: QsignError) -> None:
        outcome = AuditOutcome.DENIED if isinstance(error, PolicyDenied) else AuditOutcome.FAILURE
        action = "pin.failed" if error.code in ("pin_incorrect", "pin_locked", "pin_final_try") else "request.sign_failed"
        with self.archive.transaction() as tx:
            tx.update_request(request_id, state=RequestState.FAILED, attributes={"error_code": error.code})
            tx.audit(caller.actor, action, outcome, device=caller.device_id,
                     object_ids={"request_id": request_id, **({"rule": error.rule} if isinstance(error, PolicyDenied)
                                                              else {})},
                     reason=error.code)
        self.events.publish(request_id, EventState.FAILED, code=error.code)
        _logger.info("signing request %s failed: %s", request_id, error.code)

    async def sign(self, caller: Caller, request_id: str, pin: str, confirmed_sha256: str,
                   allow_final_try: bool = False) -> RequestRecord:
        """Sign the request's stored document with the caller's token key; see the module docstring for states.

        The PIN is passed to the token and dropped; it is never logged, stored or put in an error.
        """
        self._rate_limit(caller, request_id)
        record = self._get(request_id)
        template = self._template(caller, record.template_id, "request.sign", request_id)
        self._expire_if_due(caller, record, template)
        decision = may_sign(caller.user, template, record.attributes.get("signer", ""), self._approvers(record), _now())
        self._check(caller, decision, "request.sign", request_id)

        stored = self.archive.read_document(record.original_sha256 or "")
        actual = hashlib.sha256(stored).hexdigest()
        if confirmed_sha256.strip().lower() != record.original_sha256 or actual != record.original_sha256:
            self.archive.audit(caller.actor, "request.digest_mismatch", AuditOutcome.DENIED, device=caller.device_id,
                               object_ids={"request_id": request_id})
            raise DigestMismatch(request=request_id, ids={"request": request_id})

        record = self._claim(caller, request_id)
        task = asyncio.current_task()
        if task is not None:
            self.signing_tasks.add(task)
        try:
            return await self._sign_claimed(caller, record, template, pin, allow_final_try, stored)
        finally:
            if task is not None:
                self.signing_tasks.discard(task)

    async def _sign_claimed(self, caller: Caller, record: RequestRecord, template: Template, pin: str,
                            allow_final_try: bool, stored: bytes) -> RequestRecord:
        request_id = record.id
        profile = self.config.tokens.get(caller.user.token_profile or "")
        suffix = ".pdf" if template.signature_format == "pades" else ".bin"
        source = self._work_dir / f"{request_id}.original{suffix}"
        output = self._work_dir / f"{request_id}.signed{'.pdf' if suffix == '.pdf' else '.p7s'}"
        try:
            if profile is None:
                raise PolicyDenied("signer.token_profile", N_("user {user} has no token profile in qsign.toml"),
                                   user=caller.user.id)

            async def report(state: EventState, details: dict[str, Any]) -> None:
                self.events.publish(request_id, state, **details)

            present = await self.token_source.wait_for_token(profile, self.settings.token_wait_seconds, report)
            self.events.publish(request_id, EventState.TOKEN_PRESENT, **present.details)

            key = await present.open_key(pin, allow_final_try)
            del pin
            try:
                check_key_policy(self.policy, self.config, key, _now(), request=request_id)
                self.events.publish(request_id, EventState.SIGNING)
                source.write_bytes(stored)
                result = await sign_document(key, self.config, SignInputs(source, output, template, profile),
                                             self.settings.policy_file.parent, self.settings.pause_before_sign_seconds,
                                             check_revocation=self.policy.certificates.check_revocation)
            finally:
                await key.module.run(key.close)

            signed = self.archive.store_document(output, DocumentKind.SIGNED,
                                                 media_type="application/pdf" if result.format == "pades"
                                                 else "application/pkcs7-signature", template_id=template.id)
            with self.archive.transaction() as tx:
                record = tx.update_request(request_id, state=RequestState.SIGNED, signed_sha256=signed.sha256,
                                           attributes={"signature": {"format": result.format,
                                                                     "signer": result.signer,
                                                                     "mechanism": result.mechanism,
                                                                     "signing_time": result.signing_time.isoformat(),
                                                                     "field": result.field_name}})
                tx.audit(caller.actor, "request.signed", device=caller.device_id,
                         object_ids={"request_id": request_id, "key": profile.key_label, "token": profile.token_label},
                         document_hashes=[record.original_sha256 or "", signed.sha256])
            self.events.publish(request_id, EventState.SIGNED, signed_sha256=signed.sha256)
            _logger.info("request %s signed by %s with key %s", request_id, caller.user.id, profile.key_label)
            return record
        except QsignError as error:
            self._fail(caller, request_id, error)
            raise
        except asyncio.CancelledError:
            self._fail(caller, request_id, _Interrupted())
            raise
        except Exception as error:  # unexpected: the request must not stay in "signing"
            _logger.exception("signing request %s failed unexpectedly", request_id)
            self._fail(caller, request_id, _Interrupted())
            raise
        finally:
            source.unlink(missing_ok=True)
            output.unlink(missing_ok=True)

    def recover_interrupted(self) -> int:
        """Mark requests left in ``signing`` by a previous process as ``failed``; return how many."""
        with self.archive.transaction() as tx:
            stuck = tx.list_requests(state=RequestState.SIGNING)
            for record in stuck:
                tx.update_request(record.id, state=RequestState.FAILED, attributes={"error_code": "interrupted"})
                tx.audit("agent", "request.sign_failed", AuditOutcome.FAILURE, object_ids={"request_id": record.id},
                         reason="interrupted")
        return len(stuck)


class _Interrupted(QsignError):
    code = "interrupted"
    message_template = N_("The signature was interrupted before it finished; nothing was signed. Retry.")


def request_to_dict(record: RequestRecord, policy: Policy, language: str) -> dict[str, Any]:
    """Return the request as the API shows it."""
    attributes = record.attributes
    template = policy.templates.get(record.template_id or "")
    return {
        "id": record.id,
        "state": record.state,
        "template_id": record.template_id,
        "template_name": template.name(language) if template else None,
        "requester": record.requester,
        "signer": attributes.get("signer"),
        "file_name": record.file_name,
        "media_type": attributes.get("media_type"),
        "size": attributes.get("size"),
        "pages": attributes.get("pages"),
        "sha256": record.original_sha256,
        "signed_sha256": record.signed_sha256,
        "approvals": [{"reviewer": a["reviewer"], "at": a["at"]} for a in attributes.get("approvals", [])],
        "required_approvals": template.required_approvals if template else None,
        "error_code": attributes.get("error_code"),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
