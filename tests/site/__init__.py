"""Tests of gateway.site."""
