"""The Textual chat front end. ``chatcli.tui.app.make_app`` builds it; it never imports torch itself."""
