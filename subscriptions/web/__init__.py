"""The web face: reader pages, health checks (and, later, the editor console and API)."""
