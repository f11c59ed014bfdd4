"""Email as data: rendering (templates, CSS inlining, per-reader substitution) and the providers.

Imports neither the store nor the web nor the worker, so every one of them may use it.
"""
