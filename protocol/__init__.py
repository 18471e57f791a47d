"""veritrain's pure protocol core: no network, no database, no files of its own choosing.

Bytes and values in, bytes and values out. Daemons and the coordinator call into this package;
it never calls back.
"""
