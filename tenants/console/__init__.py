"""The web console: server-rendered pages per area, and a few JSON endpoints (ninja)."""
