"""Customers and phone numbers: normalisation, lookup."""
