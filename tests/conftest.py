"""Shared fixtures live in tests/plugins/, one module per external system."""

pytest_plugins = [
    "tests.plugins.kube",
    "tests.plugins.opa",
    "tests.plugins.vault",
    "tests.plugins.app",
    "tests.plugins.broker",
]
