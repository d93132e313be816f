"""Maintenance of the store: gc, prune, df, fsck and read-only SQL queries."""
