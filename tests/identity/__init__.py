"""Tests of gateway.identity."""
