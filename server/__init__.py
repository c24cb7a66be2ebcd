"""radicale-crm: a CalDAV/CardDAV server whose storage is a CRM database.

Package layout (imports point one way):

* ``server.crm``        the domain: SQLAlchemy models and services; never imports radicale
* ``server.storage``    Radicale storage plugin (``[storage] type = server.storage.plugin``)
* ``server.auth``       Radicale auth plugin (``[auth] type = server.auth.plugin``)
* ``server.rights``     Radicale rights plugin
* ``server.crm_hooks``  CRM ingestion called from the storage write path
* ``server.app``        the WSGI application (Radicale's, plus body capture and error mapping)
"""
