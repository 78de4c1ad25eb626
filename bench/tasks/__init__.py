"""Worker-side code of every benchmarked system: the same task body everywhere.

These modules run inside the peers' own worker processes (and arq's separate venv), so
they import only redis-py and the peer's library, never dtqs or the rest of the harness.
"""
