"""Radicale auth plugin over the users table. Entry module: ``server.auth.plugin``."""
