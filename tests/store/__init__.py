"""Tests of gateway.store."""
