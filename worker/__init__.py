"""Background work: the Celery app and tasks, feed watching, digest planning, the delivery pipeline.

Imports the store and `mail`; only the command line (and its supervisor) imports the worker.
"""
