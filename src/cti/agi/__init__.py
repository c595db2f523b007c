"""AGI scripts that Asterisk runs during calls (pyst2). Keep imports here empty: start-up time counts."""
