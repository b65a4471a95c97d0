"""Tests of gateway.zones."""
