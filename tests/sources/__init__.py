"""Tests of gateway.sources."""
