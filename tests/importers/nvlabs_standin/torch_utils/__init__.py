"""Stand-in for NVlabs' torch_utils (ganrt tests)."""
