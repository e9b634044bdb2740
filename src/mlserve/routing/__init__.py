"""Which version answers a request: stable and canary split, pinning."""
