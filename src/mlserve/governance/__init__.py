"""Governance: publishing with lineage (``publish``), the validation gate (``gate``) and the
quality and fairness metrics it checks (``quality``), the audit trail of changes (``audit``),
and payload logs and their export (``payloads``, ``payload_export``)."""
