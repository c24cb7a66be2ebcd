"""The CRM domain. Knows SQLAlchemy, vobject and rapidfuzz; never radicale."""
