"""The store (settings, database, models, the operations) and its entry points: the web app
(`subscriptions.web`) and the `newsletter` command line. The store imports neither the web nor the
worker; the web imports the store and `mail`, never the worker (tests/unit/test_layers.py).
"""
