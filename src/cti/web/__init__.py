"""HTTP and WebSocket: REST API, the desktop hub, the pages, auth and roles."""
