"""The demo policy file that ``qsign softhsm init`` writes as ``policy.toml`` for the agent.

Five users, one per role, and two officer-signature templates: PAdES for PDFs and detached CAdES for
other files, each needing one approval by a reviewer. The officer signs with the ``[tokens.officer]``
key. An existing ``policy.toml`` is never overwritten, because an administrator may have edited it.
"""

from __future__ import annotations

from pathlib import Path

from softhsm_setup.files import write_file

__all__ = ["DEMO_POLICY", "POLICY_NAME", "write_demo_policy"]

POLICY_NAME = "policy.toml"

DEMO_POLICY = """\
# qsign agent policy: users, roles, templates, certificate and algorithm policy.
# Written by "qsign softhsm init" for the SoftHSM2 test tokens; edit it for real use.
version = 1

[users.officer-li]
name = "李明"
roles = ["officer"]
token_profile = "officer"
sign_from = 2020-01-01T00:00:00Z
sign_until = 2100-01-01T00:00:00Z

[users.reviewer-wang]
name = "王芳"
roles = ["reviewer"]

[users.operator-zhao]
name = "赵磊"
roles = ["operator"]

[users.auditor-chen]
name = "陈静"
roles = ["auditor"]

[users.admin-sun]
name = "孙伟"
roles = ["admin"]

[templates.officer-signature]
name_zh = "税务官员签名"
name_en = "Tax officer signature"
requester_roles = ["operator", "officer"]
signer_roles = ["officer"]
reviewer_roles = ["reviewer"]
required_approvals = 1
reviewer_not_signer = true
document_types = ["application/pdf"]
max_bytes = 52428800
max_pages = 500
signature_format = "pades"
signature_level = "B-B"
reason = "税务官员审批"
location = "示例市税务局"

[templates.officer-signature.seal]
page = 1
rect = [16.0, 16.0, 196.0, 106.0]
text = "示例市税务局 审核专用"

[templates.officer-attachment]
name_zh = "税务官员附件签名"
name_en = "Tax officer signature on an attachment"
requester_roles = ["operator", "officer"]
signer_roles = ["officer"]
reviewer_roles = ["reviewer"]
required_approvals = 1
document_types = ["application/octet-stream", "text/plain", "application/xml", "application/zip"]
max_bytes = 52428800
signature_format = "cades"
signature_level = "B-B"

[certificates]
key_usage = ["non_repudiation"]
require_chain = true
required_policy_oids = []

[algorithms]
rsa_min_bits = 2048
ec_curves = ["secp256r1", "secp384r1"]
digests = ["sha256", "sha384", "sha512"]
"""


def write_demo_policy(state_dir: Path) -> Path | None:
    """Write ``policy.toml`` into ``state_dir`` unless it exists; return its path when written."""
    path = state_dir / POLICY_NAME
    if path.exists():
        return None
    write_file(path, DEMO_POLICY.encode("utf-8"), 0o644)
    return path
