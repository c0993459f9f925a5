"""Speed and memory benchmarks of AstroPT (and, optionally, of the reference implementation)."""
