"""Bringing the graph up: one YAML graph description, two front ends (launch file, runner)."""
