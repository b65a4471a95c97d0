"""Tests of gateway.decode."""
