"""The guided tour: nine chapters, each a live experiment in the chat, with progress kept (``chatcli tour``, ``/tour``)."""
