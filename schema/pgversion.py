"""version_cmp(a, b[, manager]) and version_lt(a, b[, manager]) on PostgreSQL: the package
managers' version orderings as SQL functions (two arguments: dpkg's; manager 'rpm': rpm's,
'apk': apk's, anything else: dpkg's).

On SQLite the same names are Python functions registered on `container sql`'s connection
(engine/maint/sql.py, python-debian); here they live in the database, created with the tables
(schema/db.py for a new store, migrations.up_index for an old one). A transcription of dpkg's
verrevcmp (lib/dpkg/version.c): epochs compared as numbers, then upstream version, then revision;
'~' sorts before everything, even the end of the string; letters before other characters; digit
runs compared as numbers. version_cmp returns -1/0/1 and NULL for a NULL or for what is no dpkg
version (python-debian's syntax: [epoch:]upstream[-revision] of letters, digits and .+~-, ':' only
after an epoch; so '1.0^' or ' 1.0' are NULL on both backends);
version_lt a boolean (WHERE version_lt(version, '3.0.14') works on both backends).
container_rpmvercmp / container_rpm_cmp and container_apk_token / container_apk_cmp transcribe
rpm's rpmvercmp + rpmverCmp and apk-tools' version.c as engine/image/versions.py does (the rules
are in its docstring; the tests check both backends agree on rpm's and apk's own test vectors).
Strings compare bytewise (COLLATE "C"), whatever the database's collation.
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
  IF NOT (a ~ '^[0-9]+:[A-Za-z0-9.+:~-]+$' OR a ~ '^[A-Za-z0-9.+~-]+$')
     OR NOT (b ~ '^[0-9]+:[A-Za-z0-9.+:~-]+$' OR b ~ '^[A-Za-z0-9.+~-]+$') THEN
    RETURN NULL;                  -- not a dpkg version (python-debian refuses it on SQLite)
  END IF;
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

CREATE OR REPLACE FUNCTION container_rpmvercmp(a text, b text) RETURNS integer LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
  i integer := 1; j integer := 1; la integer := length(a); lb integer := length(b);
  ca text; cb text; sa text; sb text; isnum boolean;
BEGIN
  IF a = b THEN RETURN 0; END IF;
  WHILE i <= la OR j <= lb LOOP
    WHILE i <= la AND substr(a, i, 1) !~ '[A-Za-z0-9~^]' LOOP i := i + 1; END LOOP;
    WHILE j <= lb AND substr(b, j, 1) !~ '[A-Za-z0-9~^]' LOOP j := j + 1; END LOOP;
    ca := substr(a, i, 1); cb := substr(b, j, 1);
    IF ca = '~' OR cb = '~' THEN
      IF ca <> '~' THEN RETURN 1; END IF;
      IF cb <> '~' THEN RETURN -1; END IF;
      i := i + 1; j := j + 1; CONTINUE;
    END IF;
    IF ca = '^' OR cb = '^' THEN
      IF ca = '' THEN RETURN -1; END IF;
      IF cb = '' THEN RETURN 1; END IF;
      IF ca <> '^' THEN RETURN 1; END IF;
      IF cb <> '^' THEN RETURN -1; END IF;
      i := i + 1; j := j + 1; CONTINUE;
    END IF;
    EXIT WHEN ca = '' OR cb = '';
    isnum := ca ~ '[0-9]';
    IF isnum THEN
      sa := substring(substr(a, i) from '^[0-9]*'); sb := substring(substr(b, j) from '^[0-9]*');
    ELSE
      sa := substring(substr(a, i) from '^[A-Za-z]*'); sb := substring(substr(b, j) from '^[A-Za-z]*');
    END IF;
    i := i + length(sa); j := j + length(sb);
    IF sb = '' THEN RETURN CASE WHEN isnum THEN 1 ELSE -1 END; END IF;
    IF isnum THEN
      sa := ltrim(sa, '0'); sb := ltrim(sb, '0');
      IF length(sa) <> length(sb) THEN RETURN sign(length(sa) - length(sb)); END IF;
    END IF;
    IF sa <> sb THEN RETURN CASE WHEN sa COLLATE "C" > sb COLLATE "C" THEN 1 ELSE -1 END; END IF;
  END LOOP;
  IF i > la AND j > lb THEN RETURN 0; END IF;
  RETURN CASE WHEN i > la THEN -1 ELSE 1 END;
END
$$;

CREATE OR REPLACE FUNCTION container_rpm_evr(s text, OUT e text, OUT v text, OUT r text) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  d text := substring(s from '^[0-9]*'); rest text := s;
BEGIN
  e := '0';
  IF substr(s, length(d) + 1, 1) = ':' THEN
    e := CASE WHEN d = '' THEN '0' ELSE d END; rest := substr(s, length(d) + 2);
  END IF;
  IF position('-' in rest) > 0 THEN
    r := regexp_replace(rest, '^.*-', ''); v := regexp_replace(rest, '-[^-]*$', '');
  ELSE
    v := rest; r := NULL;
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION container_rpm_cmp(a text, b text) RETURNS integer LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
  x record; y record; c integer;
BEGIN
  x := container_rpm_evr(btrim(a, E' \t\n\r'));
  y := container_rpm_evr(btrim(b, E' \t\n\r'));
  c := container_rpmvercmp(x.e, y.e);
  IF c = 0 THEN c := container_rpmvercmp(x.v, y.v); END IF;
  IF c = 0 AND x.r IS DISTINCT FROM y.r THEN
    c := CASE WHEN x.r IS NULL THEN -1 WHEN y.r IS NULL THEN 1 ELSE container_rpmvercmp(x.r, y.r) END;
  END IF;
  RETURN c;
END
$$;

CREATE OR REPLACE FUNCTION container_apk_token(s text, pos integer, kind integer,
    OUT tok integer, OUT val text, OUT num numeric, OUT npos integer) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  c text; rest text;
BEGIN
  tok := 8; val := ''; num := 0; npos := pos;
  IF kind < 0 THEN
    val := substring(s from '^[0-9]*');
    IF val <> '' THEN tok := 0; num := val::numeric; npos := pos + length(val); END IF;
    RETURN;
  END IF;
  IF pos > length(s) THEN tok := 7; RETURN; END IF;
  c := substr(s, pos, 1); rest := substr(s, pos + 1);
  IF c ~ '^[a-z]$' THEN
    IF kind <= 1 THEN tok := 2; val := c; npos := pos + 1; END IF;
  ELSIF c = '.' OR c ~ '^[0-9]$' THEN
    IF NOT (c = '.' AND kind > 1) THEN
      IF c <> '.' THEN rest := substr(s, pos); END IF;
      val := substring(rest from '^[0-9]*');
      IF val <> '' AND kind <= 1 THEN tok := 1; ELSIF val <> '' AND kind = 3 THEN tok := 4; END IF;
      IF tok <> 8 THEN num := val::numeric; npos := pos + CASE WHEN c = '.' THEN 1 ELSE 0 END + length(val); END IF;
    END IF;
  ELSIF c = '_' THEN
    IF kind <= 4 THEN
      val := substring(rest from '^[a-z]*');
      num := CASE val WHEN 'alpha' THEN 1 WHEN 'beta' THEN 2 WHEN 'pre' THEN 3 WHEN 'rc' THEN 4 WHEN 'cvs' THEN 6
                      WHEN 'svn' THEN 7 WHEN 'git' THEN 8 WHEN 'hg' THEN 9 WHEN 'p' THEN 10 ELSE 0 END;
      IF num > 0 THEN tok := 3; npos := pos + 1 + length(val); END IF;
    END IF;
  ELSIF c = '~' THEN
    IF kind < 5 THEN
      val := substring(rest from '^[0-9a-f]*');
      IF val <> '' THEN tok := 5; npos := pos + 1 + length(val); END IF;
    END IF;
  ELSIF c = '-' THEN
    IF kind < 6 AND substr(rest, 1, 1) = 'r' THEN
      val := substring(substr(rest, 2) from '^[0-9]*');
      IF val <> '' THEN tok := 6; num := val::numeric; npos := pos + 2 + length(val); END IF;
    END IF;
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION container_apk_cmp(a text, b text) RETURNS integer LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
  sa text := btrim(a, E' \t\n\r'); sb text := btrim(b, E' \t\n\r');
  ka integer := -1; kb integer := -1; xa text; xb text; na numeric; nb numeric; pa integer := 1; pb integer := 1;
BEGIN
  LOOP
    SELECT t.tok, t.val, t.num, t.npos INTO ka, xa, na, pa FROM container_apk_token(sa, pa, ka) t;
    SELECT t.tok, t.val, t.num, t.npos INTO kb, xb, nb, pb FROM container_apk_token(sb, pb, kb) t;
    EXIT WHEN ka <> kb OR ka >= 7;
    IF ka IN (2, 5) OR (ka = 1 AND (left(xa, 1) = '0' OR left(xb, 1) = '0')) THEN
      IF xa <> xb THEN RETURN CASE WHEN xa COLLATE "C" > xb COLLATE "C" THEN 1 ELSE -1 END; END IF;
    ELSIF na <> nb THEN
      RETURN sign(na - nb);
    END IF;
  END LOOP;
  IF ka = kb THEN RETURN 0; END IF;
  IF ka = 3 AND na < 5 THEN RETURN -1; END IF;
  IF kb = 3 AND nb < 5 THEN RETURN 1; END IF;
  RETURN CASE WHEN ka > kb THEN -1 ELSE 1 END;
END
$$;

CREATE OR REPLACE FUNCTION version_cmp(a text, b text, manager text) RETURNS integer LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE manager WHEN 'rpm' THEN container_rpm_cmp(a, b) WHEN 'apk' THEN container_apk_cmp(a, b)
                      ELSE version_cmp(a, b) END
$$;

CREATE OR REPLACE FUNCTION version_lt(a text, b text, manager text) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT version_cmp(a, b, manager) < 0
$$;
"""


def create_functions(db) -> None:
    """Create (or replace) the functions; call inside the transaction that creates the tables."""
    for stmt in FUNCTIONS.split("\n\n"):
        if stmt.strip():
            db.execute_sql(stmt.strip().rstrip(";"))
