"""The webpubsub benchmark: webpubsub against Socket.IO 4.8 in the same run (``python -m bench``).

See ``docs/benchmarks.md`` for what is measured and the latest results.
"""
