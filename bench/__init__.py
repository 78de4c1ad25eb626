"""dtqs benchmark harness: dtqs beside Celery, RQ, Dramatiq, arq and Huey on one Redis.

Run ``python -m bench --help``. Not installed with dtqs; run it from the repository root.
"""
