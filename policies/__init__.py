"""Rego policies and default data, shipped in the wheel as `remediation_policies`."""
