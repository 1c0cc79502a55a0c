"""The ``bai`` command line: one module per command group over the async SDK.

``main`` (the root group, entry points, the error edge), ``run``, ``sessions``
(ps, info, rm, restart, interrupt), ``admin`` (keypairs), ``connection``
(auth-test, version), ``output`` (tables, JSON, error lines), ``context``
(the config, parsed once).
"""
