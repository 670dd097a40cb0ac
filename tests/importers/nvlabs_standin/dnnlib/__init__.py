"""Stand-in for NVlabs' dnnlib (ganrt tests): only what a snapshot names."""
