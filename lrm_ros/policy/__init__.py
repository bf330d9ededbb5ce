"""Policies: the embedded tiny VLA and (later) adapters for external VLAs."""
