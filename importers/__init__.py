"""Importers: another tool's generator file -> a ganrt checkpoint, without running code from the file.

Each importer maps a foreign format onto one of ganrt's own model families (``ganrt.models``); a family
may exist only to reproduce that codebase's network exactly. ``ganrt.importers.nvlabs`` reads NVlabs
StyleGAN2-ADA / StyleGAN3 snapshots (``network-snapshot-*.pkl``).
"""
