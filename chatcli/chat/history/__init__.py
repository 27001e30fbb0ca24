"""The history's parts beside the store itself (:mod:`chatcli.chat.store`).

* :mod:`~chatcli.chat.history.schema` — the database's tables and their migrations;
* :mod:`~chatcli.chat.history.saved_rows` — a saved conversation rebuilt from its rows,
  each unreadable cell left out and named;
* :mod:`~chatcli.chat.history.fulltext` — ``history search``: an FTS5 index over every
  saved message, kept in sync by triggers, or ``LIKE`` where SQLite has no FTS5;
* :mod:`~chatcli.chat.history.search_view` — its hits as Rich text;
* :mod:`~chatcli.chat.history.logged_run` — a ``chatcli generate`` run as a conversation,
  written once when the answer ends (``--resume``/``-c`` append to a saved one).
"""
