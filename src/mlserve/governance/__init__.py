"""Governance: publishing with lineage (``publish``), the validation gate (``gate``), the
audit trail of changes (``audit``), payload logs and their export (``payloads``,
``payload_export``), and the counters they keep (``metrics``)."""
