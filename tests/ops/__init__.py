"""Tests of gateway.ops."""
