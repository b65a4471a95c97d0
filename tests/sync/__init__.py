"""Tests of gateway.sync."""
