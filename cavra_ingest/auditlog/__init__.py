"""The tamper-evident audit log: RFC 8785 canonical JSON, the Merkle tree, signed checkpoints, proofs, evidence.

Imports: core, settings. It sits below the stores, which append its leaves inside their own transactions.
"""
