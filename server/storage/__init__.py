"""Radicale storage plugin on the CRM database. Entry module: ``server.storage.plugin``."""
