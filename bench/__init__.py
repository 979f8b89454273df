"""The benchmarks: `python -m bench` (`make bench`) writes docs/performance.md."""
