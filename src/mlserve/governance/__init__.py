"""Governance: the audit trail of changes (and, later, lineage and the validation gate)."""
