"""Tests of gateway.presence."""
