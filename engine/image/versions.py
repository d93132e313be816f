"""How package versions order, per package manager (the SQL version_cmp / version_lt on SQLite).

    version_cmp(a, b) -> -1 | 0 | 1 | None            dpkg's ordering
    version_cmp(a, b, manager) -> -1 | 0 | 1 | None   the manager's: 'rpm', 'apk', else dpkg's
    version_lt(a, b[, manager]) -> 1 | 0 | None

None for a NULL argument (SQL NULL), and for a dpkg version python-debian refuses (a bad epoch).

* dpkg: python-debian's version_compare (dpkg's verrevcmp: epoch, upstream, revision; '~' before
  everything, even the end; letters before other characters; digit runs as numbers), imported at
  the first call.
* rpm: rpmvercmp over [epoch:]version[-release] as rpm's rpmverCmp does it (what rpm.ver()
  objects compare by): a missing epoch is 0; a missing release sorts before any release (so
  '3.0.14-1.el9' is not lower than '3.0.14', and '3.0.14' is lower than '3.0.14-1'). In each string, runs of ASCII letters or digits are the segments and everything else
  separates them; '~' sorts before anything (even the end), '^' after the end but before any other
  segment; digit runs compare as numbers and beat letter runs; letters compare as bytes.
* apk (apk-tools 3's version.c): digit{.digit}{letter}{_suffix{#}}{~hash}{-r#}; the suffixes
  _alpha _beta _pre _rc sort before the bare version, _cvs _svn _git _hg _p after; a component
  with a leading zero (1.02) compares as a string; an invalid tail ends the comparison the way apk
  ends it (the valid side's next token decides).

PostgreSQL has the same functions in SQL (schema/pgversion.py); the tests check both agree on
rpm's and apk's own test vectors and on dpkg --compare-versions.
"""

from __future__ import annotations

import re

_BLANKS = " \t\n\r"                               # (what btrim strips on PostgreSQL)
_RPM_DIGITS = re.compile(r"[0-9]*")
_RPM_ALPHA = re.compile(r"[A-Za-z]*")


def _sign(c: int) -> int:
    return (c > 0) - (c < 0)


def dpkg_cmp(a: str, b: str) -> int | None:
    from debian.debian_support import version_compare

    try:
        return _sign(version_compare(a, b))
    except ValueError:
        return None


def rpmvercmp(a: str, b: str) -> int:
    """rpm's segment comparison of two version (or release) strings: -1, 0, 1."""
    if a == b:
        return 0
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        while i < la and not _rpm_alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < lb and not _rpm_alnum(b[j]) and b[j] not in "~^":
            j += 1
        ca, cb = a[i:i + 1], b[j:j + 1]
        if ca == "~" or cb == "~":                  # tilde: before everything, even the end
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":                  # caret: after the end, before anything else
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        isnum = "0" <= ca <= "9"
        run = _RPM_DIGITS if isnum else _RPM_ALPHA
        sa = run.match(a, i).group()                  # type: ignore[union-attr]
        sb = run.match(b, j).group()                  # type: ignore[union-attr]
        i, j = i + len(sa), j + len(sb)
        if not sb:
            return 1 if isnum else -1               # a number beats letters
        if isnum:
            sa, sb = sa.lstrip("0"), sb.lstrip("0")
            if len(sa) != len(sb):
                return 1 if len(sa) > len(sb) else -1
        if sa != sb:
            return 1 if sa > sb else -1
    if i >= la and j >= lb:
        return 0
    return -1 if i >= la else 1


def _rpm_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _rpm_evr(s: str) -> tuple[str, str, str | None]:
    """[epoch:]version[-release] as rpm splits it: the epoch is the leading digits before ':'
    (empty: 0; none: 0), the release what follows the last '-' (None without one)."""
    k = 0
    while k < len(s) and s[k].isdigit() and s[k].isascii():
        k += 1
    epoch, rest = ("0", s)
    if k < len(s) and s[k] == ":":
        epoch, rest = s[:k] or "0", s[k + 1:]
    v, sep, r = rest.rpartition("-")
    return (epoch, v, r) if sep else (epoch, rest, None)


def rpm_cmp(a: str, b: str) -> int:
    ea, va, ra = _rpm_evr(a.strip(_BLANKS))
    eb, vb, rb = _rpm_evr(b.strip(_BLANKS))
    c = rpmvercmp(ea, eb) or rpmvercmp(va, vb)
    if c == 0 and ra != rb:
        c = -1 if ra is None else 1 if rb is None else rpmvercmp(ra, rb)
    return c


# apk: token kinds in the order apk's version.c numbers them (the order decides an uneven tail)
(_INITIAL_DIGIT, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _COMMIT_HASH, _REVISION_NO, _END,
 _INVALID) = range(9)
_APK_SUFFIXES = {"alpha": 1, "beta": 2, "pre": 3, "rc": 4, "cvs": 6, "svn": 7, "git": 8, "hg": 9, "p": 10}
_APK_NONE = 5                                        # (no suffix: below it pre-releases, above it post)
_APK_DIGITS = re.compile(r"[0-9]*")
_APK_SUFFIX_RUN = re.compile(r"[a-z]*")
_APK_HEX = re.compile(r"[0-9a-f]*")


def _apk_tokens(s: str):
    """(kind, text, number) per token of an apk version; ends with an _END or _INVALID token."""
    pos, kind = 0, _INITIAL_DIGIT
    m = _APK_DIGITS.match(s, pos)
    text = m.group() if m else ""
    if not text:
        yield _INVALID, "", 0
        return
    pos = len(text)
    yield kind, text, int(text)
    while True:
        if pos >= len(s):
            yield _END, "", 0
            return
        c, number, nxt = s[pos], 0, _INVALID
        if "a" <= c <= "z":
            if kind <= _DIGIT:
                nxt, text, pos = _LETTER, c, pos + 1
        elif c == "." or "0" <= c <= "9":
            if c == "." and kind > _DIGIT:
                pass
            else:
                start = pos + 1 if c == "." else pos
                if kind in (_INITIAL_DIGIT, _DIGIT):
                    nxt = _DIGIT
                elif kind == _SUFFIX:
                    nxt = _SUFFIX_NO
                text = _APK_DIGITS.match(s, start).group()     # type: ignore[union-attr]
                pos = start + len(text)
                if not text:
                    nxt = _INVALID
                elif nxt != _INVALID:
                    number = int(text)
        elif c == "_":
            if kind <= _SUFFIX_NO:
                text = _APK_SUFFIX_RUN.match(s, pos + 1).group()   # type: ignore[union-attr]
                pos += 1 + len(text)
                if text in _APK_SUFFIXES:
                    nxt, number = _SUFFIX, _APK_SUFFIXES[text]
        elif c == "~":
            if kind < _COMMIT_HASH:
                text = _APK_HEX.match(s, pos + 1).group()           # type: ignore[union-attr]
                pos += 1 + len(text)
                if text:
                    nxt = _COMMIT_HASH
        elif c == "-":
            if kind < _REVISION_NO and s.startswith("-r", pos):
                text = _APK_DIGITS.match(s, pos + 2).group()        # type: ignore[union-attr]
                pos += 2 + len(text)
                if text:
                    nxt, number = _REVISION_NO, int(text)
        kind = nxt
        yield kind, text, number
        if kind == _INVALID:
            return


def apk_cmp(a: str, b: str) -> int:
    ta, tb = _apk_tokens(a.strip(_BLANKS)), _apk_tokens(b.strip(_BLANKS))
    while True:
        ka, xa, na = next(ta)
        kb, xb, nb = next(tb)
        if ka != kb or ka >= _END:
            break
        if ka == _LETTER or ka == _COMMIT_HASH or (ka == _DIGIT and (xa[0] == "0" or xb[0] == "0")):
            c = (xa > xb) - (xa < xb)                 # (bytes: the strings are ASCII here)
        else:
            c = _sign(na - nb)
        if c:
            return c
    if ka == kb:
        return 0                                      # both ended (or both turned invalid)
    if ka == _SUFFIX and na < _APK_NONE:
        return -1
    if kb == _SUFFIX and nb < _APK_NONE:
        return 1
    return -1 if ka > kb else 1


def version_cmp(a: object, b: object, manager: object = "dpkg") -> int | None:
    """-1, 0, 1 by the manager's rules (see the module doc); None for NULL or a bad dpkg epoch."""
    if a is None or b is None or manager is None:
        return None
    if manager == "rpm":
        return rpm_cmp(str(a), str(b))
    if manager == "apk":
        return apk_cmp(str(a), str(b))
    return dpkg_cmp(str(a), str(b))


def version_lt(a: object, b: object, manager: object = "dpkg") -> int | None:
    """1 when a orders before b by the manager's rules, 0 when not, None when NULL/unparseable."""
    c = version_cmp(a, b, manager)
    return None if c is None else int(c < 0)
