"""Tests of gateway.sinks."""
