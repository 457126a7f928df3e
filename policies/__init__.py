"""Roles, templates, approval rules, and certificate and algorithm policy.

``load_policy(path)`` reads the policy TOML file and validates it (``PolicyInvalid`` names the bad
key). The functions in ``policies.rules`` and ``policies.certificates`` return a ``Decision`` with the
rule that decided; ``require`` turns a denial into ``PolicyDenied`` (code ``policy_denied``).
"""

from policies.certificates import check_certificate
from policies.errors import PolicyDenied, PolicyInvalid
from policies.loader import load_policy, parse_policy
from policies.model import AlgorithmPolicy, CertificatePolicy, Decision, Policy, Role, SealAppearance, Template, User
from policies.rules import (check_algorithm, check_document, find_template, find_user, in_window, may_cancel,
                            may_create, may_review, may_sign, may_view, require)

__all__ = ["load_policy", "parse_policy", "PolicyDenied", "PolicyInvalid", "Policy", "Decision", "Role", "User",
           "Template", "SealAppearance", "CertificatePolicy", "AlgorithmPolicy", "check_certificate",
           "check_algorithm", "check_document", "find_template", "find_user", "in_window", "may_cancel",
           "may_create", "may_review", "may_sign", "may_view", "require"]
