"""Test support code shared by several test modules (no fixtures are auto-loaded from here)."""
