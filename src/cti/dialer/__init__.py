"""The outbound dialer: campaigns, CSV import, calling hours, pacing, the engine, dispositions."""
