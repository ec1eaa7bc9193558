"""The audit ledger (issue 12): each node's hash-chained, signed record of security decisions and
timer lifecycle transitions. `chain` is the format and the offline verifier; `ledger` the store."""
from .chain import VerifyError, Verified, parse_public_key, verify_lines
from .ledger import AUDIT_DIR, AUDIT_KEEP, AUDIT_KEY_FILE, AuditLedger, load_key, write_key

__all__ = ["AuditLedger", "AUDIT_DIR", "AUDIT_KEEP", "AUDIT_KEY_FILE", "load_key", "write_key",
           "VerifyError", "Verified", "parse_public_key", "verify_lines"]
