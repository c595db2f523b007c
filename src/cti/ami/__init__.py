"""Connection to Asterisk's Manager Interface: wire format, link, actions. Knows nothing of calls."""
