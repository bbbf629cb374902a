"""What a statement is, from its text: its first keyword, and whether it is BEGIN, COMMIT
or ROLLBACK alone (which decides, as in sqlite3, whether it opens or ends a transaction).
"""

from __future__ import annotations

import re

# -- statement classification ---------------------------------------------------------------

_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
DML_KEYWORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
READ_KEYWORDS = frozenset({"SELECT", "VALUES", "EXPLAIN"})
_TRANSACTION_CONTROL = re.compile(
    r"(?P<verb>BEGIN(?:\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE))?|COMMIT|END|ROLLBACK)"
    r"(?:\s+TRANSACTION)?\s*;?\s*$",
    re.IGNORECASE,
)


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper case, after whitespace and comments ('' if none).

    Like sqlite3, only this word decides whether a statement opens a transaction.
    """
    match = _FIRST_WORD.match(sql, _LEADING_NOISE.match(sql).end())
    return match.group(0).upper() if match else ""


def transaction_control(sql: str) -> str | None:
    """'BEGIN', 'COMMIT' or 'ROLLBACK' when `sql` is that one statement alone, else None.

    `ROLLBACK TO savepoint` is not one: it runs inside the session like any statement.
    """
    match = _TRANSACTION_CONTROL.match(sql, _LEADING_NOISE.match(sql).end())
    if match is None:
        return None
    verb = match.group("verb").split()[0].upper()
    return "COMMIT" if verb == "END" else verb
