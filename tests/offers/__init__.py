"""Tests of gateway.offers."""
