"""``crm-admin``: the operators' tool. Thin: parse, open a unit of work, call a service, print."""
