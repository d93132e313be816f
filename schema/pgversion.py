"""version_cmp(a, b) and version_lt(a, b) on PostgreSQL: dpkg's version ordering as SQL functions.

On SQLite the same names are Python functions registered on `container sql`'s connection
(engine/maint/sql.py, python-debian); here they live in the database, created with the tables
(schema/db.py for a new store, migrations.up_index for an old one). A transcription of dpkg's
verrevcmp (lib/dpkg/version.c): epochs compared as numbers, then upstream version, then revision;
'~' sorts before everything, even the end of the string; letters before other characters; digit
runs compared as numbers. version_cmp returns -1/0/1 and NULL for a NULL or a non-numeric epoch;
version_lt a boolean (WHERE version_lt(version, '3.0.14') works on both backends).
"""

from __future__ import annotations

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION container_dpkg_order(c text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN c = '' OR c ~ '^[0-9]$' THEN 0 WHEN c ~ '^[A-Za-z]$' THEN ascii(c) WHEN c = '~' THEN -1
              ELSE ascii(c) + 256 END
$$;

CREATE OR REPLACE FUNCTION container_verrevcmp(a text, b text) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  i integer := 1; j integer := 1; la integer := length(a); lb integer := length(b);
  ac integer; bc integer; first_diff integer;
BEGIN
  WHILE i <= la OR j <= lb LOOP
    first_diff := 0;
    WHILE (i <= la AND substr(a, i, 1) !~ '[0-9]') OR (j <= lb AND substr(b, j, 1) !~ '[0-9]') LOOP
      ac := container_dpkg_order(CASE WHEN i <= la THEN substr(a, i, 1) ELSE '' END);
      bc := container_dpkg_order(CASE WHEN j <= lb THEN substr(b, j, 1) ELSE '' END);
      IF ac <> bc THEN RETURN sign(ac - bc); END IF;
      i := i + 1; j := j + 1;
    END LOOP;
    WHILE i <= la AND substr(a, i, 1) = '0' LOOP i := i + 1; END LOOP;
    WHILE j <= lb AND substr(b, j, 1) = '0' LOOP j := j + 1; END LOOP;
    WHILE i <= la AND substr(a, i, 1) ~ '[0-9]' AND j <= lb AND substr(b, j, 1) ~ '[0-9]' LOOP
      IF first_diff = 0 THEN first_diff := ascii(substr(a, i, 1)) - ascii(substr(b, j, 1)); END IF;
      i := i + 1; j := j + 1;
    END LOOP;
    IF i <= la AND substr(a, i, 1) ~ '[0-9]' THEN RETURN 1; END IF;
    IF j <= lb AND substr(b, j, 1) ~ '[0-9]' THEN RETURN -1; END IF;
    IF first_diff <> 0 THEN RETURN sign(first_diff); END IF;
  END LOOP;
  RETURN 0;
END
$$;

CREATE OR REPLACE FUNCTION version_cmp(a text, b text) RETURNS integer LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
  ua text := btrim(a); ub text := btrim(b); ea numeric := 0; eb numeric := 0; ra text := ''; rb text := '';
  p integer; c integer;
BEGIN
  p := position(':' in ua);
  IF p > 0 THEN
    IF substr(ua, 1, p - 1) !~ '^[0-9]+$' THEN RETURN NULL; END IF;
    ea := substr(ua, 1, p - 1)::numeric; ua := substr(ua, p + 1);
  END IF;
  p := position(':' in ub);
  IF p > 0 THEN
    IF substr(ub, 1, p - 1) !~ '^[0-9]+$' THEN RETURN NULL; END IF;
    eb := substr(ub, 1, p - 1)::numeric; ub := substr(ub, p + 1);
  END IF;
  IF position('-' in ua) > 0 THEN ra := regexp_replace(ua, '^.*-', ''); ua := regexp_replace(ua, '-[^-]*$', ''); END IF;
  IF position('-' in ub) > 0 THEN rb := regexp_replace(ub, '^.*-', ''); ub := regexp_replace(ub, '-[^-]*$', ''); END IF;
  IF ea <> eb THEN RETURN sign(ea - eb)::integer; END IF;
  c := container_verrevcmp(ua, ub);
  IF c <> 0 THEN RETURN c; END IF;
  RETURN container_verrevcmp(ra, rb);
END
$$;

CREATE OR REPLACE FUNCTION version_lt(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT version_cmp(a, b) < 0
$$;
"""


def create_functions(db) -> None:
    """Create (or replace) the functions; call inside the transaction that creates the tables."""
    for stmt in FUNCTIONS.split("\n\n"):
        if stmt.strip():
            db.execute_sql(stmt.strip().rstrip(";"))
