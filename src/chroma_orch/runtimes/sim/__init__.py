"""The ``sim`` runtime: a simulated cloud scheduler (docs/sim-runtime.md)."""
