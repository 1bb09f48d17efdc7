"""Fixtures shared by every test, as plugins: real services in `tests.support.stack`, the gateway
in `tests.support.gateway`. Helpers (event builders, topic readers, polling) are imported from
`tests.support.*`; fixtures are requested by name."""

pytest_plugins = ["tests.support.stack", "tests.support.gateway", "tests.support.scenarios"]
