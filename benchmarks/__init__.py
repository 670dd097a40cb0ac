"""Benchmarks: latency/throughput harness against peers, fidelity parity and reports (``ganrt bench``)."""
