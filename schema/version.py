"""The schema version this program writes and reads (migrations.py steps up to it).

A module of its own, stdlib only, so that run's sqlite3 fast path (schema/lite.py) checks the
same number without importing peewee.
"""

SCHEMA_VERSION = 1
