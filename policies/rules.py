"""Policy decisions: each function checks one action and returns a ``Decision`` naming the rule that decided.

The functions are pure: they read the policy records and the values passed in, and do no I/O. A caller
that must stop on a denial passes the decision to ``require``, which raises ``PolicyDenied``.
Rule names are stable identifiers that clients and the audit log match on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from qsign.i18n import N_
from policies.errors import PolicyDenied
from policies.model import AlgorithmPolicy, Decision, Policy, Role, Template, User

__all__ = ["require", "find_user", "find_template", "may_create", "check_document", "may_review", "may_sign",
           "may_view", "may_cancel", "check_algorithm", "in_window"]


def _allow(rule: str) -> Decision:
    return Decision(True, rule, N_("allowed"))


def _deny(rule: str, reason: str, **params: object) -> Decision:
    return Decision(False, rule, reason, params)


def require(decision: Decision, **ids: object) -> Decision:
    """Return an allowing decision; raise ``PolicyDenied`` with its rule and reason for a denial."""
    if not decision.allowed:
        raise PolicyDenied(decision.rule, decision.reason, ids=ids, **decision.params)
    return decision


def in_window(now: datetime, start: datetime | None, end: datetime | None) -> bool:
    """Whether ``now`` lies in [start, end); a missing bound is open."""
    return (start is None or now >= start) and (end is None or now < end)


def find_user(policy: Policy, user_id: str | None) -> User | Decision:
    """Return the user, or a denial by ``user.known`` when the policy has no such user."""
    user = policy.users.get(user_id or "")
    if user is None:
        return _deny("user.known", N_("user {user} is not in the policy"), user=user_id or "?")
    return user


def find_template(policy: Policy, template_id: str | None) -> Template | Decision:
    template = policy.templates.get(template_id or "")
    if template is None:
        return _deny("template.known", N_("there is no template {template}"), template=template_id or "?")
    return template


def _template_window(template: Template, now: datetime) -> Decision | None:
    if not in_window(now, template.valid_from, template.valid_until):
        return _deny("template.validity_window", N_("template {template} is not valid at this time "
                                                    "(valid from {start} until {end})"),
                     template=template.id, start=_time(template.valid_from), end=_time(template.valid_until))
    return None


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def may_create(policy: Policy, requester: User, template: Template, signer_id: str, now: datetime) -> Decision:
    """Decide whether ``requester`` may create a request with ``template`` for the signer ``signer_id``."""
    if not requester.roles & template.requester_roles:
        return _deny("template.requester_role", N_("user {user} has none of the roles that may create "
                                                   "requests with template {template}"),
                     user=requester.id, template=template.id)
    denied = _template_window(template, now)
    if denied:
        return denied

    signer = find_user(policy, signer_id)
    if isinstance(signer, Decision):
        return _deny("signer.known", N_("the assigned signer {user} is not in the policy"), user=signer_id)
    if not signer.roles & template.signer_roles:
        return _deny("signer.role", N_("user {user} does not have a role that signs with template {template}"),
                     user=signer.id, template=template.id)
    return _allow("request.create")


def check_document(template: Template, media_type: str, size: int, pages: int | None) -> Decision:
    """Decide whether a document of this type, size in bytes and page count fits ``template``."""
    if media_type not in template.document_types:
        return _deny("template.document_type", N_("template {template} does not accept documents of type "
                                                  "{media_type} (accepted: {accepted})"),
                     template=template.id, media_type=media_type, accepted=", ".join(template.document_types))
    if size > template.max_bytes:
        return _deny("template.max_bytes", N_("the document has {size} bytes; template {template} accepts at "
                                              "most {limit}"), size=size, template=template.id,
                     limit=template.max_bytes)
    if pages is not None and pages > template.max_pages:
        return _deny("template.max_pages", N_("the document has {pages} pages; template {template} accepts at "
                                              "most {limit}"), pages=pages, template=template.id,
                     limit=template.max_pages)
    return _allow("template.document")


def may_review(reviewer: User, template: Template, requester_id: str, signer_id: str,
               approvals: Sequence[str], now: datetime) -> Decision:
    """Decide whether ``reviewer`` may approve or reject a request; ``approvals`` lists who approved so far."""
    if not reviewer.roles & template.reviewer_roles:
        return _deny("reviewer.role", N_("user {user} may not review requests of template {template}"),
                     user=reviewer.id, template=template.id)
    if template.reviewer_not_signer and reviewer.id == signer_id:
        return _deny("reviewer.not_signer", N_("user {user} is the signer of this request and may not review it"),
                     user=reviewer.id)
    if reviewer.id in approvals:
        return _deny("reviewer.once", N_("user {user} has already approved this request"), user=reviewer.id)
    denied = _template_window(template, now)
    return denied or _allow("request.review")


def may_sign(signer: User, template: Template, assigned_signer: str, approvals: Sequence[str],
             now: datetime) -> Decision:
    """Decide whether ``signer`` may sign a request now, given the approvals it has."""
    if signer.id != assigned_signer:
        return _deny("signer.assigned", N_("the request is assigned to {assigned}, not to {user}"),
                     assigned=assigned_signer, user=signer.id)
    if not signer.roles & template.signer_roles:
        return _deny("signer.role", N_("user {user} does not have a role that signs with template {template}"),
                     user=signer.id, template=template.id)
    if not in_window(now, signer.sign_from, signer.sign_until):
        return _deny("signer.authorisation_window", N_("the signing authorisation of {user} is not valid now "
                                                       "(valid from {start} until {end})"),
                     user=signer.id, start=_time(signer.sign_from), end=_time(signer.sign_until))
    if len(approvals) < template.required_approvals:
        return _deny("template.approvals", N_("the request has {count} of the {required} approvals it needs"),
                     count=len(approvals), required=template.required_approvals)
    denied = _template_window(template, now)
    return denied or _allow("request.sign")


def may_view(user: User, requester_id: str, signer_id: str, template: Template) -> Decision:
    """Requester, signer, the template's reviewers, auditors and admins may see a request."""
    if user.id in (requester_id, signer_id) or user.roles & (template.reviewer_roles | {Role.AUDITOR, Role.ADMIN}):
        return _allow("request.view")
    return _deny("request.view", N_("user {user} may not see this request"), user=user.id)


def may_cancel(user: User, requester_id: str) -> Decision:
    if user.id == requester_id or Role.ADMIN in user.roles:
        return _allow("request.cancel")
    return _deny("request.cancel", N_("only the requester {requester} or an admin may cancel this request"),
                 requester=requester_id)


def check_algorithm(policy: AlgorithmPolicy, key_type: str, bits: int | None, curve: str | None,
                    digest: str) -> Decision:
    """Decide whether the key (RSA size or EC curve) and the digest algorithm meet the algorithm policy."""
    if key_type == "rsa" and (bits or 0) < policy.rsa_min_bits:
        return _deny("algorithm.rsa_bits", N_("the RSA key has {bits} bits; the policy requires at least {minimum}"),
                     bits=bits or 0, minimum=policy.rsa_min_bits)
    if key_type == "ec" and curve not in policy.ec_curves:
        return _deny("algorithm.ec_curve", N_("the EC curve {curve} is not allowed (allowed: {allowed})"),
                     curve=curve or "?", allowed=", ".join(policy.ec_curves))
    if key_type not in ("rsa", "ec"):
        return _deny("algorithm.key_type", N_("keys of type {key_type} are not allowed"), key_type=key_type)
    if digest not in policy.digests:
        return _deny("algorithm.digest", N_("the digest algorithm {digest} is not allowed (allowed: {allowed})"),
                     digest=digest, allowed=", ".join(policy.digests))
    return _allow("algorithm")
