"""Gin configuration files (package data)."""
