"""SVI/ACD statistics: one metric dictionary, live and historical."""
