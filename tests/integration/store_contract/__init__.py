"""One contract for every ``Store``: the memory store, a real SQLite file and etcd behave the
same (the ``store`` fixture, conftest.py).

test_sqlite.py covers what only a file can do: survive a restart, refuse a second process,
refuse a newer schema, and commit concurrent operations together.
"""
